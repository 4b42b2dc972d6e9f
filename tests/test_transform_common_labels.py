"""The framework owns the common labels and relabeling, for every collector (exporter/transform/
labels.py CommonLabels): with a global rule that drops every series, each collector's offline
output is empty; with a keep rule on `cluster`, it is exactly what it is without rules, and
every series carries `cluster` and (the node agent's) `node`. The same holds for kubebridge's
own series. A table, so that a new collector joins it by adding a row."""

from __future__ import annotations

from typing import Any

import pytest

from exporter import config as config_mod
from exporter.expfmt import encode_text
from exporter.merge import merge
from exporter.podindex import PodIndex
from exporter.registry import Offline, registrations
from exporter.runner import Outcome, Source, self_metrics
from exporter.server import State
from tests.conftest import Fixtures, offline

KUBELET = Fixtures("kubelet")
PODS = KUBELET / "nri-k8s-1.35-kubelet-pods.json"
V2 = Fixtures("etcd_v2")
DOCKER = Fixtures("docker")
HEALTHZ = b"[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"

# collector -> the payloads `kubebridge transform --source <collector>` takes
PAYLOADS: dict[str, list[Any]] = {
    "cadvisor": [Fixtures("cadvisor") / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"],
    "cadvisor_standalone": [Fixtures("cadvisor") / "cadvisor-standalone-golden-prometheus_metrics.txt"],
    "kubelet": [KUBELET / "dd-kubelet-1.10-kubelet_metrics.txt"],
    "probes": [KUBELET / "dd-kubelet-metrics-probes.txt"],
    "resource": [Fixtures("cadvisor") / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"],  # (any exposition)
    "apiserver": [Fixtures("apiserver") / "nri-k8s-1.24-apiserver-metrics.txt"],
    "etcd": [Fixtures("etcd") / "nri-k8s-1.24-etcd-metrics.txt"],
    "etcd_v2": [
        V2 / "beats-etcd-v2-stats-self.json",
        V2 / "beats-etcd-v2-stats-store.json",
        V2 / "beats-etcd-v2-stats-leader.json",
    ],
    "pods": [PODS],
    "stats_summary": [KUBELET / "nri-k8s-1.35-kubelet-stats-summary.json"],
    "healthz": [HEALTHZ],
    "docker": [
        DOCKER / "dockerd-20.10-cgv1-version.json",
        DOCKER / "dockerd-20.10-cgv1-info.json",
        DOCKER / "dockerd-20.10-cgv1-containers-json.json",
        DOCKER / "dockerd-20.10-cgv1-stats-app.json",
        DOCKER / "dockerd-20.10-cgv1-events.jsonl",
    ],
    "events": [Fixtures("events") / "dd-kubernetes-events.json"],
    "kube_system": [PODS],
    "statsd": [Fixtures("statsd") / "dogstatsd-datadog-0.56-statsd-4.0-capture.txt"],
}
ONLINE_ONLY = {"autodiscovery", "sidecar"}  # (they scrape live pods; tests/test_autodiscovery.py)
DROP_ALL = [{"action": "drop", "source_labels": ["__name__"], "regex": ".*"}]
KEEP_CLUSTER = [{"action": "keep", "source_labels": ["cluster"], "regex": "prod"}]


def _output(name: str, rules: list[dict] | None) -> bytes:
    doc: dict[str, Any] = {"cluster": "prod", "node_name": "n1"}
    if rules is not None:
        doc["relabel_configs"] = rules
    collector = offline(name, doc, PODS)
    assert isinstance(collector, Offline)
    payloads = [p if isinstance(p, bytes) else p.read_bytes() for p in PAYLOADS[name]]
    return encode_text(merge([(name, collector.process(*payloads).families)])[0])


def test_every_collector_is_in_the_table():
    names = {r.name for r in registrations()}
    assert names == set(PAYLOADS) | ONLINE_ONLY


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_global_drop_rule_empties_every_collector(name: str):
    plain = _output(name, None)
    assert plain.count(b"\n") > 1, "the payload must give series, or the test proves nothing"
    assert _output(name, DROP_ALL) == b""


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_keep_rule_on_cluster_keeps_everything(name: str):
    plain = _output(name, None)
    assert _output(name, KEEP_CLUSTER) == plain
    samples = [ln for ln in plain.split(b"\n") if ln and not ln.startswith(b"#")]
    assert samples and all(
        b'cluster="prod"' in ln and b'collector="%s"' % name.encode() in ln for ln in samples
    )


def test_kubebridge_own_series_are_finished_too():
    """Self metrics carry `cluster` and obey the global rules (a drop rule empties them)."""

    def own(rules: list[dict] | None) -> bytes:
        doc: dict[str, Any] = {"cluster": "prod", "node_name": "n1"}
        if rules is not None:
            doc["relabel_configs"] = rules
        cfg = config_mod.parse(doc, env={})
        state = State(cfg, PodIndex())
        src = Source("cadvisor", object())  # type: ignore[arg-type]
        fams = (
            self_metrics([src], [Outcome("cadvisor", seconds=0.1)], state.labels) + state.exporter_metrics()
        )
        return encode_text(merge([("self", fams)])[0])

    plain = own(None)
    lines = [ln for ln in plain.split(b"\n") if ln and not ln.startswith(b"#")]
    assert b'kubebridge_up{collector="cadvisor",cluster="prod"} 1' in lines
    assert all(b'cluster="prod"' in ln for ln in lines)
    assert any(ln.startswith(b"process_") or ln.startswith(b"python_") for ln in lines)

    def series(text: bytes) -> set[bytes]:  # (process metrics' values move between calls)
        return {ln.rpartition(b" ")[0] for ln in text.split(b"\n") if ln and not ln.startswith(b"#")}

    assert series(own(KEEP_CLUSTER)) == series(plain)
    assert own(DROP_ALL) == b""
