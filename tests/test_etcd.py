"""The etcd collector: offline goldens, and a REAL 3-member etcd cluster (plus a TLS member)
driven through the runner: member isolation, leadership moves, quorum loss, client certs."""
from __future__ import annotations

import asyncio
import shutil
import subprocess

import aiohttp
import pytest
from aiohttp import web

from collectors.etcd import Status, cluster_has_leader, parse_status
from tests.conftest import GOLDEN, Fixtures, offline
from tests.etcd_cluster import BUDGET, Cluster, Series, free_ports, have_etcd, make_certs, source, until
from exporter import config as config_mod
from exporter.deps import Deps
from exporter.errors import ConfigError
from exporter.expfmt import encode_text
from exporter.merge import merge
from exporter.registry import get

VERSIONS = ("1.16", "1.24", "1.35")
real = pytest.mark.skipif(not have_etcd(), reason="etcd (apt: etcd-server) or openssl not installed")


def transformed(payload: bytes, doc: dict | None = None) -> bytes:
    """What `kubebridge transform --source etcd` prints for one member's /metrics."""
    res = offline("etcd", doc).process(payload)
    assert res.malformed == 0, res.errors
    return encode_text(merge([("etcd", res.families)])[0])


def promtool_kubebridge_problems(text: bytes) -> list[str]:
    """promtool lint lines about kubebridge_* families (upstream families may have some)."""
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert proc.returncode in (0, 3), proc.stderr.decode()
    return [ln for ln in proc.stderr.decode().splitlines() if "kubebridge_" in ln]


# --- offline ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_golden(version, golden):
    payload = (Fixtures("etcd") / f"nri-k8s-{version}-etcd-metrics.txt").read_bytes()
    out = transformed(payload)
    golden(f"etcd-{version}.txt", out)
    # Every upstream series is kept, and each carries member and collector.
    series = Series(merge([("etcd", offline("etcd").process(payload).families)])[0])
    upstream = [ln for ln in payload.split(b"\n") if ln.strip() and not ln.startswith(b"#")]
    assert len(series.samples) == len(upstream)
    assert all(lb.get("member") == "etcd" and lb.get("collector") == "etcd" for _, lb, _ in series.samples)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (apt: prometheus) not installed")
@pytest.mark.parametrize("name", [*VERSIONS, "members"])
def test_golden_lints(name):
    assert promtool_kubebridge_problems((GOLDEN / f"etcd-{name}.txt").read_bytes()) == []


def test_node_names_the_member_offline():
    payload = b"# TYPE etcd_server_has_leader gauge\netcd_server_has_leader{member=\"x\"} 1\n"
    out = transformed(payload, {"node_name": "cp-1", "cluster": "prod"})
    assert out.endswith(b'etcd_server_has_leader{exported_member="x",member="cp-1",cluster="prod",'
                        b'collector="etcd"} 1\n')


@pytest.mark.parametrize("views,configured,expected", [
    ([(1, True), (1, True), (1, True)], 3, True),
    ([(1, True), (1, True)], 3, True),                      # one member down: quorum left
    ([(1, True)], 3, False),                                # a lone member: no quorum
    ([(1, True), (1, False), (1, True)], 3, True),
    ([(1, True), (1, False), (0, False)], 3, False),        # agreeing but unhealthy does not count
    ([(1, True), (2, True), (2, False)], 3, False),         # split views
    ([(0, False), (0, False), (0, False)], 3, False),
    ([(1, True)], 1, True),
])
def test_cluster_has_leader(views, configured, expected):
    statuses = [(Status(i + 10, lead, 0, 0, ""), ok) for i, (lead, ok) in enumerate(views)]
    assert cluster_has_leader(statuses, configured) is expected


def test_status_without_leader_and_int64_strings():
    s = parse_status({"header": {"member_id": "10572402461877157166"}, "version": "3.4.23",
                      "dbSize": "20480", "raftTerm": "2", "errors": ["etcdserver: no leader"]})
    assert (s.member_id, s.leader, s.db_size, s.raft_term) == (10572402461877157166, 0, 20480.0, 2.0)
    with pytest.raises(ValueError):
        parse_status({"header": {"member_id": "nope"}})


async def test_config_errors():
    async with aiohttp.ClientSession() as session:
        for members, path in (([], "collectors.etcd.members"),
                              ([{"url": "http://127.0.0.1:1"}, {"url": "https://127.0.0.1:1"}],
                               "collectors.etcd.members[1].url")):
            cfg = config_mod.parse({"collectors": {"etcd": {"enabled": True, "members": members}}}, env={})
            with pytest.raises(ConfigError) as err:
                get("etcd").factory(Deps(cfg, session, None), cfg.collectors["etcd"])
            assert err.value.path == path


