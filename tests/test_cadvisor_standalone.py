"""Standalone cAdvisor: its series join their pods through the runtime's io.kubernetes.* labels
exactly as the kubelet's cAdvisor series do, the raw container_label_* / container_env_* sets
are dropped unless allowlisted, and cAdvisor's own golden payloads transform cleanly.

No capture of a standalone cAdvisor on a Kubernetes node exists here (and cAdvisor itself is
not installable): the joined payload is DERIVED from the real 1.24 kubelet capture and its
/pods by tests/fixtures/cadvisor_standalone/derive.py, at test time."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as config_mod
from exporter.expfmt import encode_text
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.conftest import FIXTURES, Fixtures, offline
from tests.test_e2e import ready, scrape

CAD = Fixtures("cadvisor")
PODS = Fixtures("kubelet") / "nri-k8s-1.24-kubelet-pods.json"
CAPTURE = CAD / "nri-k8s-1.24-kubelet-metrics-cadvisor.txt"
GOLDENS = ["cadvisor-standalone-golden-prometheus_metrics",
           "cadvisor-standalone-golden-prometheus_machine_metrics"]
ROOT = Path(__file__).resolve().parent.parent


def _derive_module():
    path = Path(__file__).parent / "fixtures" / "cadvisor_standalone" / "derive.py"
    spec = importlib.util.spec_from_file_location("derive_standalone", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> Path:
    """The derived standalone payload (see derive.py), written once for the module."""
    mod = _derive_module()
    out = tmp_path_factory.mktemp("standalone") / "derived-nri-k8s-1.24-standalone-cadvisor.txt"
    out.write_text(mod.derive(CAPTURE.read_text(), json.loads(PODS.read_text())))
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "transform", *args], capture_output=True,
                          cwd=ROOT, timeout=300)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


@pytest.mark.parametrize("capture", GOLDENS)
def test_cadvisor_golden_payloads(capture, golden):
    out = cli("--source", "cadvisor-standalone", str(CAD / f"{capture}.txt"))
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()[:2000]
    golden(f"cadvisor_standalone-{capture}.txt", out.stdout)
    got = samples(out.stdout.decode())
    assert got
    for name, labels, _ in got:
        assert not any(k.startswith(("container_label_", "container_env_")) for k in labels), (name, labels)
        assert labels["collector"] == "cadvisor_standalone"
        if name.startswith("container_") and name != "container_scrape_error":
            assert labels["cgroup_kind"] == "system" and labels["id"] == "testcontainer"  # no pod


def test_derived_payload_joins_its_pods(derived, golden):
    out = cli("--source", "cadvisor-standalone", "--pods", str(PODS), str(derived))
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()[:2000]
    golden("cadvisor_standalone-derived-nri-k8s-1.24.txt", out.stdout)
    text = out.stdout.decode()
    assert "container_label_" not in text and "container_env_" not in text
    mem = [lb for n, lb, _ in samples(text) if n == "container_memory_working_set_bytes"]
    kinds = {lb["cgroup_kind"] for lb in mem}
    assert kinds == {"container", "pause", "system"}  # pod cgroups carry no runtime labels
    coredns = [lb for lb in mem if lb.get("workload") == "coredns" and lb["cgroup_kind"] == "container"]
    assert coredns and coredns[0]["label_k8s_app"] == "kube-dns" and coredns[0]["container"] == "coredns"
    assert "id" not in coredns[0] and "name" not in coredns[0]


def test_containers_join_exactly_as_the_kubelets_cadvisor(derived):
    """Every container and sandbox series of the derived payload is the kubelet cAdvisor's
    series of the same capture: same name, labels (but `collector`) and value."""
    kubelet = offline("cadvisor", {"node_name": "n1"}, PODS).process(CAPTURE.read_bytes())
    standalone = offline("cadvisor_standalone", {"node_name": "n1"}, PODS).process(derived.read_bytes())

    def pods(res) -> set[tuple]:
        out = set()
        for name, labels, value in samples(encode_text(res.families).decode()):
            if labels.get("cgroup_kind") in ("container", "pause"):
                labels.pop("collector")
                out.add((name, tuple(sorted(labels.items())), value))
        return out

    theirs, ours = pods(kubelet), pods(standalone)
    assert len(theirs) > 500
    assert ours == theirs
    assert standalone.join_misses == 0 and standalone.malformed == 0


def test_allowlisted_raw_labels_are_kept(derived, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("collectors:\n  cadvisor_standalone:\n"
                   "    keep_labels: [container_label_io_kubernetes_pod_uid, container_env_foo_env]\n")
    out = cli("--source", "cadvisor-standalone", "--config", str(cfg), "--pods", str(PODS), str(derived))
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert 'container_label_io_kubernetes_pod_uid="' in text
    assert "container_label_io_cri_containerd_kind" not in text
    golden_out = cli("--source", "cadvisor-standalone", "--config", str(cfg), str(CAD / f"{GOLDENS[0]}.txt"))
    assert b'container_env_foo_env="prod"' in golden_out.stdout
    assert b"container_label_foo_label" not in golden_out.stdout


def test_untrusted_runtime_labels():
    """A runtime label text inside a value, or a second `namespace`, is no crash: the first is
    renamed nowhere but where a label starts, the second is a malformed line, counted."""
    payload = (b'# TYPE container_memory_usage_bytes gauge\n'
               b'container_memory_usage_bytes{id="/x",image="i",name="n",'
               b'container_label_io_kubernetes_pod_name="web",container_label_io_kubernetes_pod_namespace="ns",'
               b'container_label_io_kubernetes_container_name="c",'
               b'container_label_note="a,container_label_io_kubernetes_pod_name=\\"x\\""} 1\n'
               b'container_memory_usage_bytes{id="/y",namespace="ns",image="i",name="m",'
               b'container_label_io_kubernetes_pod_namespace="ns2",'
               b'container_label_io_kubernetes_pod_name="w"} 2\n')
    res = offline("cadvisor_standalone", {"node_name": "n1"}, None).process(payload)
    got = samples(encode_text(res.families).decode())
    assert len(got) == 1 and res.malformed == 1
    name, labels, value = got[0]
    assert value == 1 and labels == {"pod": "web", "namespace": "ns", "container": "c", "image": "i",
                                     "cgroup_kind": "container", "node": "n1",
                                     "collector": "cadvisor_standalone"}


def test_flag_and_config_key_use_the_one_name():
    from exporter.cli import main, parser
    from exporter import plugins
    plugins.load()
    args = parser().parse_args(["run", "--collector.cadvisor_standalone"])
    assert args.collector_cadvisor_standalone is True
    cfg = config_mod.parse({"collectors": {"cadvisor_standalone": {"enabled": True}}},
                           env={"NODE_IP": "10.1.2.3"})
    assert cfg.collectors["cadvisor_standalone"].options["endpoint"].url == "http://10.1.2.3:8080"
    assert cfg.collectors["cadvisor_standalone"].options["endpoint"].token_file == ""  # never over plain http
    assert main(["check-config", "/dev/null"]) == 0


async def test_live_scrape_of_a_standalone_endpoint(derived, tmp_path, aiohttp_client, aiohttp_server):
    """The collector in the server: fetched over HTTP (an aiohttp app serving the derived
    payload stands in for cAdvisor), joined with the pod index of a replay 1.24 kubelet."""
    body = derived.read_bytes()
    seen: list[str] = []

    async def metrics(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(body=body, content_type="text/plain", charset="utf-8")
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    cadvisor = await aiohttp_server(app)
    token = tmp_path / "token"
    token.write_text("standalone-test-token\n")
    kubelet = ReplayKubelet.from_fixtures(FIXTURES, "1.24", token_file=token)
    await kubelet.start()
    try:
        doc = {"node_name": kubelet.node_name, "cluster": "c1",
               "kubelet": {"url": kubelet.base_url, "token_file": str(token),
                           "ca_file": str(kubelet.ca_file)},
               "collectors": {"cadvisor": {"enabled": False}, "cadvisor_standalone": {
                   "enabled": True, "endpoint": {"url": str(cadvisor.make_url(""))}}}}
        client = await aiohttp_client(build_app(config_mod.parse(doc, env={})))
        await ready(client)
        text = (await scrape(client)).decode()
        assert 'kubebridge_up{collector="cadvisor_standalone",cluster="c1"} 1' in text
        cpu = [lb for n, lb, _ in samples(text) if n == "container_cpu_usage_seconds_total"
               and lb.get("collector") == "cadvisor_standalone"]
        assert any(lb.get("workload") == "coredns" and lb["cgroup_kind"] == "container"
                   and lb["node"] == kubelet.node_name for lb in cpu)
        assert "container_label_" not in text
        assert seen == [""]  # no bearer token to a plain-http endpoint
    finally:
        await kubelet.stop()
