"""The kubelet as the node agent sees it: /metrics with volume stats joined to the pod mounting the
claim, probes joined per pod, and access: token rotation across every node collector, TLS server
name override, insecure_skip_verify, the read-only port (plain http, no implicit token)."""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path

import pytest
from aiohttp import web

from collectors.kubelet import claim_joins
from exporter import config as config_mod
from exporter.expfmt import encode_text
from exporter.pods import parse_podlist
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.conftest import Fixtures, offline, pod_index
from tests.test_e2e import ready, scrape

PODS = Fixtures("kubelet")
CADVISOR = Fixtures("cadvisor")
NODE_COLLECTORS = ("cadvisor", "healthz", "kubelet", "pods", "probes", "resource", "stats_summary")
# The kubelet's volume stats as it writes them (pkg/kubelet/metrics/collectors/volume_stats.go):
# no kubelet /metrics capture with volume stats exists, so these lines are CONSTRUCTED, for the
# claims that the real 1.16 and 1.35 pods mount.
VOLUME_STATS = b"""# HELP kubelet_volume_stats_used_bytes [ALPHA] Number of used bytes in the volume
# TYPE kubelet_volume_stats_used_bytes gauge
kubelet_volume_stats_used_bytes{namespace="scraper",persistentvolumeclaim="e2e"} 4096
kubelet_volume_stats_used_bytes{namespace="scraper",persistentvolumeclaim="e2e-pv-claim"} 8192
kubelet_volume_stats_used_bytes{namespace="scraper",persistentvolumeclaim="nobody-mounts-me"} 1
# HELP kubelet_volume_stats_inodes_used [ALPHA] Number of used inodes in the volume
# TYPE kubelet_volume_stats_inodes_used gauge
kubelet_volume_stats_inodes_used{namespace="scraper",persistentvolumeclaim="e2e"} 12
"""


def lines(res, prefix: str) -> list[str]:
    return [ln for ln in encode_text(res.families).decode().splitlines() if ln.startswith(prefix)]


def test_volume_stats_join_the_pod_that_mounts_the_claim():
    kubelet = offline("kubelet", {"cluster": "c1"}, pods=PODS / "nri-k8s-1.16-kubelet-pods.json")
    res = kubelet.process(VOLUME_STATS)
    (used,) = [ln for ln in lines(res, "kubelet_volume_stats_used_bytes{") if '"e2e"' in ln]
    assert used == ('kubelet_volume_stats_used_bytes{namespace="scraper",persistentvolumeclaim="e2e",'
                    'pod="e2e-depl-86cf7fbbf8-p4h98",label_app="deployment",workload="e2e-depl",'
                    'workload_kind="Deployment",node="minikube",cluster="c1",collector="kubelet"} 4096')
    (inodes,) = lines(res, "kubelet_volume_stats_inodes_used{")
    assert 'pod="e2e-depl-86cf7fbbf8-p4h98"' in inodes and 'workload="e2e-depl"' in inodes
    (lonely,) = [ln for ln in lines(res, "kubelet_volume_stats_used_bytes{") if "nobody" in ln]
    assert "pod=" not in lonely and "workload=" not in lonely  # no mounting pod: left as is


def test_a_claim_mounted_by_several_pods_gets_only_what_they_share():
    # The 1.35 StatefulSet's two pods both mount e2e-pv-claim (one shared claim, not templates).
    index = pod_index(PODS / "nri-k8s-1.35-kubelet-pods.json")
    assert claim_joins(index)[("scraper", "e2e-pv-claim")] == (
        ("label_app", "statefulset"), ("workload", "e2e-statefulset"), ("workload_kind", "StatefulSet"),
        ("node", "datagen-1-35"))
    res = offline("kubelet", pods=PODS / "nri-k8s-1.35-kubelet-pods.json").process(VOLUME_STATS)
    (line,) = [ln for ln in lines(res, "kubelet_volume_stats_used_bytes{") if "e2e-pv-claim" in ln]
    assert "pod=" not in line and 'workload="e2e-statefulset"' in line