# --- recorded members (no etcd needed) -------------------------------------------------------

# Answers of etcd 3.4.23 members, recorded from this module's real cluster: a leader, a follower,
# and the leader left alone after quorum loss (no `leader`, an `errors` list, /health 503).
STATUS_LEADER = {"header": {"cluster_id": "3379380840328181786", "member_id": "10572402461877157166",
                            "revision": "1", "raft_term": "2"}, "version": "3.4.23", "dbSize": "20480",
                 "leader": "10572402461877157166", "raftIndex": "9", "raftTerm": "2",
                 "raftAppliedIndex": "9", "dbSizeInUse": "16384"}
STATUS_FOLLOWER = {"header": {"cluster_id": "3379380840328181786", "member_id": "3335400138775576314",
                              "revision": "1", "raft_term": "2"}, "version": "3.4.23", "dbSize": "20480",
                   "leader": "10572402461877157166", "raftIndex": "10", "raftTerm": "2",
                   "raftAppliedIndex": "10", "dbSizeInUse": "20480"}
STATUS_ALONE = {"header": {"cluster_id": "3379380840328181786", "member_id": "10572402461877157166",
                           "revision": "4", "raft_term": "2"}, "version": "3.4.23", "dbSize": "20480",
                "raftIndex": "15", "raftTerm": "2", "raftAppliedIndex": "15",
                "errors": ["etcdserver: no leader"], "dbSizeInUse": "16384"}
KEEP = {"etcd_server_has_leader", "etcd_server_leader_changes_seen_total"}


def small_metrics() -> bytes:
    """A few families of the v1.35 capture (the golden stays small)."""
    text = (Fixtures("etcd") / "nri-k8s-1.35-etcd-metrics.txt").read_text()
    blocks = ["# HELP " + b for b in text.split("# HELP ")[1:] if b.split(" ", 1)[0] in KEEP]
    assert len(blocks) == len(KEEP)
    return "".join(blocks).encode()


async def fake_member(aiohttp_server, status: dict | None, healthy: bool = True):
    """An HTTP server answering like an etcd member (status None: a metrics-only port)."""
    body = small_metrics()

    async def metrics(_):
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def health(_):
        return web.json_response({"health": "true" if healthy else "false"}, status=200 if healthy else 503)

    async def status_(_):
        return web.json_response(status) if status is not None else web.json_response({}, status=404)
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_post("/v3/maintenance/status", status_)
    return await aiohttp_server(app)


async def test_recorded_members_golden(aiohttp_server, session, golden):
    leader = await fake_member(aiohttp_server, STATUS_LEADER)
    follower = await fake_member(aiohttp_server, STATUS_FOLLOWER)
    dead = free_ports(1)[0]  # nothing listens there
    names = {f"127.0.0.1:{leader.port}": "leader", f"127.0.0.1:{follower.port}": "follower",
             f"127.0.0.1:{dead}": "dead"}
    src = source("etcd", session, [{"url": f"http://{n}"} for n in names])
    out = await src.collect(BUDGET)
    assert out.status == "ok"
    text = encode_text(out.families).decode()
    for address, name in names.items():  # ports are random: name the members for the golden
        text = text.replace(f'member="{address}"', f'member="{name}"')
    golden("etcd-members.txt", text)
    s = Series(out.families)
    assert s.by("kubebridge_etcd_member_up") == {a: float(n != "dead") for a, n in names.items()}
    assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0  # 2 of 3 agree and are healthy
    assert s.value("kubebridge_etcd_member_info", member_id="92b8b8062aa73d2e", version="3.4.23") == 1.0
    assert out.stats["series_in"] == 2 * len(KEEP) and out.stats["response_bytes"] == 2 * len(small_metrics())


