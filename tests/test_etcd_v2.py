"""The etcd_v2 collector: the recorded v2 stats (golden), decoding rules, and a REAL 3-member
etcd cluster with --enable-v2 (plus a member without it: no data, not down)."""
from __future__ import annotations

import json
import shutil
import subprocess

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GOLDEN, Fixtures, offline
from tests.etcd_cluster import BUDGET, Cluster, Series, free_ports, have_etcd, source, until
from exporter.etcd import go_duration
from exporter.expfmt import encode_text
from exporter.merge import merge

FIX = Fixtures("etcd_v2")
SELF, STORE = FIX / "beats-etcd-v2-stats-self.json", FIX / "beats-etcd-v2-stats-store.json"
LEADER = FIX / "beats-etcd-v2-stats-leader.json"
FOLLOWER = FIX / "beats-etcd-v2-stats-leader-on-follower.json"
real = pytest.mark.skipif(not have_etcd(), reason="etcd (apt: etcd-server) or openssl not installed")


def transformed(*payloads: bytes, doc: dict | None = None) -> Series:
    """What `kubebridge transform --source etcd-v2 ...` prints, read back."""
    res = offline("etcd_v2", doc).process(*payloads)
    return Series(merge([("etcd_v2", res.families)])[0])


def test_golden(golden):
    s = transformed(SELF.read_bytes(), STORE.read_bytes(), LEADER.read_bytes())
    golden("etcd_v2.txt", s.text)
    assert s.value("kubebridge_etcd_v2_self_is_leader") == 1.0
    assert s.value("kubebridge_etcd_v2_self_leader_confirmed") is None  # no /health offline
    assert s.value("kubebridge_etcd_v2_self_leader_uptime_seconds") == pytest.approx(338.431802276)
    assert s.value("kubebridge_etcd_v2_self_start_timestamp_seconds") == pytest.approx(1505084758.902585)
    assert s.by("kubebridge_etcd_v2_store_operations_total", "result", operation="get") == {
        "success": 0.0, "fail": 3.0}
    assert s.value("kubebridge_etcd_v2_store_operations_total", operation="set", result="success") == 12.0
    assert len(s.get("kubebridge_etcd_v2_store_operations_total")) == 14
    # etcd's milliseconds, exposed in seconds.
    assert s.by("kubebridge_etcd_v2_follower_latency_seconds", "stat", follower="6e3bd23ae5f1eae0") == \
        pytest.approx({"current": 0.000138e-3, "average": 0.017039507382550306e-3,
                       "minimum": 0.0, "maximum": 1.007649e-3, "stddev": 0.05289178277920594e-3})
    assert s.by("kubebridge_etcd_v2_follower_append_total", "result") == {"success": 745.0, "fail": 0.0}
    assert all(lb["member"] == "etcd" and lb["collector"] == "etcd_v2" for _, lb, _ in s.samples)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (apt: prometheus) not installed")
def test_golden_lints_clean():
    proc = subprocess.run(["promtool", "check", "metrics"], input=(GOLDEN / "etcd_v2.txt").read_bytes(),
                          capture_output=True)
    assert (proc.returncode, proc.stderr) == (0, b"")


def test_follower_leader_body_and_health_document():
    healthy = json.dumps({"health": "true"}).encode()
    s = transformed(SELF.read_bytes(), STORE.read_bytes(), FOLLOWER.read_bytes(), healthy,
                    doc={"node_name": "m2", "cluster": "prod"})
    assert s.get("kubebridge_etcd_v2_follower_latency_seconds") == []
    assert s.value("kubebridge_etcd_v2_self_leader_confirmed", member="m2", cluster="prod") == 1.0
    stale = transformed(SELF.read_bytes(), STORE.read_bytes(), FOLLOWER.read_bytes(), b'{"health":"false"}')
    assert stale.value("kubebridge_etcd_v2_self_is_leader") == 1.0
    assert stale.value("kubebridge_etcd_v2_self_leader_confirmed") == 0.0


@pytest.mark.parametrize("payloads", [
    (b"[]", b"{}", b"{}"),                                   # not an object
    (b'{"recvAppendRequestCnt": "7"}', b"{}", b'{"followers": {}}'),  # not a number
    (b'{"leaderInfo": {"uptime": "5 minutes"}}', b"{}", b'{"followers": {}}'),
    (b"{}", b"{}", b'{"message": "something else"}'),       # neither leader stats nor a follower's
    (b"{}", b"{}"),                                          # a document missing
])
def test_bad_documents_are_parse_errors(payloads):
    with pytest.raises(ValueError):
        offline("etcd_v2").process(*payloads)


@pytest.mark.parametrize("text,seconds", [("5m38.431802276s", 338.431802276), ("172.064299ms", 0.172064299),
                                          ("1h0m2s", 3602.0), ("0s", 0.0), ("1.5µs", 1.5e-6), ("-2s", -2.0)])
