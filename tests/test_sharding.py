"""Cluster-wide collection without a DaemonSet, sharded by node (exporter/shard, docs/sharding.md).

The issue's test: a replay cluster of 7 nodes (7 replay kubelets on 127.0.0.1, each on its
own port; one replay API server listing and watching their Node objects, with addresses,
kubelet ports and topology labels, and their pods) scraped by 3 shards: every node's series
appear exactly once across the shards' /metrics, each with `node`, `region` and `zone`; then
a node is added and another removed, and the same holds again.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter import config as config_mod
from exporter.errors import ConfigError
from exporter.nodeinfo import NodeInfo
from exporter.replay.fleet import ReplayFleet
from exporter.server import build_app
from exporter.shard.membership import ReadyPeers, ShardSpec, ordinal, rendezvous_owner, resolve, shard_of
from exporter.shard.nodes import NodeSet, NodeTarget, target_of
from tests.conftest import Fixtures
from tests.test_e2e import ready, scrape

NODE = json.loads((Fixtures("kube_system") / "k9s-node-minikube-2019-12.json").read_text())
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} \S+$')
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
OWN = ("kubebridge_", "process_", "python_")


# -- membership -----------------------------------------------------------------------------------

def test_shard_of_is_sha256_of_the_name_mod_total():
    # sha256("node-0")[:8] big-endian, as documented: any implementation must agree.
    import hashlib
    for name in ("node-0", "ip-10-0-1-17.ec2.internal", "gke-prod-pool-a-1234", "ñode"):
        want = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        assert [shard_of(name, m) for m in (1, 2, 3, 7)] == [want % m for m in (1, 2, 3, 7)]
    # Spread: 3,000 node names over 3 shards land within 10% of a third each.
    counts = collections.Counter(shard_of(f"node-{i}", 3) for i in range(3000))
    assert set(counts) == {0, 1, 2} and all(900 <= c <= 1100 for c in counts.values())
    with pytest.raises(ValueError):
        shard_of("n", 0)


def test_every_node_has_exactly_one_owner():
    for total in (1, 2, 3, 5):
        specs = [ShardSpec(i, total) for i in range(total)]
        for i in range(200):
            assert sum(s.owns(f"n{i}") for s in specs) == 1


def test_statefulset_ordinal_and_static_shard():
    assert ordinal("kubebridge-shard-2") == 2 and ordinal("web-0") == 0
    assert ordinal("kubebridge-7d9f8c6b5d-x2x4z") is None and ordinal("web-01") is None
    assert resolve(-1, 3, "kubebridge-shard-2") == ShardSpec(2, 3)
    assert resolve(1, 3, "kubebridge-shard-2") == ShardSpec(1, 3)  # the flag wins
    assert resolve(-1, 1, "anything") == ShardSpec(0, 1)
    for shard, total, pod in ((-1, 3, "kubebridge-abcde"), (3, 3, ""), (-1, 2, "x-5"), (0, 0, "")):
        with pytest.raises(ConfigError):
            resolve(shard, total, pod)


def test_config_flags_env_and_errors(tmp_path):
    cfg = config_mod.parse({"cluster_collector": {"enabled": True, "total_shards": 3}},
                           env={"POD_NAME": "kubebridge-shard-1"})
    cc = cfg.cluster_collector
    assert (cc.enabled, cc.shard, cc.total_shards, cc.pod_name) == (True, -1, 3, "kubebridge-shard-1")
    assert cc.kubelet_url == "https://$NODE_IP:$KUBELET_PORT"
    env = {"KUBEBRIDGE_SHARD": "2", "KUBEBRIDGE_TOTAL_SHARDS": "4"}
    cfg = config_mod.parse({"cluster_collector": {"enabled": True}}, env=env,
                           overrides={"cluster_collector": {"shard": 0}})
    assert (cfg.cluster_collector.shard, cfg.cluster_collector.total_shards) == (0, 4)
    # The proxy mode's $NODE_NAME is per node: no node_name needed.
    proxy = "https://kubernetes.default.svc/api/v1/nodes/$NODE_NAME/proxy"
    cfg = config_mod.parse({"cluster_collector": {"enabled": True, "kubelet_url": proxy}}, env={})
    assert cfg.cluster_collector.kubelet_url == proxy
    for section, key in (({"shard": 5, "total_shards": 3}, "cluster_collector.shard"),
                         ({"total_shards": 2}, "cluster_collector.shard"),
                         ({"total_shards": 1.5}, "cluster_collector.total_shards"),
                         ({"kubelet_url": "ftp://$NODE_IP"}, "cluster_collector.kubelet_url"),
                         ({"shards": 2}, "cluster_collector")):
        with pytest.raises(ConfigError) as err:
            config_mod.parse({"cluster_collector": {"enabled": True, **section}}, env={})
        assert key in str(err.value), (section, err.value)


def test_cli_flags_reach_the_config():
    from exporter import cli
    args = cli.parser().parse_args(["run", "--cluster-collector", "--shard", "1", "--total-shards", "3"])
    cfg = config_mod.parse({}, env={}, overrides=cli.overrides(args))
    assert cfg.cluster_collector == config_mod.ClusterCollectorConfig(enabled=True, shard=1, total_shards=3)
    args = cli.parser().parse_args(["run", "--cluster-collector", "--cluster-collector.membership=ready_pods",
                                    "--cluster-collector.kubelet-url=https://a/api/v1/nodes/$NODE_NAME/proxy"])
    cc = config_mod.parse({}, env={"POD_NAME": "p"}, overrides=cli.overrides(args)).cluster_collector
    assert (cc.membership, cc.kubelet_url) == ("ready_pods", "https://a/api/v1/nodes/$NODE_NAME/proxy")
    with pytest.raises(ConfigError):  # ready_pods needs the pod's own name
        config_mod.parse({}, env={}, overrides=cli.overrides(args))


# -- Node objects (untrusted) -> kubelet targets ---------------------------------------------------

def test_node_target_address_port_and_url():
    t = target_of(NODE, (), True)
    assert (t.name, t.address, t.port) == ("minikube", "192.168.64.6", 10250)
    assert t.kubelet_url("https://$NODE_IP:$KUBELET_PORT") == "https://192.168.64.6:10250"
    assert t.kubelet_url("https://api/api/v1/nodes/$NODE_NAME/proxy") == "https://api/api/v1/nodes/minikube/proxy"
    v6 = NodeTarget("n/1", NodeInfo("n/1"), "fd00::1", 10255)
    assert v6.kubelet_url("https://$NODE_IP:$KUBELET_PORT") == "https://[fd00::1]:10255"
    assert v6.kubelet_url("https://a/api/v1/nodes/$NODE_NAME/proxy") == "https://a/api/v1/nodes/n%2F1/proxy"
    hostile = json.loads(json.dumps(NODE))
    hostile["status"]["addresses"] = [{"type": "InternalIP", "address": "evil.example@10.0.0.1/x"},
                                      {"type": "Hostname", "address": 7}]
    hostile["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 70000}}
    t = target_of(hostile, (), True)
    assert (t.address, t.port) == ("", 10250)
    with pytest.raises(ValueError):
        t.kubelet_url("https://$NODE_IP:$KUBELET_PORT")
    assert t.kubelet_url("https://a/api/v1/nodes/$NODE_NAME/proxy")  # the proxy needs no address


def test_node_set_reports_only_real_changes():
    changes: list[int] = []
    nodes = NodeSet((), True, lambda: changes.append(1))
    nodes.replace([NODE, {"metadata": {}}, "junk"], True)  # unreadable objects are skipped
    assert list(nodes.targets) == ["minikube"] and len(changes) == 1
    heartbeat = json.loads(json.dumps(NODE))
    heartbeat["status"]["conditions"] = []
    nodes.apply("MODIFIED", heartbeat)
    assert len(changes) == 1  # nothing the shard uses changed
    moved = json.loads(json.dumps(NODE))
    moved["metadata"]["labels"]["topology.kubernetes.io/zone"] = "z2"
    nodes.apply("MODIFIED", moved)
    assert nodes.targets["minikube"].info.zone == "z2" and len(changes) == 2
    nodes.apply("DELETED", moved)
    assert nodes.targets == {} and len(changes) == 3


# -- the replay fleet and 3 shards ----------------------------------------------------------------

@pytest.fixture
async def fleet(tmp_path):
    token = tmp_path / "token"
    token.write_text("fleet-test-token\n")
    f = ReplayFleet(token, NODE, prefix="worker")  # (7 workers: 3, 2 and 2 per shard)
    await f.start(7)
    try:
        yield f
    finally:
        await f.stop()


def shard_config(fleet: ReplayFleet, shard: int, total: int, top: dict | None = None,
                 **cc) -> config_mod.Config:
    api = fleet.apiserver
    tls = {"token_file": str(fleet.token_file), "ca_file": str(api.ca_file)}
    return config_mod.parse({**(top or {}),
        "cluster": "fleet", "pod_refresh_interval": "1s", "scrape_timeout": "30s",
        "kubelet": tls,
        "collectors": {"resource": {"enabled": True}},
        "cluster_collector": {"enabled": True, "shard": shard, "total_shards": total,
                              "apiserver": {"url": api.base_url, **tls}, **cc},
    }, env={})


def series(text: str) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every node series (kubebridge's own left out)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not m.group(1).startswith(OWN):
            out.append((m.group(1), dict(_PAIR.findall(m.group(2)))))
    return out


def up(text: str, collector: str, node: str) -> bool:
    return re.search(rf'kubebridge_up\{{collector="{collector}",node="{node}"[^}}]*\}} 1\b', text) is not None


Owner = Callable[[str], int]  # node -> the index of the client (shard) that must serve it


def owner_of(total: int | Owner) -> Owner:
    """Static sharding's owner (sha256 mod total), or the given function."""
    return total if callable(total) else (lambda n: shard_of(n, total))