async def test_recorded_quorum_loss_and_metrics_only_port(aiohttp_server, session):
    alone = await fake_member(aiohttp_server, STATUS_ALONE, healthy=False)
    dead = free_ports(2)
    s = Series((await source("etcd", session, [{"url": f"http://127.0.0.1:{alone.port}"}, *(
        {"url": f"http://127.0.0.1:{p}"} for p in dead)]).collect(BUDGET)).families)
    member = f"127.0.0.1:{alone.port}"
    assert (s.value("kubebridge_etcd_member_healthy", member=member),
            s.value("kubebridge_etcd_member_is_leader", member=member),
            s.value("kubebridge_etcd_cluster_has_leader")) == (0.0, 0.0, 0.0)
    # A --listen-metrics-urls port has no v3 API (status 404): up, but no leadership view.
    plain = await fake_member(aiohttp_server, None)
    out = await source("etcd", session, [{"url": f"http://127.0.0.1:{plain.port}"}]).collect(BUDGET)
    s = Series(out.families)
    assert out.status == "ok" and s.value("kubebridge_etcd_member_up") == 1.0
    assert s.value("kubebridge_etcd_member_healthy") == 1.0
    assert s.get("kubebridge_etcd_member_is_leader") == s.get("kubebridge_etcd_cluster_has_leader") == []


