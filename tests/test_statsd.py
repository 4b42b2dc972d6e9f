"""The statsd collector: every StatsD/DogStatsD type and extension as raw datagrams, malformed
lines (counted by reason, never half-applied), the real `datadog` and `statsd` clients, the
join by source IP against the replay kubelet's pods (senders bound to 127.0.0.x pod IPs), the
Unix socket's peer credentials, mappings, budgets, TTL and kernel drop counting.

Every test listens on 127.0.0.1 with an ephemeral port and polls (never sleeps) for the
listener to have read what was sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exporter import config as config_mod
from exporter.deps import Deps
from exporter.errors import ConfigError
from exporter.expfmt import Family, encode_text, parse_line
from exporter.podindex import PodIndex
from exporter.registry import get
from exporter.replay import paths
from exporter.replay.cluster import ReplayCluster
from exporter.replay.statsd_app import add_sender_pod
from exporter.server import STATE, build_app
from tests.autodiscovery_apps import DEFAULTS_OFF, replay_kubelet, scrape_until
from tests.conftest import pod_index

PODS = json.loads(paths.data_file("nri-k8s-1.35-kubelet-pods.json").read_text())
# A captured pod: its UID and its container's id (containerd://...).
POD = next(i for i in PODS["items"] if i["metadata"]["name"] == "e2e-deployment-79967c5968-8bnn8")
UID = POD["metadata"]["uid"]
CID = POD["status"]["containerStatuses"][0]["containerID"].rpartition("://")[2]
JOIN = {"namespace": "scraper", "pod": "e2e-deployment-79967c5968-8bnn8", "workload": "e2e-deployment",
        "workload_kind": "Deployment"}
COMMON = ("node", "cluster", "collector")


def _config(**options) -> config_mod.Config:
    return config_mod.parse({"node_name": "n1", "cluster": "t", "collectors": {
        "statsd": {"enabled": True, "udp_address": "127.0.0.1:0", **options}}}, env={})


@contextlib.asynccontextmanager
async def listening(index: PodIndex | None = None, **options) -> AsyncIterator:
    cfg = _config(**options)
    c = get("statsd").factory(Deps(cfg, None, index), cfg.collectors["statsd"])
    task = asyncio.create_task(c.run())
    await c.ready.wait()
    try:
        yield c
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def send(c, *datagrams: bytes, src: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", c.listener.udp_port))


async def settle(c, packets: int, deadline: float = 20.0) -> None:
    """Wait until the listener has read `packets` datagrams in all."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        with c.store.lock:
            got = sum(c.ingest.stats.packets.values())
        if got >= packets:
            return
        assert loop.time() < end, f"only {got} of {packets} datagrams read"
        await asyncio.sleep(0.01)


def series(fams: list[Family], name: str) -> dict[frozenset, float]:
    """{labels (without node, cluster, collector): value} of the samples named `name`."""
    out = {}
    for fam in fams:
        for line in fam.samples():
            s = parse_line(line)
            if s.name == name:
                out[frozenset((k, v) for k, v in s.labels if k not in COMMON)] = float(s.value)
    return out