async def converged(clients, fleet: ReplayFleet, total: int | Owner, timeout: float = 120.0) -> list[str]:
    """Scrape every shard until each serves exactly its own nodes, all of them up with their pod
    index synced (no fixed sleeps); returns the shards' texts."""
    owner = owner_of(total)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        texts = [(await scrape(c)).decode() for c in clients]
        ok = True
        for i, text in enumerate(texts):
            want = {n for n in fleet.nodes if owner(n) == i}
            have = {ls["node"] for _, ls in series(text) if "node" in ls}
            ok = ok and have == want and all(up(text, c, n) for n in want
                                             for c in ("cadvisor", "pods", "stats_summary"))
        if ok:
            return texts
        if loop.time() > deadline:
            raise AssertionError(f"shards never converged on {sorted(fleet.nodes)}")
        await asyncio.sleep(0.2)


def check_exactly_once(texts: list[str], fleet: ReplayFleet, total: int | Owner) -> None:
    owner = owner_of(total)
    seen: collections.Counter[tuple[str, frozenset]] = collections.Counter()
    by_node: dict[str, set[int]] = collections.defaultdict(set)
    for i, text in enumerate(texts):
        for name, labels in series(text):
            seen[(name, frozenset(labels.items()))] += 1
            node = fleet.nodes[labels["node"]]  # every series names a node of the fleet...
            assert (labels.get("region"), labels.get("zone")) == (node.region, node.zone), (name, labels)
            assert labels["cluster"] == "fleet"
            by_node[node.name].add(i)
    dup = [k for k, n in seen.items() if n > 1]
    assert not dup, dup[:3]  # ...and appears once across the shards
    assert set(by_node) == set(fleet.nodes)
    assert all(shards == {owner(n)} for n, shards in by_node.items())
    # The pods' metadata came from the pod watch of their own node: joined, with this node.
    for i, text in enumerate(texts):
        cpu = [ls for n, ls in series(text) if n == "container_cpu_usage_seconds_total"
               and ls.get("container") == "coredns"]
        assert cpu or not any(owner(n) == i for n in fleet.nodes)
        assert all(ls["workload"] == "coredns" and ls["pod"].endswith("-" + ls["node"])
                           for ls in cpu)
        if not callable(total):
            assert f'kubebridge_shard_info{{shard="{i}",total_shards="{total}",cluster="fleet"}} 1' in text