# --- a real cluster --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not have_etcd():
        pytest.skip("etcd (apt: etcd-server) or openssl not installed")
    c = Cluster(tmp_path_factory.mktemp("etcd"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def etcd(cluster):
    """The module's cluster, whole and healthy again before each test."""
    cluster.ensure_all()
    return cluster


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def members(c: Cluster) -> list[dict]:
    return [c.config(m) for m in c.members]


@real
async def test_all_members_up_one_leader(etcd, session):
    src = source("etcd", session, members(etcd))
    out = await src.collect(BUDGET)
    assert out.status == "ok", out
    s = Series(out.families)
    labels = [m.label for m in etcd.members]
    assert s.by("kubebridge_etcd_member_up") == dict.fromkeys(labels, 1.0)
    assert s.by("kubebridge_etcd_member_healthy") == dict.fromkeys(labels, 1.0)
    leaders = s.by("kubebridge_etcd_member_is_leader")
    assert sorted(leaders.values()) == [0.0, 0.0, 1.0]
    assert next(k for k, v in leaders.items() if v) == etcd.leader().label
    assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0
    assert s.value("kubebridge_etcd_cluster_members_up") == 3.0
    assert len(set(s.by("kubebridge_etcd_raft_term").values())) == 1
    assert all(v > 0 for v in s.by("kubebridge_etcd_db_size_bytes").values())
    # member_id is hex, as etcd itself prints it in etcd_server_id{server_id}.
    for lb, _ in s.get("kubebridge_etcd_member_info"):
        assert lb["version"].startswith("3.")
        assert s.value("etcd_server_id", member=lb["member"], server_id=lb["member_id"]) == 1.0
    # Passthrough: every member's families, merged (one HELP/TYPE), told apart by `member`.
    assert s.by("etcd_server_has_leader") == dict.fromkeys(labels, 1.0)
    assert s.text.count(b"# TYPE etcd_server_has_leader ") == 1
    assert "leader" not in s.get("etcd_server_has_leader")[0][0]
    assert out.stats["series_in"] > 3000 and out.stats["response_bytes"] > 100_000
    # v3 puts through the JSON gateway are applied by every member.
    before = s.by("etcd_mvcc_put_total")
    for i in range(3):
        etcd.put_v3(f"kb/{i}", "v")
    out, s = await until(src, lambda o, s: all(
        v >= before[k] + 3 for k, v in s.by("etcd_mvcc_put_total").items()))
    assert {k: v - before[k] for k, v in s.by("etcd_mvcc_put_total").items()} == dict.fromkeys(labels, 3.0)
    if shutil.which("promtool"):
        assert promtool_kubebridge_problems(s.text) == []


@real
async def test_follower_killed(etcd, session):
    src = source("etcd", session, members(etcd))
    lead = etcd.leader()
    victim = next(m for m in etcd.members if m is not lead)
    etcd.kill(victim)
    out, s = await until(src, lambda o, s: s.value("kubebridge_etcd_member_up", member=victim.label) == 0
                         and s.value("kubebridge_etcd_cluster_has_leader") == 1)
    assert out.status == "ok"  # kubebridge keeps serving
    assert s.by("kubebridge_etcd_member_up") == {m.label: float(m is not victim) for m in etcd.members}
    assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0
    assert s.value("kubebridge_etcd_cluster_members_up") == 2.0
    assert s.by("kubebridge_etcd_member_is_leader") == {m.label: float(m is lead) for m in etcd.members
                                                         if m is not victim}
    # A dead member has nothing but member_up: no stale health, no passthrough.
    assert all(lb["member"] != victim.label for n, lb, _ in s.samples if n != "kubebridge_etcd_member_up"
               and "member" in lb)


@real
async def test_leader_killed_leadership_moves(etcd, session):
    src = source("etcd", session, members(etcd))
    old = etcd.leader()
    etcd.kill(old)

    def moved(o, s):
        leaders = [k for k, v in s.by("kubebridge_etcd_member_is_leader").items() if v]
        return leaders not in ([], [old.label]) and s.value("kubebridge_etcd_cluster_has_leader") == 1
    out, s = await until(src, moved)
    assert out.status == "ok"
    leaders = [k for k, v in s.by("kubebridge_etcd_member_is_leader").items() if v == 1]
    assert len(leaders) == 1 and leaders[0] != old.label
    assert leaders[0] == etcd.leader().label
    assert s.value("kubebridge_etcd_member_up", member=old.label) == 0.0
    assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0


@real
async def test_quorum_loss(etcd, session):
    src, v2 = source("etcd", session, members(etcd)), source("etcd_v2", session, members(etcd))
    lead = etcd.leader()
    etcd.kill(*(m for m in etcd.members if m is not lead))

    def settled(o, s):
        # From the first collection on, no quorum means no cluster leader, although for about
        # an election timeout the lone member's own status still names itself leader.
        assert s.value("kubebridge_etcd_cluster_has_leader") == 0.0
        return (s.value("kubebridge_etcd_member_healthy", member=lead.label) == 0
                and s.value("kubebridge_etcd_member_is_leader", member=lead.label) == 0)
    out, s = await until(src, settled)
    assert out.status == "ok"  # the survivor still answers
    assert s.value("kubebridge_etcd_member_healthy", member=lead.label) == 0.0
    assert s.value("kubebridge_etcd_member_is_leader", member=lead.label) == 0.0
    assert s.value("kubebridge_etcd_cluster_members_up") == 1.0
    # ... while the v2 state of the same member still says StateLeader: stale, so not confirmed.
    out2 = await v2.collect(BUDGET)
    assert out2.status == "ok"
    s2 = Series(out2.families)
    assert s2.value("kubebridge_etcd_v2_self_is_leader", member=lead.label) == 1.0
    assert s2.value("kubebridge_etcd_v2_self_leader_confirmed", member=lead.label) == 0.0


@real
async def test_hung_member_is_down_alone(etcd, session):
    """A member that accepts and never answers times out on its own deadline."""
    async def hang(reader, writer):
        await asyncio.Event().wait()
    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        src = source("etcd", session, [*members(etcd), {"url": f"http://127.0.0.1:{port}"}])
        out = await src.collect(1.0)
        s = Series(out.families)
        assert out.status == "ok"
        assert s.value("kubebridge_etcd_member_up", member=f"127.0.0.1:{port}") == 0.0
        assert s.value("kubebridge_etcd_cluster_members_up") == 3.0
        assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0  # 3 of 4 configured agree
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_member(tmp_path_factory):
    if not have_etcd():
        pytest.skip("etcd (apt: etcd-server) or openssl not installed")
    root = tmp_path_factory.mktemp("etcd-tls")
    c = Cluster(root / "data", 1, v2=False, certs=make_certs(root / "pki"), prefix="tls")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@real
async def test_tls_client_certificate(tls_member, session):
    m = tls_member.members[0]
    out = await source("etcd", session, [tls_member.config(m)]).collect(BUDGET)
    assert out.status == "ok", out
    s = Series(out.families)
    assert s.value("kubebridge_etcd_member_up", member=m.label) == 1.0
    assert s.value("kubebridge_etcd_member_is_leader", member=m.label) == 1.0
    assert s.value("kubebridge_etcd_cluster_has_leader") == 1.0
    assert s.value("etcd_server_has_leader", member=m.label) == 1.0
    # Without the client certificate the handshake is refused: the only member is down ...
    out = await source("etcd", session, [tls_member.config(m, client_cert=False)]).collect(BUDGET)
    assert (out.status, out.reason, list(out.families)) == ("down", "connect", [])


@real
async def test_tls_member_without_certificate_is_down_alone(tls_member, etcd, session):
    # ... and beside members that answer, it reads member_up 0 while the source stays ok.
    m = tls_member.members[0]
    out = await source("etcd", session, [tls_member.config(m, client_cert=False),
                                         etcd.config(etcd.members[0])]).collect(BUDGET)
    s = Series(out.families)
    assert out.status == "ok"
    assert s.by("kubebridge_etcd_member_up") == {m.label: 0.0, etcd.members[0].label: 1.0}