def one(fams: list[Family], name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    got = series(fams, name)
    assert want in got, f"{name}{dict(want)} not in {[dict(k) for k in got]}"
    return got[want]


def index() -> PodIndex:
    return pod_index(PODS)


# --- raw datagrams: every type and extension ------------------------------------------------

async def test_every_type_and_extension():
    async with listening(index()) as c:
        send(c,
             b"jobs.done:1|c\njobs.done:2|c|@0.5",                       # two lines, a sample rate
             b"queue:10|g\nqueue:+5|g\nqueue:-3|g",                       # gauge and deltas
             b"latency:250|ms",                                           # timer in ms -> seconds
             b"size:3|h\nsize:1:2:3|h",                                  # several values per line
             b"amount:7|d|@0.1",                                          # distribution, sampled
             b"users:alice|s\nusers:bob|s\nusers:alice|s",              # set
             b"tagged:1|c|#env:prod,canary,Bad-Key:x,namespace:evil,2x:y",  # tags
             b"stamped:4|g|T1656581400|#env:prod",                        # DogStatsD timestamp field
             b"by.container:1|c|c:ci-" + CID.encode(),                   # container id
             b"by.entity:1|c|#dd.internal.entity_id:" + UID.encode(),   # pod UID (downward API)
             b"_e{6,4}:deploy|done|t:success|p:low|s:ci|#env:prod",      # event
             b"_sc|db.reachable|2|#env:prod|m:timeout: 5s",               # service check
             b"\n\n")                                                     # empty lines are nothing
        await settle(c, 13)
        fams = await c.collect(5.0)
    assert one(fams, "jobs_done_total") == 5.0
    assert one(fams, "queue") == 12.0
    assert one(fams, "latency_sum") == 0.25 and one(fams, "latency_count") == 1
    assert one(fams, "latency_bucket", le="0.25") == 1 and one(fams, "latency_bucket", le="0.1") == 0
    assert one(fams, "size_count") == 4 and one(fams, "size_sum") == 9
    assert one(fams, "size_bucket", le="2.5") == 2 and one(fams, "size_bucket", le="+Inf") == 4
    assert one(fams, "amount_count") == pytest.approx(10.0) and one(fams, "amount_sum") == pytest.approx(70.0)
    assert one(fams, "users") == 2
    assert one(fams, "tagged_total", env="prod", canary="true", Bad_Key="x", exported_namespace="evil",
               _2x="y") == 1
    assert one(fams, "stamped", env="prod") == 4
    assert one(fams, "by_container_total", **JOIN, container="compute-pi-digits", label_app="deployment") == 1
    assert one(fams, "by_entity_total", **JOIN, label_app="deployment") == 1
    assert one(fams, "statsd_events_total", alert_type="success", priority="low", source_type="ci",
               env="prod") == 1
    assert one(fams, "statsd_service_checks_total", check="db.reachable", status="critical", env="prod") == 1
    kinds = {dict(k)["type"]: v for k, v in series(fams, "kubebridge_statsd_samples_total").items() if v}
    assert kinds == {"c": 5, "g": 4, "ms": 1, "h": 4, "d": 1, "s": 3, "event": 1, "service_check": 1}
    assert series(fams, "kubebridge_statsd_parse_errors_total") == {}
    assert one(fams, "kubebridge_statsd_packets_total", listener="udp") == 13
    # every line but the two joined ones came from 127.0.0.1, which is no pod's IP
    assert one(fams, "kubebridge_statsd_join_misses_total") == 2 + 3 + 1 + 4 + 1 + 3 + 1 + 1 + 1 + 1
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=encode_text(fams),
                               capture_output=True, timeout=60)
        assert check.returncode in (0, 3), check.stderr  # 3: lint warnings only (naming)


BAD = [
    (b"nocolon", "no_value"), (b":1|c", "empty_name"), (b"m:1", "no_type"), (b"m:|c", "no_value"),
    (b"m:1|x", "unknown_type"), (b"m:1|", "no_type"), (b"m:abc|c", "bad_value"), (b"m:1_0|c", "bad_value"),
    (b"m:nan|g", "bad_value"), (b"m:inf|ms", "bad_value"), (b"m: 1|c", "bad_value"),
    (b"m:1:2:x|h", "bad_value"), (b"m:-1|c", "negative_counter"), (b"m:1:-2|c", "negative_counter"),
    (b"m:1|c|@0", "bad_rate"), (b"m:1|c|@1.5", "bad_rate"), (b"m:1|c|@x", "bad_rate"),
    (b"m:1|c|#,a", "bad_tag"), (b"m:1|c|zzz", "unknown_field"), (b"m:1|c|@0.5|@0.5", "repeated_field"),
    (b"m\xff:1|c", "not_utf8"), (b"m:1|c|#k:\xff", "not_utf8"), (b"m:\xff|s", "not_utf8"),
    (b"m:a::b|s", "bad_value"), (b"m:1|c|#k:" + b"v" * 300, "label_value_limit"),
    (b"m:1|c|#" + b",".join(b"t%d:v" % i for i in range(40)), "tags_limit"),
    (b"m:" + b"1" * 9000 + b"|c", "line_too_long"), (b"m.:1|c", None),
    (b"_e{5,4}:hi|text", "bad_event"), (b"_e{x,1}:a|b", "bad_event"), (b"_e{1,1}:a|b|t:fatal", "bad_event"),
    (b"_e{1,1}:ab|", "bad_event"), (b"_sc|name|7", "bad_service_check"), (b"_sc||0", "bad_service_check"),
    (b"_sc|x|0|zz", "unknown_field"),
]