async def test_three_shards_collect_every_node_exactly_once(fleet, aiohttp_client):
    clients = [await aiohttp_client(build_app(shard_config(fleet, i, 3))) for i in range(3)]
    for c in clients:
        await ready(c)
    assert len({shard_of(n, 3) for n in fleet.nodes}) == 3  # (every shard has work)
    texts = await converged(clients, fleet, 3)
    check_exactly_once(texts, fleet, 3)
    for i, text in enumerate(texts):
        owned = sum(shard_of(n, 3) == i for n in fleet.nodes)
        assert re.search(rf"kubebridge_shard_nodes\{{[^}}]*\}} {owned}\b", text)
        assert re.search(r"kubebridge_shard_cluster_nodes\{[^}]*\} 7\b", text)
    documented = dict(re.findall(r"^\| `(kubebridge_shard_\w+)` \| (\w+) \|",
                                 (Path(__file__).parent.parent / "docs" / "metrics.md").read_text(), re.M))
    exposed = dict(re.findall(r"^# TYPE (kubebridge_shard_\w+) (\w+)$", texts[0], re.M))
    assert exposed == documented and len(exposed) == 5
    assert re.search(r"kubebridge_shard_node_watch_up\{[^}]*\} 1\b", texts[0])
    # Pods are watched per node (fieldSelector=spec.nodeName=<node>), never all of them.
    pod_calls = [p for p in fleet.apiserver.requests if p.startswith("/api/v1/pods")]
    assert pod_calls and all("fieldSelector=spec.nodeName" in p for p in pod_calls)
    lists = [p for p in pod_calls if "watch=" not in p]
    assert lists and all("resourceVersion=0" in p for p in lists)  # from the watch cache

    # The kubelets are read across the network: gzip is asked for.
    asked = [h.get("Accept-Encoding", "") for n in fleet.nodes.values() for p, h in n.kubelet.requests
             if p == "/metrics/cadvisor"]
    assert asked and all("gzip" in a for a in asked)
    # A node joins and another leaves: picked up and dropped, each still exactly once.
    added = await fleet.add_node()
    await fleet.remove_node("worker-2")
    texts = await converged(clients, fleet, 3)
    check_exactly_once(texts, fleet, 3)
    assert added.name in "".join(texts) and 'node="worker-2"' not in "".join(texts)


