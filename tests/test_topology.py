"""Node dimensions and kubelet topologies: every node-agent series gains the node's region,
zone, role and allowlisted labels from its own Node object (read from a replay API server,
relabelled live without a restart), `cluster` falls back to platform sources in the documented
order, and the kubelet is reachable through the API server's node proxy."""
from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from exporter import config as config_mod
from exporter.errors import ConfigError, ParseError
from exporter.nodeinfo import NodeInfo
from exporter.replay.apiserver import ReplayApiserver
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.conftest import FIXTURES, Fixtures
from tests.test_e2e import ready, scrape

# A real Node object (minikube, k9s' test data): its only role label is
# node-role.kubernetes.io/master and it has no topology labels of its own.
MINIKUBE = json.loads((Fixtures("kube_system") / "k9s-node-minikube-2019-12.json").read_text())
TOPOLOGY = {"topology.kubernetes.io/region": "europe-west1", "topology.kubernetes.io/zone": "europe-west1-b",
            "node.kubernetes.io/instance-type": "e2-standard-4", "cloud.google.com/gke-nodepool": "pool-a"}
_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} \S+$")


def node(name: str, labels: dict[str, str]) -> dict:
    """The minikube Node, renamed, with extra labels."""
    obj = copy.deepcopy(MINIKUBE)
    obj["metadata"]["name"] = name
    obj["metadata"]["labels"] = {**obj["metadata"]["labels"], **labels}
    obj["metadata"].pop("resourceVersion", None)
    return obj


def labelsets(text: str, prefix: str) -> list[str]:
    return [m.group(2) for ln in text.splitlines()
            if (m := _SERIES.match(ln)) and m.group(1).startswith(prefix)]


# -- NodeInfo from a Node object ------------------------------------------------------------

def test_real_node_without_topology_gains_only_its_role():
    info = NodeInfo.from_node(MINIKUBE)
    assert info.name == "minikube" and info.roles == ("master",)
    assert info.pairs() == (("node_role", "master"),)  # no empty region/zone/labels


def test_topology_labels_and_allowlist():
    info = NodeInfo.from_node(node("n1", TOPOLOGY))
    assert info.pairs() == (
        ("region", "europe-west1"), ("zone", "europe-west1-b"), ("node_role", "master"),
        ("node_label_cloud_google_com_gke_nodepool", "pool-a"),
        ("node_label_node_kubernetes_io_instance_type", "e2-standard-4"))
    only = NodeInfo.from_node(node("n1", TOPOLOGY), ("kubernetes.io/os",), roles=False)
    assert only.pairs() == (("region", "europe-west1"), ("zone", "europe-west1-b"),
                            ("node_label_kubernetes_io_os", "linux"))


def test_deprecated_failure_domain_is_the_fallback():
    old = {"failure-domain.beta.kubernetes.io/region": "us-east-1",
           "failure-domain.beta.kubernetes.io/zone": "us-east-1a"}
    assert NodeInfo.from_node(node("n", old)).region == "us-east-1"
    both = NodeInfo.from_node(node("n", {**old, "topology.kubernetes.io/zone": "us-east-1c"}))
    assert (both.region, both.zone) == ("us-east-1", "us-east-1c")