@pytest.mark.parametrize("line,reason", BAD, ids=[r or "ok" for _, r in BAD])
async def test_malformed_lines_are_counted_and_never_half_applied(line, reason):
    async with listening() as c:
        send(c, b"good:1|c\n" + line + b"\ngood:1|c")
        await settle(c, 1)
        fams = await c.collect(5.0)
        live = len(c.store)
    assert one(fams, "good_total") == 2  # the lines around it are applied
    errors = {dict(k)["reason"]: v for k, v in series(fams, "kubebridge_statsd_parse_errors_total").items()}
    refused = {dict(k)["reason"]: v for k, v in series(fams, "kubebridge_statsd_refused_total").items()}
    if reason is None:  # `m.` is a valid name (escaped m_): a control for the cases above
        assert errors == {} and live == 2
        return
    assert {**errors, **refused} == {reason: 1}
    assert (reason in refused) == reason.endswith("_limit")
    assert live == 1, "a rejected line created a series"
    samples = {dict(k)["type"]: v for k, v in series(fams, "kubebridge_statsd_samples_total").items() if v}
    assert samples == {"c": 2}


# --- real clients ------------------------------------------------------------------------

async def test_datadog_client_joined_by_entity_id(monkeypatch):
    datadog = pytest.importorskip("datadog")
    monkeypatch.setenv("DD_ENTITY_ID", UID)  # what the downward API sets (metadata.uid)
    async with listening(index()) as c:
        client = datadog.DogStatsd(host="127.0.0.1", port=c.listener.udp_port, disable_telemetry=True,
                                   constant_tags=["env:test"], origin_detection_enabled=False)
        client.increment("checkout.orders", tags=["payment:card"])
        client.increment("checkout.orders", 2, tags=["payment:card"])
        client.decrement("checkout.stock")
        client.gauge("checkout.cart_size", 3)
        client.timing("checkout.latency", 120)
        client.histogram("checkout.items", 4)
        client.distribution("checkout.amount", 19.5)
        client.set("checkout.customers", "c1")
        client.event("Deployed", "v1.2 is out", alert_type="success")
        client.service_check("checkout.db", datadog.DogStatsd.WARNING)
        client.close_socket()
        await settle(c, 10)
        fams = await c.collect(5.0)
    join = {**JOIN, "label_app": "deployment", "env": "test"}
    assert one(fams, "checkout_orders_total", **join, payment="card") == 3
    assert series(fams, "checkout_stock_total") == {}  # a decrement is a negative counter: refused
    errors = {dict(k)["reason"]: v for k, v in series(fams, "kubebridge_statsd_parse_errors_total").items()}
    assert errors == {"negative_counter": 1}
    assert one(fams, "checkout_cart_size", **join) == 3
    assert one(fams, "checkout_latency_sum", **join) == 0.12
    assert one(fams, "checkout_items_count", **join) == 1
    assert one(fams, "checkout_amount_sum", **join) == 19.5
    assert one(fams, "checkout_customers", **join) == 1
    assert one(fams, "statsd_events_total", **join, alert_type="success", priority="normal") == 1
    assert one(fams, "statsd_service_checks_total", **join, check="checkout.db", status="warning") == 1
    assert one(fams, "kubebridge_statsd_join_misses_total") == 0


async def test_datadog_client_buffered_several_samples_per_datagram():
    datadog = pytest.importorskip("datadog")
    async with listening() as c:
        client = datadog.DogStatsd(host="127.0.0.1", port=c.listener.udp_port, disable_telemetry=True,
                                   disable_buffering=False, origin_detection_enabled=False)
        for i in range(500):
            client.increment("bulk", tags=[f"shard:{i % 5}"])
        client.flush()
        client.close_socket()
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:
            with c.store.lock:
                done = c.ingest.stats.samples.get("c", 0)
                packets = c.ingest.stats.packets.get("udp", 0)
            if done >= 500 or loop.time() > end:
                break
            await asyncio.sleep(0.01)
        fams = await c.collect(5.0)
    assert sum(series(fams, "bulk_total").values()) == 500
    assert packets < 100  # buffered: many lines per datagram


async def test_plain_statsd_client():
    statsd = pytest.importorskip("statsd")
    async with listening() as c:
        client = statsd.StatsClient("127.0.0.1", c.listener.udp_port, prefix="web")
        client.incr("hits")
        client.incr("hits", 4, rate=1)
        client.gauge("temperature", 20)
        client.gauge("temperature", 5, delta=True)
        client.gauge("temperature", -2, delta=True)
        client.timing("render", 35)
        client.set("visitors", "ada")
        with client.pipeline() as pipe:  # one datagram, several lines
            pipe.incr("hits")
            pipe.timing("render", 5)
        await settle(c, 7)
        fams = await c.collect(5.0)
    assert one(fams, "web_hits_total") == 6
    assert one(fams, "web_temperature") == 23
    assert one(fams, "web_render_count") == 2 and one(fams, "web_render_sum") == pytest.approx(0.04)
    assert one(fams, "web_visitors") == 1


# --- the join by origin ------------------------------------------------------------------