async def test_one_shard_through_the_apiserver_proxy(fleet, aiohttp_client):
    api = fleet.apiserver
    cfg = shard_config(fleet, 0, 1, kubelet_url=f"{api.base_url}/api/v1/nodes/$NODE_NAME/proxy")
    client = await aiohttp_client(build_app(cfg))
    texts = await converged([client], fleet, 1)
    check_exactly_once(texts, fleet, 1)
    proxied = {p.split("/proxy/")[0] for p in api.requests if "/proxy/" in p}
    assert proxied == {f"/api/v1/nodes/{n}" for n in fleet.nodes}
    # No kubelet was reached directly: every request came through the API server.
    assert api.proxied_bytes > 0
    # A node moves to another zone: its series follow (Node watch event, no restart).
    node = fleet.nodes["worker-0"]
    obj = fleet.node_object(node)
    obj["metadata"]["labels"]["topology.kubernetes.io/zone"] = "moved-zone"
    api.put_node(obj)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        text = (await scrape(client)).decode()
        zones = {ls.get("zone") for _, ls in series(text) if ls["node"] == "worker-0"}
        if zones == {"moved-zone"}:
            break
        assert loop.time() < deadline, zones
        await asyncio.sleep(0.2)


async def test_statefulset_ordinal_picks_the_shard(fleet, aiohttp_client, tmp_path: Path):
    cfg = shard_config(fleet, -1, 3, pod_name="kubebridge-shard-1")
    client = await aiohttp_client(build_app(cfg))
    text = (await converged_one(client, fleet))
    assert 'shard="1"' in text


async def converged_one(client, fleet: ReplayFleet) -> str:
    want = {n for n in fleet.nodes if shard_of(n, 3) == 1}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while loop.time() < deadline:
        text = (await scrape(client)).decode()
        if {ls["node"] for _, ls in series(text)} == want:
            return text
        await asyncio.sleep(0.2)
    raise AssertionError("shard 1 never served its nodes")


# -- the replay API server's field selectors (what the per-node pod watches rely on) --------------