def test_volume_stats_follow_pod_churn():
    doc = json.loads((PODS / "nri-k8s-1.16-kubelet-pods.json").read_text())
    kubelet = offline("kubelet", pods=doc)
    first = lines(kubelet.process(VOLUME_STATS), "kubelet_volume_stats_used")[0]
    assert 'pod="e2e-depl-86cf7fbbf8-p4h98"' in first
    # The pod is replaced by another replica: cached rewrites must not keep the old pod.
    pods = parse_podlist(doc)
    old = pods.pop(("scraper", "e2e-depl-86cf7fbbf8-p4h98"))
    new = json.loads(json.dumps(old.raw))
    new["metadata"]["name"] = "e2e-depl-86cf7fbbf8-zzzzz"
    kubelet.deps.index.replace({**pods, **parse_podlist({"items": [new]})})
    text = "\n".join(lines(kubelet.process(VOLUME_STATS), "kubelet_volume_stats_used_bytes{"))
    assert 'pod="e2e-depl-86cf7fbbf8-zzzzz"' in text and "p4h98" not in text


def test_probes_join_per_pod_and_container():
    # The only /metrics/probes capture is from a GKE node without a /pods capture: give the
    # index two of its pods (constructed) and check the join and the miss count.
    items = [{"metadata": {"name": "datadog-t9f28", "namespace": "default", "labels": {"app": "datadog"},
                           "ownerReferences": [{"kind": "DaemonSet", "name": "datadog", "controller": True}]},
              "spec": {"nodeName": "gke-node-1"}}]
    probes = offline("probes", pods={"items": items})
    res = probes.process((PODS / "dd-kubelet-metrics-probes.txt").read_bytes())
    joined = [ln for ln in lines(res, "prober_probe_total{") if 'pod="datadog-t9f28"' in ln]
    assert len(joined) == 2 and all('container="agent"' in ln and 'workload="datadog"' in ln
                                    and 'workload_kind="DaemonSet"' in ln and 'label_app="datadog"' in ln
                                    for ln in joined)
    assert res.join_misses == len(lines(res, "prober_probe_total{")) - 2


# -- access and security against the replay kubelet -----------------------------------


def node_config(replay: ReplayKubelet, kubelet: dict | None = None, **extra) -> config_mod.Config:
    ep = {"url": replay.base_url, "token_file": str(replay.token_file), "ca_file": str(replay.ca_file)}
    doc = {"node_name": replay.node_name, "pod_refresh_interval": "0.2s",
           "kubelet": {**ep, **(kubelet or {})}, "collectors": {"resource": {"enabled": True}}, **extra}
    return config_mod.parse(doc, env={})


def up(text: str, name: str) -> bool:
    return f'kubebridge_up{{collector="{name}"}} 1' in text


async def test_every_node_collector_survives_token_rotation(replay, aiohttp_client):
    client = await aiohttp_client(build_app(node_config(replay)))
    await ready(client)
    text = (await scrape(client)).decode()
    assert all(up(text, c) for c in NODE_COLLECTORS), text[-3000:]
    old = replay.token_file.read_text().strip()
    replay.token_file.write_text(secrets.token_hex(16) + "\n")  # the old token is refused from now on
    new = replay.token_file.read_text().strip()
    seen = len(replay.requests)
    text = (await scrape(client)).decode()
    assert all(up(text, c) for c in NODE_COLLECTORS), [c for c in NODE_COLLECTORS if not up(text, c)]
    for marker in ("container_cpu_usage_seconds_total{", "kubebridge_stats_node_fs_used_bytes{",
                   "kubebridge_healthz_check{", "kubebridge_pods_phase{", "prober_probe_total{"):
        assert marker in text, marker
    # /metrics/resource names pods too: joined like cAdvisor.
    assert any('collector="resource"' in ln and 'workload="coredns"' in ln for ln in text.splitlines())
    # Every node path answered with the new token (a 401 with the old one is retried once).
    after = replay.requests[seen:]
    for path in ("/metrics/cadvisor", "/metrics", "/metrics/probes", "/stats/summary", "/healthz?verbose"):
        used = [h.get("Authorization") for p, h in after if p == path]
        assert used and used[-1] == f"Bearer {new}" and f"Bearer {old}" != used[-1], path
    for _ in range(100):  # the pod index refreshes with the new token too
        if any(p == "/pods" and h.get("Authorization") == f"Bearer {new}" for p, h in replay.requests):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the pod index never used the rotated token")