def _loopback_alias_ok(ip: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


async def test_join_by_source_ip_against_the_replay_kubelet(tmp_path, aiohttp_client):
    if not _loopback_alias_ok("127.0.0.23"):
        pytest.skip("cannot bind 127.0.0.x source addresses here")
    async with replay_kubelet(tmp_path) as kubelet:
        joined = add_sender_pod(kubelet, "127.0.0.23", labels={"app.kubernetes.io/name": "payments"})
        add_sender_pod(kubelet, "127.0.0.24", host_network=True)       # shares the node's IP: no guess
        add_sender_pod(kubelet, "127.0.0.25", container="a")
        add_sender_pod(kubelet, "127.0.0.25", container="b")            # two pods claim one IP: no guess
        cfg = config_mod.parse({
            "cluster": "e2e", "pod_refresh_interval": "0.2s", "node_name": kubelet.node_name,
            "kubelet": {"url": kubelet.base_url, "token_file": str(kubelet.token_file),
                        "ca_file": str(kubelet.ca_file)},
            "collectors": {**DEFAULTS_OFF, "statsd": {"enabled": True, "udp_address": "127.0.0.1:0"}},
        }, env={})
        app = build_app(cfg)
        client = await aiohttp_client(app)
        state = app[STATE]
        await asyncio.wait_for(state.index.synced.wait(), 20)
        [src] = [s for s in state.sources if s.name == "statsd"]
        c = src.collector
        await c.ready.wait()
        for ip in ("127.0.0.23", "127.0.0.24", "127.0.0.25"):
            send(c, b"orders:1|c|#via:" + ip.encode(), src=ip)
        # pod 127.0.0.23 claims the captured pod's UID: the tag wins, the conflict is counted
        send(c, b"claimed:1|c|#dd.internal.entity_id:" + UID.encode(), src="127.0.0.23")
        await settle(c, 4)
        text = await scrape_until(client, lambda t: "orders_total{" in t)
    lines = {ln.split("via=")[1].split('"')[1]: ln
             for ln in text.splitlines() if ln.startswith("orders_total{")}
    ns, pod = joined
    assert (f'orders_total{{namespace="{ns}",pod="{pod}",via="127.0.0.23",container="app",'
            'label_app="deployment",label_app_kubernetes_io_name="payments",workload="e2e-deployment",'
            'workload_kind="Deployment",node="datagen-1-35",cluster="e2e",collector="statsd"} 1') \
        == lines["127.0.0.23"]
    common = 'node="datagen-1-35",cluster="e2e",collector="statsd"'
    for ip in ("127.0.0.24", "127.0.0.25"):
        assert lines[ip] == f'orders_total{{via="{ip}",{common}}} 1'
    assert f"kubebridge_statsd_join_misses_total{{{common}}} 2" in text
    assert f"kubebridge_statsd_origin_conflicts_total{{{common}}} 1" in text
    [claimed] = [ln for ln in text.splitlines() if ln.startswith("claimed_total{")]
    assert 'pod="e2e-deployment-79967c5968-8bnn8"' in claimed


async def test_unix_socket_joins_by_peer_credentials(tmp_path):
    """SO_PASSCRED gives the sender's pid; /proc/<pid>/cgroup names its container. This process
    runs in no pod, so its cgroup file is replaced by a containerd pod's (`proc` root)."""
    proc = tmp_path / "proc"
    (proc / str(os.getpid())).mkdir(parents=True)
    slice_uid = UID.replace("-", "_")
    (proc / str(os.getpid()) / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice_uid}.slice/"
        f"cri-containerd-{CID}.scope\n")
    path = tmp_path / "dsd.socket"
    async with listening(index(), udp_address="", unix_socket=str(path)) as c:
        c.ingest.resolver.proc = proc
        assert oct(path.stat().st_mode & 0o777) == "0o666"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"uds.hits:1|c\nuds.hits:2|c", str(path))
        await settle(c, 1)
        c.ingest.resolver.proc = tmp_path / "nowhere"  # a pid whose cgroup cannot be read: a miss
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"uds.other:1|c", str(path))
        await settle(c, 2)
        fams = await c.collect(5.0)
    assert one(fams, "uds_hits_total", **JOIN, container="compute-pi-digits", label_app="deployment") == 3
    assert one(fams, "uds_other_total") == 1
    assert one(fams, "kubebridge_statsd_packets_total", listener="unix") == 2
    assert not path.exists()  # removed on stop