async def test_replay_field_selector_lists_and_watches(tmp_path):
    import aiohttp

    from tests.replay_api import replay

    async with replay(tmp_path) as srv, aiohttp.ClientSession() as session:
        import ssl
        ctx = ssl.create_default_context(cafile=str(srv.ca_file))
        auth = {"Authorization": "Bearer " + srv.token_file.read_text().strip()}

        async def get(path: str, **params: str) -> tuple[int, dict]:
            async with session.get(srv.base_url + path, params=params, headers=auth, ssl=ctx) as resp:
                return resp.status, await resp.json()
        pod = json.loads(json.dumps(srv.store.list("pods", None)["items"][0]))
        node = pod["spec"]["nodeName"]
        status, doc = await get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
        assert status == 200 and doc["items"] and all(i["spec"]["nodeName"] == node for i in doc["items"])
        status, doc = await get("/api/v1/pods", fieldSelector="spec.nodeName=elsewhere")
        assert status == 200 and doc["items"] == []
        status, doc = await get("/api/v1/pods", fieldSelector="spec.nodeName!=elsewhere,metadata.name="
                                + pod["metadata"]["name"])
        assert [i["metadata"]["name"] for i in doc["items"]] == [pod["metadata"]["name"]]
        status, doc = await get("/api/v1/pods", fieldSelector="spec.bogus=1")
        assert status == 400 and doc["message"] == "field label not supported: spec.bogus"
        # A watch sees a pod moving onto its node as ADDED and off it as DELETED.
        w = srv.store.watch("pods", None, str(srv.store.rv), False,
                            select=lambda o: (o.get("spec") or {}).get("nodeName") == "n2")
        pod["metadata"]["name"] = "mover"
        for k in ("resourceVersion", "uid"):
            pod["metadata"].pop(k, None)
        pod["spec"]["nodeName"] = ""
        srv.add_pod(json.loads(json.dumps(pod)))
        pod["spec"]["nodeName"] = "n2"
        srv.update_pod(json.loads(json.dumps(pod)))
        srv.update_pod(json.loads(json.dumps(pod)))
        pod["spec"]["nodeName"] = "n3"
        srv.update_pod(json.loads(json.dumps(pod)))
        got = [w.queue.get_nowait()["type"] for _ in range(w.queue.qsize())]
        assert got == ["ADDED", "MODIFIED", "DELETED"]


# -- refusals ----------------------------------------------------------------------------------------

async def test_refused_node_list_is_ready_and_reported(fleet, aiohttp_client):
    fleet.apiserver.forbid("/api/v1/nodes")
    client = await aiohttp_client(build_app(shard_config(fleet, 0, 1)))
    await ready(client)  # refused, not pending: the rollout does not stall
    text = (await scrape(client)).decode()
    assert re.search(r"kubebridge_shard_node_watch_up\{[^}]*\} 0\b", text)
    assert not series(text)
    fleet.apiserver.allow("/api/v1/nodes")  # granted later: the nodes appear (the watch retries)
    await converged([client], fleet, 1, timeout=120)


def test_start_line_names_the_shard():
    from exporter.commands import start_message
    cfg = config_mod.parse({"cluster_collector": {"enabled": True, "total_shards": 3}},
                           env={"POD_NAME": "kb-2"})
    line = start_message(cfg, "http://0.0.0.0:9500", None)
    assert "kubelet: https://$NODE_IP:$KUBELET_PORT for each node" in line
    assert "node: every node of shard ordinal of kb-2 of 3" in line