def test_go_duration(text, seconds):
    assert go_duration(text) == pytest.approx(seconds)


# --- recorded members (no etcd needed) -------------------------------------------------------

# /v2/stats answers of a 3-member etcd 3.4.23 cluster with --enable-v2 after 20 v2 sets,
# recorded the way this module's real cluster runs (the rates are only present under traffic).
STORE_REC = {"getsSuccess": 2, "getsFail": 3, "setsSuccess": 24, "setsFail": 0, "deleteSuccess": 0,
             "deleteFail": 0, "updateSuccess": 0, "updateFail": 0, "createSuccess": 3, "createFail": 0,
             "compareAndSwapSuccess": 0, "compareAndSwapFail": 0, "compareAndDeleteSuccess": 0,
             "compareAndDeleteFail": 0, "expireCount": 0, "watchers": 0}
RECORDED = {
    "m1": {"name": "m1", "id": "92b8b8062aa73d2e", "state": "StateLeader",
           "startTime": "2026-11-25T19:52:40.649386221Z",
           "leaderInfo": {"leader": "92b8b8062aa73d2e", "uptime": "3.071441634s",
                          "startTime": "2026-11-25T19:52:41.055825108Z"},
           "recvAppendRequestCnt": 0, "sendAppendRequestCnt": 91, "sendPkgRate": 29.7595815368019,
           "sendBandwidthRate": 2498.169707248678},
    "m2": {"name": "m2", "id": "2e49b8c12781befa", "state": "StateFollower",
           "startTime": "2026-11-25T19:52:40.730180891Z",
           "leaderInfo": {"leader": "92b8b8062aa73d2e", "uptime": "3.095961182s",
                          "startTime": "2026-11-25T19:52:41.060207382Z"},
           "recvAppendRequestCnt": 45, "recvPkgRate": 14.715522612029174,
           "recvBandwidthRate": 1241.3360852280612, "sendAppendRequestCnt": 0},
}
LEADER_REC = {"leader": "92b8b8062aa73d2e", "followers": {
    "2e49b8c12781befa": {"latency": {"current": 0.000892, "average": 0.003307755555555556,
                                     "standardDeviation": 0.0066824934473278955, "minimum": 0.00042,
                                     "maximum": 0.033944}, "counts": {"fail": 0, "success": 45}},
    "6d7b356d79118b7": {"latency": {"current": 0.001272, "average": 0.0025815869565217393,
                                    "standardDeviation": 0.0015860132349917505, "minimum": 0.000531,
                                    "maximum": 0.009988}, "counts": {"fail": 0, "success": 46}}}}


async def fake_member(aiohttp_server, me: dict, healthy: bool = True, leader_status: int = 0):
    """An HTTP server answering /v2/stats and /health like an etcd member."""
    is_leader = me["state"] == "StateLeader"
    not_leader = ({"message": "not current leader"}, 403)
    routes = {"/v2/stats/self": (me, 200), "/v2/stats/store": (STORE_REC, 200),
              "/v2/stats/leader": (LEADER_REC, 200) if is_leader else not_leader,
              "/health": ({"health": "true" if healthy else "false"}, 200 if healthy else 503)}
    if leader_status:
        routes["/v2/stats/leader"] = ({"message": "forbidden"}, leader_status)

    async def handle(request):
        doc, status = routes[request.path]
        return web.json_response(doc, status=status)
    app = web.Application()
    for path in routes:
        app.router.add_get(path, handle)
    return await aiohttp_server(app)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_recorded_members_golden(aiohttp_server, session, golden):
    servers = {name: await fake_member(aiohttp_server, doc) for name, doc in RECORDED.items()}
    names = {f"127.0.0.1:{srv.port}": name for name, srv in servers.items()}
    out = await source("etcd_v2", session, [{"url": f"http://{a}"} for a in names]).collect(BUDGET)
    assert out.status == "ok"
    text = encode_text(out.families).decode()
    for address, name in names.items():  # ports are random: name the members for the golden
        text = text.replace(f'member="{address}"', f'member="{name}"')
    golden("etcd_v2-members.txt", text)
    s = Series(out.families)
    by_name = {v: k for k, v in names.items()}
    assert s.by("kubebridge_etcd_v2_self_leader_confirmed") == {by_name["m1"]: 1.0, by_name["m2"]: 0.0}
    assert {lb["member"] for lb, _ in s.get("kubebridge_etcd_v2_follower_append_total")} == {by_name["m1"]}
    assert s.value("kubebridge_etcd_v2_self_recv_bandwidth_bytes_per_second",
                   member=by_name["m2"]) == pytest.approx(1241.3360852280612)
    assert out.stats["response_bytes"] > 0 and out.stats["series_out"] == len(s.samples)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (apt: prometheus) not installed")