def test_cgroup_formats():
    from exporter.statsd.origin import Resolver
    cases = {
        f"0::/kubepods/burstable/pod{UID}/{CID}\n": (CID, UID),
        f"12:memory:/kubepods/besteffort/pod{UID}/{CID}\n0::/\n": (CID, UID),
        f"0::/system.slice/docker-{CID}.scope\n": (CID, ""),
        f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n": (CID, UID),
        "0::/user.slice/user-1000.slice/session-2.scope\n": ("", ""),
    }
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, want) in enumerate(cases.items(), start=1):
            (Path(tmp) / str(i)).mkdir()
            (Path(tmp) / str(i) / "cgroup").write_text(text)
            assert Resolver(None, Path(tmp)).cgroup_ids(i) == want, text
        assert Resolver(None, Path(tmp)).cgroup_ids(0) == ("", "")


# --- mappings, buckets --------------------------------------------------------------------

MAPPING = """
defaults:
  ttl: 0
  histogram_options:
    buckets: [0.1, 1]
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "${1}_signup_events"
  labels:
    provider: "$2"
    outcome: "$3"
- match: "(.*)\\\\.http\\\\.(?P<code>[0-9]{3})"
  match_type: regex
  name: "${1}_http_responses"
  labels:
    code: "${code}"
- match: "noisy.*"
  action: drop
  name: "dropped"
- match: "db.query.*"
  match_metric_type: observer
  observer_type: histogram
  histogram_options:
    buckets: [0.01, 0.05]
  name: "db_query_seconds"
  labels:
    table: "$1"
- match: "db.query.*"
  name: "db_queries"
- match: "rpc.*.duration"
  observer_type: summary
  summary_options:
    quantiles: [{quantile: 0.5, error: 0.05}, {quantile: 0.99, error: 0.001}]
    max_age: 5m
  name: "rpc_duration_seconds"
  labels:
    method: "$1"
"""


async def test_statsd_exporter_mapping_file(tmp_path):
    path = tmp_path / "mapping.yml"
    path.write_text(MAPPING)
    async with listening(mapping_config=str(path), buckets={"plain_timer_seconds": [0.5]}) as c:
        send(c, b"test.dispatcher.FooProcessor.send.success:1|c",
             b"foo_product.signup.facebook.failure:1|c",
             b"api.http.404:1|c", b"noisy.thing:1|c",
             b"db.query.users:20|ms", b"db.query.users:3|g",
             b"plain.timer.seconds:100|ms", b"other.timer:100|ms",
             b"\n".join(b"rpc.get.duration:%d|ms" % ms for ms in range(1, 101)))
        await settle(c, 9)
        fams = await c.collect(5.0)
    assert one(fams, "dispatcher_events_total", processor="FooProcessor", action="send", outcome="success",
               job="test_dispatcher") == 1
    assert one(fams, "foo_product_signup_events_total", provider="facebook", outcome="failure") == 1
    assert one(fams, "api_http_responses_total", code="404") == 1
    assert one(fams, "db_query_seconds_bucket", table="users", le="0.05") == 1
    assert one(fams, "db_query_seconds_bucket", table="users", le="0.01") == 0
    assert one(fams, "db_queries") == 3                          # the gauge skipped the observer rule
    assert set(series(fams, "plain_timer_seconds_bucket")) == {frozenset({("le", "0.5")}),
                                                               frozenset({("le", "+Inf")})}
    assert {dict(k)["le"] for k in series(fams, "other_timer_bucket")} == {"0.1", "1", "+Inf"}
    assert one(fams, "kubebridge_statsd_refused_total", reason="mapping_drop") == 1
    assert one(fams, "rpc_duration_seconds", method="get", quantile="0.5") == 0.05
    assert one(fams, "rpc_duration_seconds", method="get", quantile="0.99") == 0.099
    assert one(fams, "rpc_duration_seconds_count", method="get") == 100
    assert one(fams, "rpc_duration_seconds_sum", method="get") == pytest.approx(5.05)
    assert next(f for f in fams if f.name == "rpc_duration_seconds").type == "summary"
    assert not any(f.name.startswith("noisy") for f in fams)