def test_pod_feed_keeps_only_its_nodes_pods():
    from exporter.podindex import PodIndex
    from exporter.shard.agent import PodFeed

    pods = json.loads((Fixtures("kubelet") / "nri-k8s-1.35-kubelet-pods.json").read_text())["items"]
    node = pods[0]["spec"]["nodeName"]
    index = PodIndex()
    feed = PodFeed(node, index)
    stray = json.loads(json.dumps(pods[1]))
    stray["spec"]["nodeName"] = "another-node"
    stray["metadata"]["name"] = "stray"
    first = json.loads(json.dumps(pods[0]))
    first["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {}}]
    feed.replace([first, *pods[1:], stray, "junk"], True)  # type: ignore[list-item]
    assert len(index) == len(pods) and index.get(stray["metadata"]["namespace"], "stray") is None
    kept = index.get(first["metadata"]["namespace"], first["metadata"]["name"])
    assert kept is not None and "managedFields" not in kept.raw["metadata"]
    feed.apply("DELETED", pods[0])
    assert len(index) == len(pods) - 1 and index.synced.is_set()
    feed.apply("ADDED", stray)
    assert len(index) == len(pods) - 1


# -- a real Prometheus scraping the 3 shards ---------------------------------------------------------

async def test_prometheus_stores_each_node_from_exactly_one_shard(fleet, aiohttp_client, tmp_path):
    """What Prometheus holds after scraping the 3 shards: every node's series from one target
    (instance) only, every series with a zone."""
    from tests import realprom

    clients = [await aiohttp_client(build_app(shard_config(fleet, i, 3))) for i in range(3)]
    await converged(clients, fleet, 3)
    targets = [f"127.0.0.1:{c.server.port}" for c in clients]
    with realprom.prometheus(tmp_path, targets, interval="3s") as url:
        metric = 'container_cpu_usage_seconds_total{collector="cadvisor"}'
        per_node = f"count by (node) (count by (node, instance) ({metric}))"

        every_node_once = f"count(({per_node}) == 1) == {len(fleet.nodes)}"
        assert await asyncio.to_thread(realprom.poll, url, every_node_once, 90)
        rows = await asyncio.to_thread(realprom.query, url, per_node)
        assert {r["metric"]["node"] for r in rows} == set(fleet.nodes)
        assert all(r["value"][1] == "1" for r in rows)  # one shard per node
        instances = "count(count by (instance) (kubebridge_shard_info))"
        shards = await asyncio.to_thread(realprom.query, url, instances)
        assert shards and shards[0]["value"][1] == "3"
        zoneless = await asyncio.to_thread(realprom.query, url, f'count({metric[:-1]},zone=""}})')
        assert zoneless == []


# -- membership from the Ready replicas (ready_pods): scaling without a restart ------------------------

def test_rendezvous_moves_only_what_it_must():
    nodes = [f"node-{i}" for i in range(3000)]
    three = {n: rendezvous_owner(n, {"kb-0", "kb-1", "kb-2"}) for n in nodes}
    counts = collections.Counter(three.values())
    assert all(900 <= c <= 1100 for c in counts.values())
    four = {n: rendezvous_owner(n, {"kb-0", "kb-1", "kb-2", "kb-3"}) for n in nodes}
    moved = [n for n in nodes if three[n] != four[n]]
    assert all(four[n] == "kb-3" for n in moved) and 600 <= len(moved) <= 900  # about 1/4, all to kb-3
    two = {n: rendezvous_owner(n, {"kb-0", "kb-2"}) for n in nodes}
    assert all(two[n] == three[n] for n in nodes if three[n] != "kb-1")  # only kb-1's nodes move
    peers = ReadyPeers("kb-1")
    assert not peers.owns("node-1") and peers.shard == -1  # not Ready yet: owns nothing
    peers.members = frozenset({"kb-0", "kb-1"})
    assert peers.shard == 1 and peers.total == 2
    assert all(peers.owns(n) == (two_of[n] == "kb-1") for n in nodes[:100]
               for two_of in [{m: rendezvous_owner(m, {"kb-0", "kb-1"}) for m in nodes[:100]}])
    assert rendezvous_owner("n", set()) == ""


def peer_pod(name: str, ready: bool) -> dict:
    return {"metadata": {"name": name, "namespace": "kubebridge",
                         "labels": {"app.kubernetes.io/component": "cluster-collector"}},
            "spec": {"containers": [{"name": "kubebridge", "image": "kubebridge"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}}


async def test_ready_pods_membership_scales_and_fails_over(fleet, aiohttp_client):
    """Replicas share the nodes by rendezvous hashing over the Ready peer pods: a fourth Ready
    replica takes its share, a replica that stops being Ready hands its nodes to the others;
    each time every node's series appear exactly once. (Pods `collector-<n>`, 7 workers: 3, 2
    and 2 nodes; with a fourth 3, 2, 1 and 1; without collector-1 3, 3 and 1.)"""
    api = fleet.apiserver

    def app(name: str):
        return aiohttp_client(build_app(shard_config(fleet, -1, 1, {"pod_namespace": "kubebridge"},
                                                     membership="ready_pods", pod_name=name)))
    names = ["collector-0", "collector-1", "collector-2"]
    for n in names:
        api.add_pod(peer_pod(n, True))
    clients = [await app(n) for n in names]

    def by(members: list[str]) -> Owner:
        owner = {node: names.index(rendezvous_owner(node, set(members))) for node in fleet.nodes}
        assert len(set(owner.values())) == len(members), "every member has nodes (else: rename)"
        return owner.__getitem__
    texts = await converged(clients, fleet, by(names))
    check_exactly_once(texts, fleet, by(names))
    # Scale up: collector-3 starts (not Ready: serves nothing), then turns Ready and takes its share.
    names.append("collector-3")
    api.add_pod(peer_pod("collector-3", False))
    clients.append(await app("collector-3"))
    await converged(clients, fleet, by(names[:3]))
    api.update_pod(peer_pod("collector-3", True))
    texts = await converged(clients, fleet, by(names))
    check_exactly_once(texts, fleet, by(names))
    # collector-1 stops being Ready (or is deleted): its nodes go to the others, the rest stay put.
    api.update_pod(peer_pod("collector-1", False))
    live = ["collector-0", "collector-2", "collector-3"]
    texts = await converged(clients, fleet, by(live))
    check_exactly_once(texts, fleet, by(live))
    assert not series(texts[1])