def test_recorded_golden_lints_clean():
    proc = subprocess.run(["promtool", "check", "metrics"], capture_output=True,
                          input=(GOLDEN / "etcd_v2-members.txt").read_bytes())
    assert (proc.returncode, proc.stderr) == (0, b"")


async def test_other_403_is_not_permitted_and_stale_leader_unconfirmed(aiohttp_server, session):
    denied = await fake_member(aiohttp_server, RECORDED["m2"], leader_status=403)
    out = await source("etcd_v2", session, [{"url": f"http://127.0.0.1:{denied.port}"}]).collect(BUDGET)
    assert (out.status, out.reason) == ("not_permitted", "not_permitted")
    stale = await fake_member(aiohttp_server, RECORDED["m1"], healthy=False)
    dead = free_ports(1)[0]
    out = await source("etcd_v2", session, [{"url": f"http://127.0.0.1:{stale.port}"},
                                            {"url": f"http://127.0.0.1:{dead}"}]).collect(BUDGET)
    s = Series(out.families)
    assert out.status == "ok"  # one member answering is enough
    assert s.by("kubebridge_etcd_v2_self_is_leader") == {f"127.0.0.1:{stale.port}": 1.0}
    assert s.by("kubebridge_etcd_v2_self_leader_confirmed") == {f"127.0.0.1:{stale.port}": 0.0}


# --- a real cluster --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not have_etcd():
        pytest.skip("etcd (apt: etcd-server) or openssl not installed")
    c = Cluster(tmp_path_factory.mktemp("etcd-v2"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@real
async def test_real_cluster_decoded(cluster, session):
    src = source("etcd_v2", session, [cluster.config(m) for m in cluster.members])
    out = await src.collect(BUDGET)
    assert out.status == "ok", out
    s = Series(out.families)
    lead = cluster.leader()
    labels = [m.label for m in cluster.members]
    only_lead = {m.label: float(m is lead) for m in cluster.members}
    assert s.by("kubebridge_etcd_v2_self_is_leader") == only_lead
    assert s.by("kubebridge_etcd_v2_self_leader_confirmed") == only_lead
    names = {lb["member"]: (lb["name"], lb["id"]) for lb, _ in s.get("kubebridge_etcd_v2_self_info")}
    assert names == {m.label: (m.name, names[m.label][1]) for m in cluster.members}
    # Only the leader has follower stats (followers answer 403 "not current leader": no error),
    # one set per other member, keyed by the member's hex id.
    followers = {lb["follower"] for lb, _ in s.get("kubebridge_etcd_v2_follower_append_total")}
    assert {lb["member"] for lb, _ in s.get("kubebridge_etcd_v2_follower_append_total")} == {lead.label}
    assert followers == {names[m.label][1] for m in cluster.members if m is not lead}
    for lb, v in s.get("kubebridge_etcd_v2_follower_latency_seconds"):
        assert 0 <= v < 1, (lb, v)  # seconds, not etcd's milliseconds
    assert s.value("kubebridge_etcd_v2_self_send_append_requests_total", member=lead.label) > 0
    for m in cluster.members:
        if m is not lead:
            assert s.value("kubebridge_etcd_v2_self_recv_append_requests_total", member=m.label) > 0
    assert all(0 <= v < 3600 for v in s.by("kubebridge_etcd_v2_self_leader_uptime_seconds").values())
    # v2 store stats count v2 operations only: v3 puts (JSON gateway) leave them alone, v2 sets
    # move them on every member (each applies the set to its own v2 store).
    sets = "kubebridge_etcd_v2_store_operations_total"
    before = s.by(sets, operation="set", result="success")
    for i in range(3):
        cluster.put_v3(f"kb/v3/{i}", "x")
    assert Series((await src.collect(BUDGET)).families).by(sets, operation="set", result="success") == before
    for i in range(3):
        cluster.put_v2(f"kb-v2-{i}", "x")
    out, s = await until(src, lambda o, s: all(
        v >= before[k] + 3 for k, v in s.by(sets, operation="set", result="success").items()))
    assert {k: v - before[k] for k, v in s.by(sets, operation="set", result="success").items()} == \
        dict.fromkeys(labels, 3.0)


@real
async def test_v2_disabled_is_no_data_not_down(tmp_path, session):
    c = Cluster(tmp_path / "nov2", 1, v2=False, prefix="nov2")
    try:
        c.start()
        members = [c.config(m) for m in c.members]
        out = await source("etcd_v2", session, members).collect(BUDGET)
        assert (out.status, out.reason, list(out.families)) == ("no_data", "no_data", [])
        assert (await source("etcd", session, members).collect(BUDGET)).status == "ok"  # etcd is fine
    finally:
        c.stop()