@pytest.mark.parametrize("options,message", [
    ({"mapping": {"mappings": [{"match": "a.*"}]}}, "mappings[0].name: required"),
    ({"mapping": {"mappings": [{"match": "(", "match_type": "regex", "name": "x"}]}}, "invalid regex"),
    ({"mapping": {"mappings": [{"match": "a.*", "name": "x", "labels": {"bad-name": "1"}}]}}, "labels"),
    ({"mapping": {"mappings": [{"match": "a.*", "name": "x", "nope": 1}]}}, "unknown key 'nope'"),
    ({"mapping_config": "/nonexistent/mapping.yml"}, "No such file"),
    ({"buckets": {"x": [1, 0.5]}}, "buckets must increase"),
    ({"udp_address": "8125"}, "HOST:PORT"),
])
def test_bad_configuration_names_the_problem(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(**options)


# --- budgets, TTL, drops ------------------------------------------------------------------

async def test_budgets_refuse_new_series_and_keep_existing_ones():
    async with listening(index(), max_series=4, max_series_per_pod=2) as c:
        send(c, b"a:1|c\nb:1|c\nc:1|c")                                         # unjoined: one "pod"
        send(c, b"d:1|c|#dd.internal.entity_id:" + UID.encode() + b"\nd_total:1|g")  # type conflict
        send(c, b"e:1|g|#dd.internal.entity_id:" + UID.encode())
        send(c, b"f:1|g|#dd.internal.entity_id:" + UID.encode())                 # over the total
        send(c, b"a:5|c\nb:5|c")                                                 # existing ones work
        await settle(c, 5)
        fams = await c.collect(5.0)
    assert one(fams, "a_total") == 6 and one(fams, "b_total") == 6 and series(fams, "c_total") == {}
    refused = {dict(k)["reason"]: v for k, v in series(fams, "kubebridge_statsd_refused_total").items()}
    assert refused == {"pod_series_limit": 1, "type_conflict": 1, "series_limit": 1}
    assert one(fams, "kubebridge_statsd_series") == 4


async def test_series_expire_after_their_ttl():
    async with listening(ttl=0.3) as c:
        send(c, b"short:1|c")
        await settle(c, 1)
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while series(await c.collect(5.0), "short_total"):
            assert loop.time() < end
            await asyncio.sleep(0.05)
        send(c, b"short:2|c")  # a new series: the old count is gone
        await settle(c, 2)
        fams = await c.collect(5.0)
    assert one(fams, "short_total") == 2
    assert one(fams, "kubebridge_statsd_series_expired_total") == 1


async def test_kernel_drops_are_counted():
    """A full receive buffer (the receiver held up by the store lock) drops datagrams; the
    kernel's count for our socket appears as kubebridge_statsd_socket_drops_total."""
    async with listening(receive_buffer=4096) as c:
        sent = 3000
        with c.store.lock:
            send(c, *[b"flood:1|c"] * sent)
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:
            fams = await c.collect(5.0)
            drops = one(fams, "kubebridge_statsd_socket_drops_total", listener="udp")
            packets = series(fams, "kubebridge_statsd_packets_total").get(frozenset({("listener", "udp")}), 0)
            if drops + packets >= sent or loop.time() > end:
                break
            await asyncio.sleep(0.05)
    assert drops > 0
    assert drops + packets == sent
    assert one(fams, "flood_total") == packets


# --- the demo ------------------------------------------------------------------------------

async def test_demo_app_pushes_dogstatsd_joined_to_its_pod(tmp_path, aiohttp_client):
    if not _loopback_alias_ok("127.0.0.42"):
        pytest.skip("cannot bind 127.0.0.x source addresses here")
    token = tmp_path / "token"
    token.write_text("demo-token")
    cluster = ReplayCluster(tmp_path, token)
    await cluster.start()
    try:
        cfg = config_mod.parse(cluster.exporter_config("127.0.0.1:0"), env={})
        client = await aiohttp_client(build_app(cfg))
        text = await scrape_until(client, lambda t: "payments_charges_total{" in t
                                  and "payments_users{" in t, deadline=30)
    finally:
        await cluster.stop()
    [card] = [ln for ln in text.splitlines() if ln.startswith("payments_charges_total{") and "card" in ln]
    for label in ('namespace="scraper"', 'container="app"', 'label_app_kubernetes_io_name="payments"',
                  'workload="e2e-deployment"', 'workload_kind="Deployment"', 'node="datagen-1-35"',
                  'cluster="demo"', 'collector="statsd"', 'method="card"', 'env="demo"'):
        assert label in card
    assert "payments_charge_latency_bucket{" in text and "statsd_service_checks_total{" in text


def test_bench_runs_and_reports():
    """`python -m bench.statsd` end to end, briefly (no timing assertion)."""
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", "bench.statsd", "--duration", "1", "--json", "--no-rss",
                           "--mode", "buffered", "--client", "replay", "--rate", "5000"],
                          cwd=root, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    [run] = json.loads(proc.stdout)["modes"]
    assert run["sent"] > 0 and run["received"] > 0 and run["samples_per_datagram"] > 10
    assert run["parse_errors"] == 0 and 0 <= run["loss"] <= 1


