"""Issue 13, points 3 and 4: the memory budget (body caps, one encode per state, /pods off the
event loop) and the cardinality budget that sheds. Real HTTP servers on 127.0.0.1 throughout."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter import config as config_mod
from exporter.bodies import SharedBodies
from exporter.budget import SeriesPool
from exporter.cli import overrides, parser
from exporter.errors import ConfigError
from exporter.expfmt import Family
from exporter.pods import parse_podlist
from exporter.podstream import INLINE_BYTES, parse_podlist_bytes, parse_podlist_stream
from exporter.replay import paths
from exporter.replay.kubelet import ReplayKubelet
from exporter.runner import Outcome
from exporter.server import STATE, build_app
from exporter.upstream import BodyTooLarge, Upstream
from tests.conftest import offline

PODS = paths.data_file("nri-k8s-1.35-kubelet-pods.json")
CADVISOR = paths.data_file("nri-k8s-1.35-kubelet-metrics-cadvisor.txt")
WAIT = 60.0  # seconds: generous bound for anything that must not hang


# ---- body caps ------------------------------------------------------------------------------

async def _serve(aiohttp_server, handler) -> str:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("split", [False, True], ids=["bytes", "lines"])
async def test_content_length_over_cap_is_refused_before_reading(aiohttp_server, split):
    never = asyncio.Event()

    async def huge(request):
        resp = web.StreamResponse(headers={"Content-Length": str(10 << 30)})
        await resp.prepare(request)
        await resp.write(b"x" * 100)
        await never.wait()  # the rest never comes: only a refusal from the header can answer
        return resp
    base = await _serve(aiohttp_server, huge)
    async with aiohttp.ClientSession() as session:
        up = Upstream(session, base, max_bytes=1 << 20)
        with pytest.raises(BodyTooLarge):
            async with asyncio.timeout(WAIT):
                await up.request("/metrics", split=split)
    never.set()


@pytest.mark.parametrize("split", [False, True], ids=["bytes", "lines"])
async def test_gzip_bomb_stops_at_the_cap(aiohttp_server, split):
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = z.compress(b"\0" * (16 << 20)) + z.flush()  # 16 KiB of gzip, 16 MiB inflated
    bomb = member * 1024  # gzip members in a row: 16 MiB sent, 16 GiB inflated
    sent = []

    async def serve_bomb(request):
        resp = web.StreamResponse(headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for i in range(0, len(bomb), 4096):
                await resp.write(bomb[i:i + 4096])
                sent.append(4096)
        except (ConnectionError, RuntimeError):
            pass
        return resp
    base = await _serve(aiohttp_server, serve_bomb)
    cap = 4 << 20
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as session:
            up = Upstream(session, base, max_bytes=cap)
            with pytest.raises(BodyTooLarge):
                async with asyncio.timeout(WAIT):
                    await up.request("/metrics", split=split)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * cap  # never more than the cap (and a chunk) held
    assert sum(sent) < len(bomb) // 2  # refused on the inflated count, long before the end


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
async def test_a_body_read_as_lines_is_its_split(aiohttp_server, gzipped):
    """Split while it streams in, a body gives exactly `body.split(b"\\n")`, its size and its
    blankness, whatever the chunks (newlines at chunk edges, CRLF, no final newline)."""
    bodies = [b"", b"\n", b" \t\r\n\n", b"a 1", b"a 1\n", b"a 1\r\nb 2\r\n", b"\n\nx 1\n\n",
              CADVISOR.read_bytes(), CADVISOR.read_bytes()[:-1] + b" 7", b"y 1\n" * 70000]

    async def serve(request):
        body = bodies[int(request.path.strip("/"))]
        if gzipped:
            return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(body), 1000):  # odd chunk edges
            await resp.write(body[i:i + 1000])
        return resp
    base = await _serve(aiohttp_server, serve)
    async with aiohttp.ClientSession() as session:
        up = Upstream(session, base)
        for i, body in enumerate(bodies):
            resp = await up.request(f"/{i}", split=True)
            assert resp.lines == body.split(b"\n") and resp.body == b"", i
            assert resp.size == len(body) and resp.blank == (not body.strip()), i


async def test_body_under_cap_is_read_whole(aiohttp_server):
    payload = CADVISOR.read_bytes()

    async def ok(request):
        return web.Response(body=payload)
    base = await _serve(aiohttp_server, ok)
    async with aiohttp.ClientSession() as session:
        got = await Upstream(session, base, max_bytes=len(payload)).request("/metrics")
    assert got.body == payload


def test_sizes_and_limits_parse():
    cfg = config_mod.parse({"max_body_size": "8Mi", "source_series_limit": 5000, "series_limit": 9000,
                            "series_ttl": "2m",
                            "collectors": {"cadvisor": {"max_body_size": "64MB", "series_limit": 70}}},
                           env={})
    assert cfg.max_body_size == 8 << 20 and cfg.series_ttl == 120.0
    assert cfg.body_limit(cfg.collectors["cadvisor"]) == 64_000_000
    assert cfg.body_limit(cfg.collectors["kubelet"]) == 8 << 20
    default = config_mod.parse({}, env={})
    assert default.body_limit(default.collectors["kubelet"]) == 24 << 20
    assert default.body_limit(default.collectors["stats_summary"]) == 8 << 20  # a JSON source's own
    small = config_mod.parse({"max_body_size": "1Mi"}, env={})
    assert small.body_limit(small.collectors["stats_summary"]) == 1 << 20  # the smaller one
    own = config_mod.parse({"collectors": {"stats_summary": {"max_body_size": "9Mi"}}}, env={})
    assert own.body_limit(own.collectors["stats_summary"]) == 9 << 20
    assert cfg.source_limit(cfg.collectors["cadvisor"]) == 70
    assert cfg.source_limit(cfg.collectors["kubelet"]) == 5000
    for bad in ({"max_body_size": "lots"}, {"max_body_size": 0}, {"max_body_size": True},
                {"series_limit": -1}, {"source_series_limit": "10"},
                {"collectors": {"kubelet": {"max_body_size": "1Ti"}}}):
        with pytest.raises(ConfigError):
            config_mod.parse(bad, env={})
    args = parser().parse_args(["run", "--upstream.max-body-size", "16Mi", "--series.limit", "1234",
                                "--series.source-limit", "99"])
    cfg = config_mod.parse({}, env={}, overrides=overrides(args))
    assert (cfg.max_body_size, cfg.series_limit, cfg.source_series_limit) == (16 << 20, 1234, 99)


def _config(replay: ReplayKubelet, **extra) -> config_mod.Config:
    doc = {"cluster": "mem", "pod_refresh_interval": "0.2s", "node_name": replay.node_name,
           "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                       "ca_file": str(replay.ca_file)}}
    doc.update(extra)
    return config_mod.parse(doc, env={})


async def _ready(client) -> None:
    async with asyncio.timeout(WAIT):
        while (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.02)


async def test_a_source_over_its_own_cap_reads_down_alone(replay, aiohttp_client):
    cfg = _config(replay, collectors={"cadvisor": {"max_body_size": 1000}})
    client = await aiohttp_client(build_app(cfg))
    await _ready(client)
    text = await (await client.get("/metrics")).text()
    assert 'kubebridge_up{collector="cadvisor",cluster="mem"} 0' in text
    assert 'kubebridge_up{collector="kubelet",cluster="mem"} 1' in text  # same upstream, own cap
    assert "container_cpu_usage_seconds_total{" not in text


# ---- one encode per state -------------------------------------------------------------------

@pytest.fixture
async def held_kubelet(aiohttp_server):
    """A kubelet whose cadvisor answer waits for `release`, so scrapes can pile up on it."""
    release = asyncio.Event()
    cadvisor, pods = CADVISOR.read_bytes(), PODS.read_bytes()

    async def handle(request):
        if request.path == "/pods":
            return web.Response(body=pods, content_type="application/json")
        if request.path == "/metrics/cadvisor":
            await release.wait()
            return web.Response(body=cadvisor, content_type="text/plain")
        return web.Response(status=404)
    base = await _serve(aiohttp_server, handle)
    yield base, release
    release.set()


async def test_concurrent_scrapes_share_one_encode_and_one_gzip(held_kubelet, aiohttp_client):
    base, release = held_kubelet
    off = {n: {"enabled": False} for n in ("kubelet", "probes", "pods", "healthz", "stats_summary")}
    cfg = config_mod.parse({"kubelet": {"url": base}, "pod_refresh_interval": "0.2s",
                            "collectors": {"cadvisor": {"enabled": True}, **off}}, env={})
    app = build_app(cfg)
    arrived = []

    @web.middleware
    async def count(request, handler):
        if request.path == "/metrics":
            arrived.append(1)  # the handler joins the cadvisor run before it next yields
        return await handler(request)
    app.middlewares.append(count)
    client = await aiohttp_client(app)
    await _ready(client)
    state = app[STATE]
    n = 40

    async def scrape():
        resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
        return await resp.read()
    tasks = [asyncio.ensure_future(scrape()) for _ in range(n)]
    async with asyncio.timeout(WAIT):
        while len(arrived) < n:
            await asyncio.sleep(0.01)
    release.set()
    bodies = await asyncio.gather(*tasks)
    assert state.bodies.encodes == 1 and state.bodies.gzips == 1
    assert len(set(bodies)) == 1 and b"container_cpu_usage_seconds_total{" in bodies[0]

    # A later scrape is another state: encoded again. Text and OpenMetrics are distinct bodies.
    await client.get("/metrics")
    await client.get("/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    assert state.bodies.encodes == 3


async def test_scrapes_that_find_a_build_running_share_the_next_one():
    """Whatever the number of distinct states scrapes bring, a lane builds one body at a time and
    queues at most one more, which takes each source's most recent outcome; every scrape gets a
    body at least as recent as its own outcomes."""
    release = threading.Event()
    built: list[str] = []

    def families(outcomes):
        return [Family(o.name, lines=[str(o.seq).encode()]) for o in outcomes]

    def encode(fams, openmetrics, compress):
        release.wait(WAIT)
        body = ",".join(f"{f.name}={f.lines[0].decode()}" for f in fams) + (" gz" if compress else "")
        built.append(body)
        return body.encode()

    def outcomes(a: int, b: int) -> list[Outcome]:
        return [Outcome("a", seq=a), Outcome("b", seq=b)]
    bodies = SharedBodies(families, encode)
    first = asyncio.ensure_future(bodies.get(outcomes(1, 1), False, True))
    await asyncio.sleep(0.05)  # the first build runs (blocked)
    later = [asyncio.ensure_future(bodies.get(o, False, True))
             for o in (outcomes(2, 1), outcomes(1, 3), outcomes(2, 2), outcomes(1, 1))]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == b"a=1,b=1 gz"
    assert await asyncio.gather(*later) == [b"a=2,b=3 gz"] * 3 + [b"a=1,b=1 gz"]
    assert built == ["a=1,b=1 gz", "a=2,b=3 gz"] and bodies.encodes == 2
    # The last gzipped body serves a scrape it covers with no build; a plain one is not kept.
    assert await bodies.get(outcomes(2, 2), False, True) == b"a=2,b=3 gz" and bodies.encodes == 2
    assert await bodies.get(outcomes(2, 2), False, False) == b"a=2,b=2"
    assert await bodies.get(outcomes(2, 2), False, False) == b"a=2,b=2" and bodies.encodes == 4


async def test_a_failed_build_fails_its_scrapes_and_not_the_next():
    calls = []

    def encode(fams, openmetrics, compress):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return b"ok"
    bodies = SharedBodies(lambda outcomes: [], encode)
    with pytest.raises(RuntimeError, match="boom"):
        await bodies.get([Outcome("a", seq=1)], False, True)
    assert await bodies.get([Outcome("a", seq=1)], False, True) == b"ok"


def test_a_scan_holds_the_payload_once():
    """A first transform (a scan) releases each line as its head and rest replace it: what it
    holds beyond its result, caches and plan stays well under one payload. Holding every line
    until the end, as it once did, put the payload twice in memory (about 0.9 of it here)."""
    body = CADVISOR.read_bytes()
    collector = offline("cadvisor", {"cluster": "t"}, json.loads(PODS.read_text()))
    tracemalloc.start()
    try:
        res = collector.process(body)
        resident, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.series_out > 1000 and res.malformed == 0  # the capture, transformed
    assert peak - resident < 0.6 * len(body), (peak - resident) / len(body)


def test_trim_gives_a_fragmented_heap_back():
    """What a scrape frees among what it keeps stays resident until malloc.trim() (glibc)."""
    script = (
        "import re\n"
        "from exporter import malloc\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "malloc.tune()\n"
        "blocks = [bytes(2000) + i.to_bytes(4, 'little') for i in range(40000)]\n"  # 80 MB of heap
        "keep = blocks[::50]\n"  # one block in 50 stays: the heap cannot shrink from its top
        "del blocks\n"
        "before = rss()\n"
        "malloc.trim()\n"
        "print(before - rss())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert int(out.stdout) > 40 << 20, out.stdout


# ---- the cardinality budget -----------------------------------------------------------------

def _fam(name: str, *lines: str, kind: str = "gauge") -> Family:
    return Family(name, kind, None, ["\n".join(lines).encode()])


def _names(families) -> list[bytes]:
    return [ln.rpartition(b" ")[0] for f in families for ln in f.samples()]


def test_budget_refuses_the_newest_and_keeps_the_known():
    now = [0.0]
    pool = SeriesPool(limit=1000, ttl=60.0, clock=lambda: now[0])
    b = pool.budget("x", 3)
    out = b.admit([_fam("a", 'a{i="1"} 1', 'a{i="2"} 1')])
    assert len(_names(out)) == 2 and b.refused_total == 0
    out = b.admit([_fam("a", 'a{i="1"} 2', 'a{i="3"} 2', 'a{i="4"} 2', 'a{i="5"} 2')])
    # i=2 still counts (seen within the ttl), so one new one fits: the first to arrive.
    assert _names(out) == [b'a{i="1"}', b'a{i="3"}'] and b.refused_total == 2
    now[0] = 61.0  # i=2 (and nothing else) unseen for longer than the ttl
    b.admit([_fam("a", 'a{i="1"} 3', 'a{i="3"} 3')])
    out = b.admit([_fam("a", 'a{i="1"} 4', 'a{i="3"} 4', 'a{i="9"} 4')])
    assert _names(out) == [b'a{i="1"}', b'a{i="3"}', b'a{i="9"}']
    assert len(b.known) <= b.limit


def test_budget_steady_series_stay_known_and_stale_ones_make_room():
    now = [0.0]
    pool = SeriesPool(limit=1000, ttl=60.0, clock=lambda: now[0])
    b = pool.budget("x", 3)
    same = [_fam("a", 'a{i="1"} 1', 'a{i="2"} 1')]
    for t in (0.0, 50.0, 100.0, 150.0):  # unchanged series: marked seen as a whole each time
        now[0] = t
        assert len(_names(b.admit(same))) == 2
    now[0] = 160.0
    assert len(_names(b.admit([_fam("a", 'a{i="1"} 1', 'a{i="2"} 1', 'a{i="3"} 1')]))) == 3
    out = b.admit([_fam("a", 'a{i="1"} 1', 'a{i="2"} 1', 'a{i="4"} 1')])
    assert _names(out) == [b'a{i="1"}', b'a{i="2"}'] and b.refused_total == 1  # i=3 still counts
    now[0] = 300.0  # everything unseen for over the ttl: the current series are admitted, cap kept
    out = b.admit([_fam("a", *(f'a{{i="{i}"}} 1' for i in (5, 6, 7, 8)))])
    assert len(_names(out)) == 3 and len(b.known) == 3


def test_budget_memory_of_collections_is_bounded_by_the_ttl():
    now = [0.0]
    pool = SeriesPool(limit=1000, ttl=60.0, clock=lambda: now[0])
    b = pool.budget("x", 500)
    for t in range(1000):  # a series that changes every collection, one collection a second
        now[0] = float(t)
        assert len(_names(b.admit([_fam("a", 'a{i="1"} 1', f'a{{j="{t % 300}"}} 1')]))) == 2
        assert len(b._seen_at) <= 64 + 1 and len(b.known) <= 1 + 64 + 1
    assert b.refused_total == 0


def test_budget_overall_cap_and_whole_histograms():
    pool = SeriesPool(limit=5)
    first, second = pool.budget("one", 100), pool.budget("two", 100)
    first.admit([_fam("g", *(f'g{{i="{i}"}} 1' for i in range(3)))])
    hist = [f'h_bucket{{x="{x}",le="{le}"}} 1' for x in "ab" for le in ("1", "+Inf")]
    out = second.admit([_fam("h", *hist, kind="histogram")])
    # Two series of room: the first label set comes whole, the second is refused whole.
    assert _names(out) == [b'h_bucket{x="a",le="1"}', b'h_bucket{x="a",le="+Inf"}']
    assert second.refused_total == 2 and pool.known() == 5


async def test_a_churning_label_sheds_new_series_and_old_ones_flow(replay, aiohttp_client):
    pods = parse_podlist(replay.podlist)
    victim = next(k for k in sorted(pods) if pods[k].namespace == "kube-system")
    steady = next(k for k in sorted(pods) if k != victim and pods[k].namespace != victim[0])
    cfg = _config(replay, label_allowlist=["*"], source_series_limit=100_000)
    app = build_app(cfg)
    client = await aiohttp_client(app)
    await _ready(client)
    state = app[STATE]
    await client.get("/metrics")
    cadvisor = next(s for s in state.sources if s.name == "cadvisor")
    base = len(cadvisor.series.known)
    cadvisor.series.limit = base + 10  # a tight budget over what this node has now
    cpu = rb'^container_cpu_usage_seconds_total\{[^\n]*pod="%s"[^\n]*'
    victim_re, steady_re = (re.compile(cpu % k[1].encode(), re.M) for k in (victim, steady))
    refused = []
    for turn in range(4):
        syncs = state.index.syncs
        replay.update_pod(*victim, lambda item, t=turn: item["metadata"].setdefault("labels", {})
                          .__setitem__("churn", f"v{t}"))
        async with asyncio.timeout(WAIT):
            while state.index.syncs < syncs + 2:  # a sync that saw the change has completed
                await asyncio.sleep(0.02)
        body = await (await client.get("/metrics")).read()
        assert steady_re.search(body), "a known series stopped flowing"
        assert len(cadvisor.series.known) <= cadvisor.series.limit
        m = re.search(rb'kubebridge_series_refused_total\{collector="cadvisor",cluster="mem"\} (\d+)', body)
        assert m is not None
        refused.append(int(m.group(1)))
        if turn:
            assert not any(b'label_churn="v%d"' % turn in ln for ln in victim_re.findall(body))
    assert refused[-1] > refused[0] > 0
    limit = f'kubebridge_series_limit{{collector="cadvisor",cluster="mem"}} {base + 10}'
    assert limit in await (await client.get("/metrics")).text()
    page = await (await client.get("/")).text()
    assert re.search(r"cadvisor: [0-9,]+ of [0-9,]+ series, [1-9][0-9,]* refused", page)


# ---- /pods off the event loop ---------------------------------------------------------------

def _big_podlist(count: int) -> bytes:
    doc = json.loads(PODS.read_bytes())
    items = doc["items"]
    out = []
    for i in range(count):
        item = json.loads(json.dumps(items[i % len(items)]))
        item["metadata"]["name"] = f"{item['metadata']['name']}-{i}"
        out.append(item)
    return json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": out},
                      indent=1).encode()


def test_streamed_podlist_equals_the_whole_parse():
    body = _big_podlist(300)
    assert len(body) > INLINE_BYTES
    assert parse_podlist_stream(body) == parse_podlist(json.loads(body))
    def outcome(parse, body: bytes) -> object:
        try:
            return parse(body)
        except ValueError as exc:  # (ParseError is one: a structurally invalid /pods)
            return type(exc)
    for odd in (b'{"items": []}', b' {"a": {"items": [1]}, "items": [{"metadata": {"name": "p"}}, 3]} ',
                b'{"items": "x"}', b'{"items": [{"metadata": {"name": "a"}}], "items": []}'):
        assert outcome(parse_podlist_stream, odd) == outcome(lambda b: parse_podlist(json.loads(b)), odd), odd
    for bad in (b'{"items": [1,]}', b'{"items": [] "x": 1}', b'{"items": []} x', b'{"items": [{]}'):
        with pytest.raises(ValueError):
            parse_podlist_stream(bad)


async def test_large_podlist_is_parsed_while_the_loop_runs():
    body = _big_podlist(1500)
    ticks, done = 0, False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)
    t = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    start = ticks
    got = await parse_podlist_bytes(body)
    done = True
    await t
    assert len(got) == 1500
    assert ticks - start >= 2  # the event loop kept turning while the pods were parsed


def test_limits_fit_the_shipped_manifests():
    """The defaults are the ones docs/performance.md derives the memory limit from."""
    cfg = config_mod.parse({}, env={})
    assert cfg.max_body_size == 24 << 20
    manifest = Path(__file__).parent.parent / "manifests/daemonset.yaml"
    limits = re.findall(r"memory: (\d+)Mi", manifest.read_text())
    assert limits and max(int(x) for x in limits) * (1 << 20) > 4 * cfg.max_body_size