def test_roles_sorted_and_legacy_role():
    obj = node("n", {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/": "x"})
    assert NodeInfo.from_node(obj).roles == ("master", "worker")  # an empty role name is ignored
    legacy = node("n", {"kubernetes.io/role": "node"})
    del legacy["metadata"]["labels"]["node-role.kubernetes.io/master"]
    assert NodeInfo.from_node(legacy).roles == ("node",)


def test_untrusted_node_objects():
    for bad in ([], {"metadata": []}, {"metadata": {"name": 3}},
                {"metadata": {"name": "n", "labels": ["a"]}}):
        with pytest.raises(ParseError):
            NodeInfo.from_node(bad)
    weird = node("n", {"topology.kubernetes.io/zone": "", "topology.kubernetes.io/region": "x" * 5000,
                       "node.kubernetes.io/instance-type": 'a"b\\c\nd'})
    weird["metadata"]["labels"]["cloud.google.com/gke-nodepool"] = 7
    info = NodeInfo.from_node(weird)
    assert info.region == "" and info.zone == ""
    assert info.labels == (("node_label_node_kubernetes_io_instance_type", 'a"b\\c\nd'),)


def test_cluster_name_from_platform_node_labels():
    assert NodeInfo.from_node(node("n", {"alpha.eksctl.io/cluster-name": "prod-eks"})).cluster == "prod-eks"
    aks = NodeInfo.from_node(node("n", {"kubernetes.azure.com/cluster": "MC_rg_prod_westeurope"}))
    assert aks.cluster == "MC_rg_prod_westeurope"
    assert NodeInfo.from_node(MINIKUBE).cluster == ""


# -- configuration ---------------------------------------------------------------------------

def test_config_defaults_on_only_in_a_pod(tmp_path):
    assert not config_mod.parse({}, env={}).node_topology.enabled
    (tmp_path / "token").write_text("t")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "KUBEBRIDGE_SA_DIR": str(tmp_path)}
    topo = config_mod.parse({}, env=env).node_topology
    assert topo.enabled and topo.apiserver.url == "https://10.96.0.1:443"
    assert topo.apiserver.token_file == str(tmp_path / "token")
    v6 = config_mod.parse({}, env={**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}).node_topology
    assert v6.apiserver.url == "https://[fd00::1]:443"


@pytest.mark.parametrize("section, where", [
    ({"cluster_from": ["gce"]}, "node_topology.cluster_from"),
    ({"labels": "x"}, "node_topology.labels"),
    ({"refresh_interval": "0s"}, "node_topology.refresh_interval"),
    ({"zones": True}, "node_topology.zones"),
])
def test_config_errors_name_the_key(section, where):
    with pytest.raises(ConfigError) as exc:
        config_mod.parse({"node_topology": section}, env={})
    assert exc.value.path == where


def test_kubelet_url_node_name_is_substituted_escaped():
    cfg = config_mod.parse({"node_name": "a/b", "kubelet": {
        "url": "https://kubernetes.default.svc/api/v1/nodes/$NODE_NAME/proxy"}}, env={})
    assert cfg.kubelet.url == "https://kubernetes.default.svc/api/v1/nodes/a%2Fb/proxy"
    with pytest.raises(ConfigError):
        config_mod.parse({"kubelet": {"url": "https://x/api/v1/nodes/$NODE_NAME/proxy"}}, env={})


# -- live: the node agent against a replay kubelet and a replay API server ------------------------

@pytest.fixture
async def cluster(tmp_path):
    """A replay kubelet and a replay API server sharing one token (the proxy forwards it)."""
    token = tmp_path / "token"
    token.write_text("topology-test-token\n")
    kubelet = ReplayKubelet.from_fixtures(FIXTURES, token_file=token)
    api = ReplayApiserver(FIXTURES, token)
    await kubelet.start()
    await api.start()
    try:
        yield kubelet, api
    finally:
        await api.stop()
        await kubelet.stop()


def agent_config(replay: ReplayKubelet, api: ReplayApiserver, *, topology: dict | None = None,
                 **top) -> config_mod.Config:
    ep = {"url": api.base_url, "token_file": str(api.token_file), "ca_file": str(api.ca_file)}
    doc = {"node_name": replay.node_name, "pod_refresh_interval": "0.2s",
           "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                       "ca_file": str(replay.ca_file)},
           "node_topology": {"enabled": True, "refresh_interval": "0.2s", "apiserver": ep,
                             **(topology or {})},
           **top}
    return config_mod.parse(doc, env={})


async def poll(client, check, what: str, timeout: float = 30.0) -> str:
    """Scrape until `check(text)` holds (the node refresh is periodic)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        text = (await scrape(client)).decode()
        if check(text):
            return text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: never happened; last scrape ends {text[-2000:]}")
        await asyncio.sleep(0.1)


async def test_every_node_series_gains_topology_and_follows_relabels(cluster, aiohttp_client):
    kubelet, api = cluster
    api.put_node(node(kubelet.node_name, TOPOLOGY))
    client = await aiohttp_client(build_app(agent_config(kubelet, api, cluster="")))
    await ready(client)
    text = await poll(client, lambda t: 'zone="europe-west1-b"' in t, "topology labels")
    for prefix in ("container_", "kubelet_", "kubebridge_stats_", "kubebridge_pods_"):
        sets = labelsets(text, prefix)
        assert sets, prefix
        for s in sets:
            if 'node="' not in s:
                continue
            assert 'region="europe-west1",zone="europe-west1-b",node_role="master"' in s, (prefix, s)
            assert 'node_label_node_kubernetes_io_instance_type="e2-standard-4"' in s
    # Pod series gain them too, after their pod's join labels.
    cpu = [s for s in labelsets(text, "container_cpu_usage_seconds_total") if 'workload="coredns"' in s]
    assert cpu and all('zone="europe-west1-b"' in s for s in cpu)
    for name, kind in (("kubebridge_node_topology_syncs_total", "counter"),
                       ("kubebridge_node_topology_errors_total", "counter"),
                       ("kubebridge_node_topology_last_sync_timestamp_seconds", "gauge")):
        assert f"# TYPE {name} {kind}" in text, name
    # The node moves to another zone and loses its pool: no restart, no old value left.
    api.put_node(node(kubelet.node_name, {**TOPOLOGY, "topology.kubernetes.io/zone": "europe-west1-c",
                                          "cloud.google.com/gke-nodepool": ""}))
    text = await poll(client, lambda t: 'zone="europe-west1-c"' in t, "zone change")
    text = (await scrape(client)).decode()  # (a scrape started before the change may mix)
    assert 'zone="europe-west1-b"' not in text
    assert "gke_nodepool" not in text
    assert any('zone="europe-west1-c"' in s for s in labelsets(text, "container_cpu_usage_seconds_total"))
    assert any(p == f"/api/v1/nodes/{kubelet.node_name}" for p in api.requests)
    assert not any(p.startswith("/api/v1/nodes?") or p == "/api/v1/nodes" for p in api.requests)  # no list


async def test_cluster_order_config_then_node_labels(cluster, aiohttp_client):
    kubelet, api = cluster
    api.put_node(node(kubelet.node_name, {**TOPOLOGY, "alpha.eksctl.io/cluster-name": "from-node"}))
    client = await aiohttp_client(build_app(agent_config(kubelet, api)))
    text = await poll(client, lambda t: 'cluster="from-node"' in t, "cluster from the node label")
    assert 'kubebridge_build_info{version=' in text
    assert all('cluster="from-node"' in s for s in labelsets(text, "kubebridge_build_info"))
    configured = await aiohttp_client(build_app(agent_config(kubelet, api, cluster="mine")))
    text = await poll(configured, lambda t: 'zone="europe-west1-b"' in t, "topology")
    assert 'cluster="from-node"' not in text and 'cluster="mine"' in text
    off = await aiohttp_client(build_app(agent_config(kubelet, api, topology={"cluster_from": []})))
    text = await poll(off, lambda t: 'zone="europe-west1-b"' in t, "topology")
    assert "cluster=" not in text


async def test_gke_metadata_only_when_opted_in(cluster, aiohttp_client, aiohttp_server):
    kubelet, api = cluster
    api.put_node(node(kubelet.node_name, TOPOLOGY))
    asked: list[str] = []

    async def attribute(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Metadata-Flavor", ""))
        return web.Response(text="gke-prod", headers={"Metadata-Flavor": "Google"})
    app = web.Application()
    app.router.add_get("/computeMetadata/v1/instance/attributes/cluster-name", attribute)
    meta = await aiohttp_server(app)
    url = str(meta.make_url("/computeMetadata/v1/instance/attributes/cluster-name"))
    plain = await aiohttp_client(build_app(agent_config(kubelet, api, topology={"gke_metadata_url": url})))
    await poll(plain, lambda t: 'zone="europe-west1-b"' in t, "topology")
    assert asked == []  # not opted in: no metadata call
    opted = await aiohttp_client(build_app(agent_config(
        kubelet, api, topology={"gke_metadata_url": url, "cluster_from": ["node_labels", "gke_metadata"]})))
    text = await poll(opted, lambda t: 'cluster="gke-prod"' in t, "cluster from GKE metadata")
    assert asked and set(asked) == {"Google"}
    assert 'zone="europe-west1-b"' in text


async def test_forbidden_node_read_leaves_labels_out(cluster, aiohttp_client):
    kubelet, api = cluster
    api.put_node(node(kubelet.node_name, TOPOLOGY))
    api.forbid(f"/api/v1/nodes/{kubelet.node_name}")
    client = await aiohttp_client(build_app(agent_config(kubelet, api)))
    await ready(client)
    errors = re.compile(r"kubebridge_node_topology_errors_total(\{[^}]*\})? [1-9]")
    text = await poll(client, lambda t: errors.search(t) is not None, "errors counted")
    assert 'kubebridge_up{collector="cadvisor"} 1' in text
    assert "region=" not in text and "zone=" not in text
    api.allow(f"/api/v1/nodes/{kubelet.node_name}")  # RBAC granted later: labels appear
    await poll(client, lambda t: 'zone="europe-west1-b"' in t, "topology after the grant", timeout=60)


# -- the kubelet through the API server proxy ------------------------------------------------------

async def test_kubelet_through_the_apiserver_node_proxy(cluster, aiohttp_client):
    kubelet, api = cluster
    api.put_node(node(kubelet.node_name, TOPOLOGY))
    api.proxy_node(kubelet.node_name, kubelet.base_url, kubelet.ca_file)
    cfg = agent_config(kubelet, api, kubelet={
        "url": f"{api.base_url}/api/v1/nodes/$NODE_NAME/proxy", "token_file": str(api.token_file),
        "ca_file": str(api.ca_file)})
    client = await aiohttp_client(build_app(cfg))
    await ready(client)  # the pod index loaded /pods through the proxy
    text = await poll(client, lambda t: 'zone="europe-west1-b"' in t, "topology")
    for c in ("cadvisor", "kubelet", "probes", "stats_summary", "healthz", "pods"):
        assert f'kubebridge_up{{collector="{c}"}} 1' in text, c
    cpu = labelsets(text, "container_cpu_usage_seconds_total")
    assert any('workload="coredns"' in s and 'cgroup_kind="container"' in s for s in cpu)
    proxied = {p.split("?")[0] for p in api.requests if "/proxy/" in p}
    base = f"/api/v1/nodes/{kubelet.node_name}/proxy"
    assert {f"{base}/metrics/cadvisor", f"{base}/pods", f"{base}/stats/summary"} <= proxied
    # Through the API server the kubelet's bytes cross the network: gzip is asked for (and sent).
    asked = [h.get("Accept-Encoding", "") for p, h in kubelet.requests if p == "/metrics/cadvisor"]
    assert asked and all("gzip" in a for a in asked)
    payload = re.search(r'kubebridge_upstream_response_bytes\{collector="cadvisor"[^}]*\} (\S+)', text)
    assert payload and 0 < api.proxied_bytes
    # The API server authorizes nodes/proxy: without it the source reads not_permitted.
    api.forbid(f"{base}/metrics/cadvisor")
    text = (await scrape(client)).decode()
    assert 'kubebridge_source_status{collector="cadvisor",status="not_permitted"} 1' in text


async def test_node_proxy_of_an_unknown_node_is_404(cluster, aiohttp_client):
    kubelet, api = cluster
    cfg = agent_config(kubelet, api, node_name="no-such-node", kubelet={
        "url": f"{api.base_url}/api/v1/nodes/$NODE_NAME/proxy", "token_file": str(api.token_file),
        "ca_file": str(api.ca_file)})
    client = await aiohttp_client(build_app(cfg))
    text = (await scrape(client)).decode()
    assert 'kubebridge_source_status{collector="cadvisor",status="no_data"} 1' in text


# -- offline: `kubebridge transform --node-object` ----------------------------------------------

def transform(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "transform", *args], capture_output=True,
                          timeout=300)


def test_transform_with_a_node_object(tmp_path):
    path = tmp_path / "node.json"
    path.write_text(json.dumps(node("datagen-1-35", TOPOLOGY)))
    pods = Fixtures("kubelet") / "nri-k8s-1.35-kubelet-pods.json"
    capture = Fixtures("cadvisor") / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"
    out = transform("--source", "cadvisor", "--pods", str(pods), "--node-object", str(path), str(capture))
    assert out.returncode == 0, out.stderr.decode()
    sets = labelsets(out.stdout.decode(), "container_")
    assert sets and all('node="datagen-1-35",region="europe-west1",zone="europe-west1-b",node_role="master"'
                        in s for s in sets)
    path.write_text("{")
    bad = transform("--source", "cadvisor", "--node", "n", "--node-object", str(path),
                    str(Fixtures("cadvisor") / "nri-k8s-1.24-kubelet-metrics-cadvisor.txt"))
    assert bad.returncode == 1 and b"invalid JSON" in bad.stderr


def test_proxy_bench_runs():
    """bench.proxy works (no timing is asserted: it prints figures, docs/topology.md)."""
    out = subprocess.run([sys.executable, "-m", "bench.proxy", "--scrapes", "2"], capture_output=True,
                         timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("direct") and "in 0.0 requests" in lines[0], lines
    relayed = re.search(r"relayed by the API server ([0-9.]+) MB in ([0-9.]+) requests", lines[1])
    assert relayed and float(relayed.group(1)) > 0 and float(relayed.group(2)) >= 5, lines