# --- deployment: chart and kustomize component ----------------------------------------------

def test_chart_publishes_the_statsd_port_and_socket_when_on(tmp_path):
    from tests.test_manifests import check_config, check_flags_with_config, container, parse_args, validate
    pytest.importorskip("helm_python", reason="pip install helm-python-sdk")
    from tests.test_helm import config_text, objects, render

    objs = objects(render({"nodeAgent": {"collectors": {"statsd": True},
                                         "statsd": {"hostPort": 8126, "socketDir": "/var/run/kubebridge"}}}))
    validate(objs)
    [node] = [o for o in objs if o["kind"] == "DaemonSet"]
    [cluster] = [o for o in objs if o["kind"] == "Deployment"]
    c = container(node)
    assert {"name": "statsd", "containerPort": 8125, "hostPort": 8126, "protocol": "UDP"} in c["ports"]
    assert {"name": "statsd-socket", "mountPath": "/var/run/kubebridge-statsd"} in c["volumeMounts"]
    host_path = {"path": "/var/run/kubebridge", "type": "DirectoryOrCreate"}
    assert {"name": "statsd-socket", "hostPath": host_path} in node["spec"]["template"]["spec"]["volumes"]
    assert parse_args(node)[1]["statsd"] is True and parse_args(cluster)[1]["statsd"] is False
    check_config(config_text(objs), tmp_path)
    cfg = check_flags_with_config(node, config_text(objs), tmp_path)
    assert cfg.collectors["statsd"].enabled
    assert cfg.collectors["statsd"].options["unix_socket"] == "/var/run/kubebridge-statsd/dsd.socket"
    assert cfg.collectors["statsd"].options["udp_address"] == "0.0.0.0:8125"
    # off (the default): no port, no volume
    [node] = [o for o in objects(render({})) if o["kind"] == "DaemonSet"]
    assert [p["name"] for p in container(node)["ports"]] == ["metrics"]