async def test_server_name_override_verifies_the_cert_as_that_name(replay, aiohttp_client):
    # Connect to 127.0.0.1, verify as "localhost" (a SAN of the demo certificate).
    assert replay.base_url.startswith("https://127.0.0.1:")
    client = await aiohttp_client(build_app(node_config(replay, {"server_name": "localhost"})))
    await ready(client)
    text = (await scrape(client)).decode()
    assert up(text, "cadvisor") and up(text, "healthz") and up(text, "stats_summary")
    # Proof the override is what is verified: a name the certificate does not carry fails.
    wrong = await aiohttp_client(build_app(node_config(replay, {"server_name": "kubelet.invalid"})))
    text = (await scrape(wrong)).decode()
    assert 'kubebridge_source_status{collector="cadvisor",status="down"} 1' in text
    assert 'kubebridge_scrape_errors_total{collector="cadvisor",reason="connect"} 1' in text
    assert 'kubebridge_source_status{collector="healthz",status="down"} 1' in text  # not "unreachable"


async def test_insecure_skip_verify_works_and_is_logged(replay, aiohttp_client, caplog):
    untrusted = await aiohttp_client(build_app(node_config(replay, {"ca_file": ""})))
    text = (await scrape(untrusted)).decode()
    assert 'kubebridge_source_status{collector="cadvisor",status="down"} 1' in text  # demo CA not trusted
    with caplog.at_level(logging.WARNING, "kubebridge.upstream"):
        skip = node_config(replay, {"ca_file": "", "insecure_skip_verify": True})
        client = await aiohttp_client(build_app(skip))
        await ready(client)
    assert f"TLS verification is OFF for {replay.base_url} (insecure_skip_verify)" in caplog.text
    text = (await scrape(client)).decode()
    assert up(text, "cadvisor") and up(text, "stats_summary")


class ReadOnlyPort:
    """A plain-http kubelet read-only port (10255): serves the 1.35 captures, records headers."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, dict[str, str]]] = []
        self.bodies = {
            "/metrics/cadvisor": (CADVISOR / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt").read_bytes(),
            "/pods": (PODS / "nri-k8s-1.35-kubelet-pods.json").read_bytes(),
            "/stats/summary": (PODS / "nri-k8s-1.35-kubelet-stats-summary.json").read_bytes(),
            "/metrics": (PODS / "dd-kubelet-1.10-kubelet_metrics.txt").read_bytes(),
            "/metrics/probes": (PODS / "dd-kubelet-metrics-probes.txt").read_bytes(),
            "/healthz": b"[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n",
        }

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append((request.path, dict(request.headers)))
        body = self.bodies.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app


def sa_dir(tmp_path: Path) -> Path:
    """A projected service-account volume, as in every pod."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    for name, text in (("token", "sa-token-never-in-clear"), ("ca.crt", "-"), ("namespace", "kubebridge")):
        (sa / name).write_text(text)
    return sa


@pytest.mark.parametrize("case", ["no_token", "in_cluster_sa_token", "explicit_token"])
async def test_read_only_port_sends_a_token_only_when_configured(case, tmp_path, aiohttp_server,
                                                                 aiohttp_client):
    port = ReadOnlyPort()
    server = await aiohttp_server(port.app())
    kubelet = {"url": str(server.make_url("")).rstrip("/")}
    env = {}
    if case == "in_cluster_sa_token":
        env["KUBEBRIDGE_SA_DIR"] = str(sa_dir(tmp_path))
    if case == "explicit_token":
        (tmp_path / "ro-token").write_text("explicit-ro-token")
        kubelet["token_file"] = str(tmp_path / "ro-token")
    cfg = config_mod.parse({"node_name": "datagen-1-35", "pod_refresh_interval": "0.2s", "kubelet": kubelet},
                           env=env)
    # Over plain http the default service-account token is not even configured.
    assert cfg.kubelet.url.startswith("http://")
    assert bool(cfg.kubelet.token_file) == (case == "explicit_token")
    client = await aiohttp_client(build_app(cfg))
    await ready(client)
    text = (await scrape(client)).decode()
    for name in ("cadvisor", "kubelet", "probes", "stats_summary", "healthz", "pods"):
        assert up(text, name), name
    sent = {h.get("Authorization") for _, h in port.headers}
    assert {p for p, _ in port.headers} >= {"/pods", "/metrics/cadvisor", "/stats/summary", "/healthz"}
    assert sent == ({"Bearer explicit-ro-token"} if case == "explicit_token" else {None})
