"""The fault matrix (issue 13): every bad-day mode of an upstream x every upstream kind.

For each mode (tests/faults.py MODES) and kind (the kubelet's Prometheus passthrough `cadvisor`,
its JSON `stats_summary`, its `/pods` behind the pod index, the API server's `apiserver`), with
the other upstreams and paths answering well:
- `/metrics` answers within the scrape budget (X-Prometheus-Scrape-Timeout-Seconds);
- only that source reads down, with the reason the mode reads as (README "Bad days"); a failed
  `/pods` refresh keeps the last good pod index, and every source stays up;
- the output passes `promtool check metrics`;
- the process's RSS grows by less than RSS_BUDGET while the fault is served;
- the failure is logged once per source, without a traceback; the landing page shows it.
The `events` source (list+watch through kubernetes-asyncio) gets the same faults on its list.
Bodies are capped at CAP here (the shipped default is far larger) so that "huge" stays small.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import config as config_mod
from exporter.replay import paths
from exporter.server import STATE, build_app
from tests.faults import CA_FILE, MODES, FaultyUpstream, Page, gzip_bomb

CAP = 4 << 20  # bytes: the body cap in these tests
RSS_BUDGET = 32 << 20  # bytes the process may grow by while one fault is served (8x CAP)
# Seconds: the scrape timeout Prometheus announces (the budget is 0.5 s less). Short where the
# fault makes a source wait out the budget; long elsewhere, where every source answers at once
# (so that a loaded CI machine does not read as a timeout).
HEADER = {"hang": 2.5, "hang_body": 2.5, "drip": 2.5}
HEADER_DEFAULT = 5.0
SLACK = 1.5  # seconds allowed past it for a loaded CI machine (2 cores, 8 test runs)
POD_REFRESH = {"pods": "0.3s"}  # the /pods kind refreshes often; the others hardly
PROMTOOL = shutil.which("promtool")
NODE = "datagen-1-35"


@dataclass(frozen=True)
class Kind:
    """An upstream kind: which fake serves it, the path faulted, the source that reads it."""

    upstream: str  # "kubelet" or "apiserver"
    path: str
    source: str  # "" for /pods: the pod index


KINDS = {
    "cadvisor": Kind("kubelet", "/metrics/cadvisor", "cadvisor"),
    "stats_summary": Kind("kubelet", "/stats/summary", "stats_summary"),
    "pods": Kind("kubelet", "/pods", ""),
    "apiserver": Kind("apiserver", "/metrics", "apiserver"),
}
# What each mode reads as (None: it is no failure at all).
REASON = {
    "empty": "parse", "garbage": "parse", "huge": "http_status", "hang": "timeout",
    "hang_body": "timeout", "drip": "timeout", "reset": "connect", "chunked_error": "connect",
    "gzip_bomb": "http_status", "wrong_content_type": "parse", "wrong_json_types": "parse",
    "redirect": "http_status", "unauthorized_rotated": None, "forbidden": "not_permitted",
    "error_500": "http_status", "tls": "connect",
}
SOURCES = ("apiserver", "cadvisor", "pods", "stats_summary")


def _data(name: str) -> bytes:
    return paths.data_file(name).read_bytes()


def kubelet_pages() -> dict[str, Page]:
    lines = _data("nri-k8s-1.35-kubelet-metrics-cadvisor.txt").splitlines(True)
    cadvisor = b"".join(lines[:3] + lines[285:345])  # version_info, cpu_usage_seconds_total (15 KB)
    return {"/metrics/cadvisor": Page(cadvisor, "text/plain; version=0.0.4; charset=utf-8"),
            "/stats/summary": Page(_data("nri-k8s-1.35-kubelet-stats-summary.json"), "application/json"),
            "/pods": Page(_data("nri-k8s-1.35-kubelet-pods.json"), "application/json")}


def apiserver_pages() -> dict[str, Page]:
    return {"/metrics": Page(_data("dd-apiserver-1.27.3-metrics-slis.txt"),
                             "text/plain; version=0.0.4; charset=utf-8")}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class RssPeak:
    """The process's peak RSS over a block, sampled every 5 ms."""

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels...}` (labels in any order, others allowed)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def promtool_check(body: bytes) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool not installed (scripts/test installs Debian's prometheus)")
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert out.returncode in (0, 3), out.stderr.decode()[:2000]  # 3: lint remarks only


@dataclass
class Bench:
    """The fakes and the exporter of one case."""

    kubelet: FaultyUpstream
    apiserver: FaultyUpstream
    elsewhere: FaultyUpstream  # where redirects point: must never be asked
    kubelet_token: Path
    api_token: Path
    client: object
    header: float = HEADER_DEFAULT

    def fake(self, kind: Kind) -> FaultyUpstream:
        return self.kubelet if kind.upstream == "kubelet" else self.apiserver

    def token_file(self, kind: Kind) -> Path:
        return self.kubelet_token if kind.upstream == "kubelet" else self.api_token

    async def scrape(self) -> tuple[str, float, bytes]:
        started = time.monotonic()
        resp = await self.client.get(  # type: ignore[attr-defined]
            "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": str(self.header)})
        body = await resp.read()
        assert resp.status == 200
        return body.decode(), time.monotonic() - started, body


@pytest.fixture
async def bench_for(tmp_path, aiohttp_client):
    made: list[FaultyUpstream] = []

    async def make(tls_broken: str = "", refresh: str = "10s") -> Bench:
        ktok, atok = tmp_path / "kubelet-token", tmp_path / "api-token"
        ktok.write_text("k-" + secrets.token_hex(8))
        atok.write_text("a-" + secrets.token_hex(8))
        elsewhere = await FaultyUpstream({**kubelet_pages(), **apiserver_pages()}).start()
        kubelet = await FaultyUpstream(kubelet_pages(), token=ktok.read_text(), redirect_to=elsewhere.url,
                                       huge=4 * CAP, tls_broken=tls_broken == "kubelet").start()
        api = await FaultyUpstream(apiserver_pages(), token=atok.read_text(), redirect_to=elsewhere.url,
                                   huge=4 * CAP, tls_broken=tls_broken == "apiserver").start()
        made.extend((elsewhere, kubelet, api))
        cfg = config_mod.parse({
            "cluster": "faults", "node_name": NODE, "pod_refresh_interval": refresh,
            "max_body_size": CAP,  # small, so that "huge" and the gzip bomb are refused after a few MiB
            "kubelet": {"url": kubelet.url, "token_file": str(ktok), "ca_file": str(CA_FILE)},
            "collectors": {
                "kubelet": {"enabled": False}, "probes": {"enabled": False}, "healthz": {"enabled": False},
                "apiserver": {"enabled": True, "health_endpoints": [], "componentstatuses": False,
                              "endpoint": {"url": api.url, "token_file": str(atok), "ca_file": str(CA_FILE)}},
            }}, env={})
        client = await aiohttp_client(build_app(cfg))
        return Bench(kubelet, api, elsewhere, ktok, atok, client)

    yield make
    for fake in made:
        await fake.stop()


async def wait_ready(bench: Bench) -> None:
    for _ in range(500):
        if (await bench.client.get("/readyz")).status == 200:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the pod index never synced")


def expected(kind: Kind, mode: str) -> dict[str, tuple[str, str]]:
    """source -> (status, reason) this case must read as."""
    out = {s: ("ok", "") for s in SOURCES}
    reason = REASON[mode]
    if reason is None:
        return out
    status = "not_permitted" if reason == "not_permitted" else "down"
    if mode == "tls":  # a certificate is refused for the whole upstream, from the start
        if kind.upstream == "apiserver":
            out["apiserver"] = (status, reason)
        else:
            out.update(cadvisor=(status, reason), stats_summary=(status, reason),
                       pods=("no_data", ""))  # (the pod index never synced)
        return out
    if kind.source:
        out[kind.source] = (status, reason)
    return out


def check_sources(text: str, want: dict[str, tuple[str, str]]) -> None:
    for source, (status, reason) in want.items():
        got = value(text, "kubebridge_source_status", collector=source, status=status)
        assert got == 1, f"{source}: expected {status}, got\n" + "\n".join(
            ln for ln in text.splitlines() if ln.startswith("kubebridge_source_status") and ln.endswith(" 1")
            or ln.startswith("kubebridge_scrape_errors_total"))
        assert value(text, "kubebridge_up", collector=source) == (1 if status == "ok" else 0)
        if reason:
            errors = value(text, "kubebridge_scrape_errors_total", collector=source, reason=reason)
            assert (errors or 0) >= 1, f"{source}: no error counted as {reason}"


def assert_logged_once_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Expected failures: no traceback, and one line per failing source (or the pod index),
    however many scrapes or refreshes failed."""
    ours = [r for r in caplog.records if r.name.startswith("kubebridge") and r.levelno >= logging.WARNING]
    assert not [r for r in ours if r.exc_info], [r.getMessage() for r in ours if r.exc_info]
    who = [r.getMessage().split(":", 1)[0] for r in ours]
    assert len(who) == len(set(who)), who


@pytest.mark.parametrize("kind_name", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
async def test_fault_matrix(mode: str, kind_name: str, bench_for, caplog):
    caplog.set_level(logging.INFO, logger="kubebridge")
    kind = KINDS[kind_name]
    if mode == "gzip_bomb":
        gzip_bomb()  # (built once, before any RSS is measured)
    bench: Bench = await bench_for(tls_broken=kind.upstream if mode == "tls" else "",
                                   refresh=POD_REFRESH.get(kind_name, "10s"))
    want = expected(kind, mode)
    pods_before = None
    if not (mode == "tls" and kind.upstream == "kubelet"):
        await wait_ready(bench)
    if mode != "tls":
        text, _, _ = await bench.scrape()
        check_sources(text, {s: ("ok", "") for s in SOURCES})  # a good day first
        pods_before = value(text, "kubebridge_pod_index_pods")
    fake = bench.fake(kind)
    bench.header = HEADER.get(mode, HEADER_DEFAULT)
    if mode == "unauthorized_rotated":  # the upstream now refuses the old token (everywhere)
        fake.token = "rotated-" + secrets.token_hex(12)  # (a new length: a new file stamp)
        bench.token_file(kind).write_text(fake.token)
    elif mode != "tls":
        fake.faults[kind.path] = mode

    async with RssPeak() as mem:
        if kind.source or mode == "tls":
            text, took, body = await bench.scrape()
            assert took < bench.header + SLACK, f"/metrics took {took:.2f}s"
        else:
            text, body = await pods_fault(bench, mode, pods_before)
    assert mem.growth < RSS_BUDGET, f"RSS grew by {mem.growth >> 20} MiB"
    check_sources(text, want)
    promtool_check(body)
    assert bench.elsewhere.requests == []  # no redirect was followed, no token went elsewhere
    assert_logged_once_without_traceback(caplog)
    page = await (await bench.client.get("/")).text()  # type: ignore[attr-defined]
    for source, (status, reason) in want.items():
        row = re.search(rf'<tr class="source" data-collector="{source}">(.*?)</tr>', page)
        assert row is not None, source
        assert f'<td class="status {status}">{status}</td>' in row.group(1), (source, row.group(1))
        if reason not in ("", status):
            assert f'<td class="reason">{reason}</td>' in row.group(1), (source, row.group(1))


async def pods_fault(bench: Bench, mode: str, pods_before: float | None) -> tuple[str, bytes]:
    """Scrape while the pod index refreshes against the faulted /pods, until a refresh has
    failed (or, for a mode that is no failure, two refreshes succeeded); every scrape answers
    within its budget. A failed refresh keeps the last good listing: every source stays up."""
    reason = REASON[mode]
    index = bench.client.server.app[STATE].index  # type: ignore[attr-defined]
    syncs, before = index.syncs, dict(index.failures)
    deadline = time.monotonic() + 30
    while True:
        text, took, body = await bench.scrape()
        assert took < bench.header + SLACK, f"/metrics took {took:.2f}s"
        if reason is None and index.syncs >= syncs + 2:
            assert "not_permitted" not in index.failures  # the rotated token was read at once
            return text, body
        if reason is not None and index.failures.get(reason, 0) > before.get(reason, 0):
            text, took, body = await bench.scrape()  # (the scrape after the failed refresh)
            assert value(text, "kubebridge_pod_index_sync_failures_total", reason=reason)
            assert value(text, "kubebridge_pod_index_up") == 0 or index.up  # (unless refreshed since)
            assert value(text, "kubebridge_pod_index_pods") == pods_before  # the last good listing
            assert re.search(r'container_cpu_usage_seconds_total\{[^}]*workload="', text)  # still joined
            return text, body
        assert time.monotonic() < deadline, f"no /pods failure counted: {index.failures}"
        await asyncio.sleep(0.1)



# --- the events source: list+watch through kubernetes-asyncio -----------------------------------

EVENT_LIST = {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": []}
ODD_EVENTS = {**EVENT_LIST, "items": [{"metadata": {"uid": "u"}, "count": "many", "involvedObject": "x"}]}


@pytest.mark.parametrize("mode, reason", [
    ("empty", "parse"), ("garbage", "parse"), ("wrong_json_types", "parse"), ("odd_items", "parse"),
    ("wrong_content_type", "parse"), ("redirect", "http_status"), ("forbidden", "not_permitted"),
    ("error_500", "http_status"), ("reset", "connect"), ("tls", "connect")])
async def test_events_source_reads_down_with_its_reason(mode, reason, tmp_path):
    """The events collector (a background list+watch of the API server): a refused or
    unreadable list is that source's failure, with its reason, never `internal`."""
    import aiohttp

    from exporter.deps import Deps
    from exporter.registry import get
    from exporter.runner import Source

    token = tmp_path / "token"
    token.write_text("events-token")
    body = ODD_EVENTS if mode == "odd_items" else EVENT_LIST
    pages = {"/api/v1/events": Page(json.dumps(body).encode(), "application/json")}
    elsewhere = await FaultyUpstream(pages).start()
    api = await FaultyUpstream(pages, token="events-token", redirect_to=elsewhere.url,
                               tls_broken=mode == "tls").start()
    if mode not in ("tls", "odd_items"):
        api.faults["/api/v1/events"] = mode
    cfg = config_mod.parse({"collectors": {"events": {"enabled": True, "resolve_pods": False, "endpoint": {
        "url": api.url, "token_file": str(token), "ca_file": str(CA_FILE)}}}}, env={})
    task = None
    try:
        async with aiohttp.ClientSession() as session:
            c = get("events").factory(Deps(cfg, session, None), cfg.collectors["events"])
            c.backoff, c.watch_timeout = (0.05, 0.2), 30.0
            src = Source("events", c)
            task = asyncio.create_task(c.run())
            deadline = time.monotonic() + 20
            while (out := await src.collect(5.0)).status == "no_data":
                assert time.monotonic() < deadline, "the events list never failed"
                await asyncio.sleep(0.02)
        status = "not_permitted" if reason == "not_permitted" else "down"
        assert (out.status, out.reason) == (status, reason)
        assert elsewhere.requests == []
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await api.stop()
        await elsewhere.stop()