def test_kustomize_component_turns_statsd_on(tmp_path):
    from tests.test_manifests import MANIFESTS, container, parse_args, validate
    kubectl = shutil.which("kubectl") or pytest.skip("kubectl not installed")
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/statsd]\n")
    out = subprocess.run([kubectl, "kustomize", str(tmp_path / "overlay")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import yaml
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    validate(objs)
    [node] = [o for o in objs if o["kind"] == "DaemonSet"]
    assert parse_args(node)[1]["statsd"] is True
    port = {"name": "statsd", "containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}
    assert port in container(node)["ports"]
    [ns] = [o for o in objs if o["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


async def test_inline_mapping_and_ipv4_on_a_dual_stack_socket():
    """An inline mapping document (defaults and rules); an IPv4 sender reaching a `[::]` socket
    (`::ffff:a.b.c.d`) is joined by its IPv4 pod IP."""
    if not _loopback_alias_ok("127.0.0.29"):
        pytest.skip("cannot bind 127.0.0.x source addresses here")
    rule = {"match": "app.*.latency", "name": "app_latency_seconds", "labels": {"route": "$1"}}
    mapping = {"defaults": {"histogram_options": {"buckets": [1]}}, "mappings": [rule]}
    pods = json.loads(json.dumps(PODS))
    for item in pods["items"]:
        if item["metadata"]["uid"] == UID:
            item["status"].update(podIP="127.0.0.29", podIPs=[{"ip": "127.0.0.29"}])
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::", 0))
        udp = "[::]:0"
    except OSError:
        udp = "127.0.0.1:0"
    async with listening(pod_index(pods), mapping=mapping, udp_address=udp) as c:
        send(c, b"app.checkout.latency:250|ms", src="127.0.0.29")
        await settle(c, 1)
        fams = await c.collect(5.0)
    got = {dict(k)["le"]: v for k, v in series(fams, "app_latency_seconds_bucket").items()}
    assert got == {"1": 1, "+Inf": 1}
    assert one(fams, "app_latency_seconds_count", **JOIN, route="checkout", container="compute-pi-digits",
               label_app="deployment") == 1


# --- offline: the golden of a real capture --------------------------------------------------

CAPTURE = Path(__file__).parent / "fixtures" / "statsd" / "dogstatsd-datadog-0.56-statsd-4.0-capture.txt"


def test_golden_offline(golden):
    """`kubebridge transform --source statsd --pods <1.35 pods>` of the real clients' datagrams:
    joined by their entity id tag (the datadog client) or not at all (the plain client)."""
    cfg = _config()
    c = get("statsd").factory(Deps(cfg, None, index()), cfg.collectors["statsd"])
    res = c.process(CAPTURE.read_bytes())
    assert res.malformed == 0 and res.series_out == 13 and res.join_misses == 5
    golden("statsd.txt", encode_text(res.families))


def test_transform_command_names_rejected_lines(tmp_path, capsys):
    from exporter.cli import main
    payload = tmp_path / "lines.txt"
    payload.write_bytes(CAPTURE.read_bytes() + b"bad.line:1|zz\nneg:-1|c\n")
    assert main(["transform", "--source", "statsd", str(payload)]) == 1
    out, err = capsys.readouterr()
    assert "legacy_jobs_processed_total{" in out
    assert f"{payload}:17: unknown_type" in err and f"{payload}:18: negative_counter" in err


async def test_tag_allowlist():
    async with listening(tag_allowlist=["env", "bad-key"]) as c:
        send(c, b"hits:1|c|#env:prod,user:alice,bad-key:x,flag")
        await settle(c, 1)
        fams = await c.collect(5.0)
    assert one(fams, "hits_total", env="prod", bad_key="x") == 1


def test_readme_config_example_is_valid(tmp_path):
    """The README's `collectors.statsd` example passes `kubebridge check-config` (its mapping
    file replaced by a real one)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## StatsD / DogStatsD listener", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    mapping = tmp_path / "mapping.yml"
    mapping.write_text(MAPPING)
    example = example.replace("/etc/kubebridge/statsd-mapping.yml", str(mapping))
    example = example.replace("mapping: {mappings: [...]}", "mapping: {mappings: []}")
    path = tmp_path / "config.yaml"
    path.write_text(example)
    cfg = config_mod.load(path, env={})
    assert cfg.collectors["statsd"].enabled and cfg.collectors["statsd"].options["max_tags"] == 32


async def test_a_port_in_use_is_the_sources_error_and_sockets_close_on_cancel(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = _config(udp_address=f"127.0.0.1:{port}")
        c = get("statsd").factory(Deps(cfg, None, None), cfg.collectors["statsd"])
        task = asyncio.create_task(c.run())
        await c.ready.wait()
        with pytest.raises(OSError):
            await c.collect(5.0)
        await asyncio.gather(task, return_exceptions=True)
    # cancelled while waiting for the pod index: the socket is closed, the port free again
    cfg = _config(unix_socket=str(tmp_path / "s.sock"))
    c = get("statsd").factory(Deps(cfg, None, PodIndex()), cfg.collectors["statsd"])  # never syncs
    task = asyncio.create_task(c.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while c.listener.udp is None:
        assert loop.time() < end
        await asyncio.sleep(0.01)
    port = c.listener.udp_port
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not (tmp_path / "s.sock").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))


async def test_mapping_labels_cannot_claim_the_join_labels():
    rule = {"match": "svc.*.hits", "name": "hits", "labels": {"namespace": "$1", "team": "a"}}
    mapping = {"mappings": [rule]}
    async with listening(index(), mapping=mapping) as c:
        send(c, b"svc.other.hits:1|c|#dd.internal.entity_id:" + UID.encode())
        await settle(c, 1)
        fams = await c.collect(5.0)
    assert one(fams, "hits_total", **JOIN, exported_namespace="other", team="a", label_app="deployment") == 1


def test_real_prometheus_stores_the_demo_apps_pushed_metrics(tmp_path):
    """`kubebridge demo`'s payments app pushes DogStatsD; a real Prometheus scrapes kubebridge
    and answers PromQL over the pushed series by workload, no join needed."""
    if not _loopback_alias_ok("127.0.0.42"):
        pytest.skip("cannot bind 127.0.0.x source addresses here")
    from tests.realprom import demo, free_port, poll, prometheus
    port = free_port()
    with demo(port), prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
        rate = poll(prom, 'sum by (workload, workload_kind, method) '
                          '(increase(payments_charges_total{namespace="scraper"}[1m])) > 0', deadline=60)
        methods = {r["metric"]["method"] for r in rate}
        assert methods == {"card", "voucher"}
        assert {(r["metric"]["workload"], r["metric"]["workload_kind"]) for r in rate} == \
            {("e2e-deployment", "Deployment")}
        p99 = poll(prom, 'histogram_quantile(0.99, sum by (le, container) '
                         '(rate(payments_charge_latency_bucket[1m])))', deadline=60)
        assert p99[0]["metric"]["container"] == "app" and 0 < float(p99[0]["value"][1]) <= 0.5
        ok = poll(prom, 'statsd_service_checks_total{check="payments.gateway",status="ok",'
                        'label_app_kubernetes_io_name="payments"}')
        assert float(ok[0]["value"][1]) >= 1
