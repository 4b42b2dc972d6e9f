"""OpenMetrics output: stamped families' millisecond timestamps go out in seconds (others'
lines are copied as they are), a timestamp that is no int64 is left out, and a counter whose
OpenMetrics name another family holds goes out as `unknown`. Each encoding is checked with
prometheus_client's strict OpenMetrics parser, and a real Prometheus scrapes it."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as strict_parse

from exporter import expfmt
from exporter.expfmt import OPENMETRICS_TYPE, Family, encode_openmetrics
from exporter.merge import merge
from exporter.server import build_app
from tests.realprom import free_port, poll, prometheus, query, targets
from tests.test_e2e import exporter_config, ready, scrape


def strict(body: bytes) -> dict[str, tuple[str, list[tuple[str, object]]]]:
    """family name -> (type, [(sample name, timestamp)]); raises on anything OpenMetrics rejects."""
    return {f.name: (f.type, [(s.name, s.timestamp) for s in f.samples]) for f in strict_parse(body.decode())}


def lines(body: bytes) -> list[bytes]:
    return [ln for ln in body.split(b"\n") if ln and not ln.startswith(b"#")]


# ------------------------------------------------------------------------------ timestamps


def test_stamped_lines_go_out_in_seconds():
    fam = Family("g", "gauge", "G.", [b'g{a="1"} 1 1700000000123',
                                      b'g{a="} 2 3"} 2 -1500\ng 3 1700000000000\ng{a="x y"} 4',
                                      b"g{a=\"z\"} 5 -1"], stamped=True)
    body = encode_openmetrics([fam])
    assert lines(body) == [b'g{a="1"} 1 1700000000.123', b'g{a="} 2 3"} 2 -1.500', b"g 3 1700000000.000",
                           b'g{a="x y"} 4', b'g{a="z"} 5 -0.001']
    (_, samples), = strict(body).values()  # (its Timestamp drops the sign of -0.001: not compared)
    assert [ts and (ts.sec, ts.nsec) for _, ts in samples][:4] == [
        (1700000000, 123000000), (-1, -500000000), (1700000000, 0), None]


def test_unstamped_lines_are_copied_as_they_are(monkeypatch):
    # No Python per line for them: the converter is never called, blocks go out as they are.
    def never(line: bytes) -> bytes:
        raise AssertionError("an unstamped family's line was converted")
    monkeypatch.setattr(expfmt, "_om_line", never)
    block = b'g{a="1"} 1\ng{a="2"} 2'
    hist = [b'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2', b"h_sum 3", b"h_count 2"]
    body = encode_openmetrics([Family("g", "gauge", None, [block]), Family("h", "histogram", None, hist)])
    assert body == b"\n".join([b"# TYPE g gauge", block, b"# TYPE h histogram", *hist, b"# EOF\n"])


@pytest.mark.parametrize("ts,out", [
    (b"9223372036854775807", b" 9223372036854775.807"),    # int64's bounds are kept
    (b"-9223372036854775808", b" -9223372036854775.808"),
    (b"9223372036854775808", b""),                         # beyond them the timestamp is left out
    (b"-9223372036854775809", b""),
    (b"1" * 30, b""),
    (b"9" * 5000, b""),                                    # more digits than int() converts
    (b"12a", b""),
    (b"+17", b""),
    (b"1_000", b"")])
def test_timestamp_outside_int64_is_left_out(ts, out):
    fam = Family("g", "gauge", None, [b'g{a="1"} 1 ' + ts, b"g 2 " + ts], stamped=True)
    body = encode_openmetrics([fam])
    assert lines(body) == [b'g{a="1"} 1' + out, b"g 2" + out]
    strict(body)


def test_merge_keeps_stamped():
    def fams(stamped: bool) -> list[Family]:
        return [Family("g", "gauge", None, [b"g 1 1700000000000"], stamped=stamped)]
    assert [f.stamped for f in merge([("a", fams(False)), ("b", fams(True))])[0]] == [True]
    assert [f.stamped for f in merge([("a", fams(True)), ("b", fams(False))])[0]] == [True]
    assert [f.stamped for f in merge([("a", fams(False)), ("b", fams(False))])[0]] == [False]


async def test_server_converts_the_timestamps_of_sources_that_keep_them(replay, aiohttp_client):
    # cAdvisor's capture carries millisecond timestamps: kept, they go out in seconds.
    cfg = exporter_config(replay, collectors={"cadvisor": {"keep_timestamps": True}})
    client = await aiohttp_client(build_app(cfg))
    await ready(client)
    cpu = re.compile(rb'container_cpu_usage_seconds_total\{.*\} \S+ (\S+)\Z')
    text = [m[1] for m in map(cpu.match, lines(await scrape(client))) if m]
    om = [m[1] for m in map(cpu.match, lines(await scrape(client, Accept=OPENMETRICS_TYPE))) if m]
    assert text and len(om) == len(text)
    assert all(re.fullmatch(rb"1[0-9]{12}", ts) for ts in text), text[:3]
    assert om == [b"%d.%03d" % divmod(int(ts), 1000) for ts in text]


@pytest.mark.parametrize("keep", [False, True])
def test_cli_transform_openmetrics_converts_kept_timestamps(tmp_path, keep):
    payload = tmp_path / "metrics.txt"
    payload.write_bytes(b"# TYPE up_seconds gauge\nup_seconds 5 1700000000123\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"collectors:\n  kubelet:\n    keep_timestamps: {str(keep).lower()}\n")
    out = subprocess.run([sys.executable, "-m", "exporter", "transform", "--source", "kubelet",
                          "--openmetrics", "--config", str(config), str(payload)],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert lines(out.stdout) == [b'up_seconds{collector="kubelet"} 5' + (b" 1700000000.123" if keep else b"")]


async def test_server_openmetrics_passes_the_strict_parser(replay, aiohttp_client):
    cfg = exporter_config(replay, collectors={"cadvisor": {"keep_timestamps": True},
                                              "resource": {"enabled": True}})
    client = await aiohttp_client(build_app(cfg))
    await ready(client)
    fams = strict(await scrape(client, Accept=OPENMETRICS_TYPE))
    assert fams["container_cpu_usage_seconds"][0] == "counter"


# ------------------------------------------------------------------------------ name clashes


CLASHES = {
    "gauge next to counter _total": (
        [Family("go_memstats_alloc_bytes", "gauge", "Bytes allocated and in use.",
                [b"go_memstats_alloc_bytes 1"]),
         Family("go_memstats_alloc_bytes_total", "counter", "Bytes allocated.",
                [b"go_memstats_alloc_bytes_total 2"])],
        {"go_memstats_alloc_bytes": "gauge", "go_memstats_alloc_bytes_total": "unknown"}),
    "histogram _count series": (
        [Family("h", "histogram", None, [b'h_bucket{le="+Inf"} 1', b"h_sum 1", b"h_count 1"]),
         Family("h_count_total", "counter", None, [b"h_count_total 3"])],
        {"h": "histogram", "h_count_total": "unknown"}),
    "summary _sum series": (
        [Family("s", "summary", None, [b's{quantile="0.5"} 1', b"s_sum 1", b"s_count 1"]),
         Family("s_sum_total", "counter", None, [b"s_sum_total 3"])],
        {"s": "summary", "s_sum_total": "unknown"}),
    "histogram named as the counter": (
        [Family("x", "histogram", None, [b'x_bucket{le="+Inf"} 1', b"x_sum 1", b"x_count 1"]),
         Family("x_total", "counter", None, [b"x_total 3"])],
        {"x": "histogram", "x_total": "unknown"}),
    "the counter's _created as a gauge": (
        [Family("req_created", "gauge", None, [b"req_created 1700000000"]),
         Family("req_total", "counter", None, [b"req_total 4"])],
        {"req_created": "gauge", "req_total": "unknown"}),
    "counter of counter _total": (
        [Family("a_total", "counter", None, [b"a_total 1"]),
         Family("a_total_total", "counter", None, [b"a_total_total 2"])],
        {"a": "counter", "a_total_total": "unknown"}),
    "no clash": (
        [Family("c_bytes", "gauge", None, [b"c_bytes 1"]),
         Family("c_total", "counter", None, [b"c_total 2"]),
         Family("d", "histogram", None, [])],  # empty: not in the output, so no clash
        {"c_bytes": "gauge", "c": "counter"}),
}


@pytest.mark.parametrize("case", sorted(CLASHES))
@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_counter_clashing_with_another_name_goes_out_unknown(case, order):
    fams, want = CLASHES[case]
    fams = fams if order == "sorted" else fams[::-1]
    got = strict(encode_openmetrics(fams))
    assert {name: kind for name, (kind, _) in got.items()} == want
    if case != "no clash":  # each family named on its own, as before, is what the parser rejects
        naive = [ln for f in fams if f.lines
                 for ln in (b"# TYPE %s %s" % tuple(x.encode() for x in expfmt._om_family(f)), *f.lines)]
        with pytest.raises(ValueError, match="Clashing name|metadata after samples"):
            strict(b"\n".join([*naive, b"# EOF\n"]))


# ------------------------------------------------------------------------------ a real Prometheus


@contextmanager
def serve(body: bytes) -> Iterator[str]:
    """A tiny server on loopback answering /metrics with `body` as OpenMetrics."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": OPENMETRICS_TYPE})

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def value(url: str, promql: str, at: float | None = None) -> float | None:
    res = query(url, promql, at)
    assert len(res) <= 1, res
    return float(res[0]["value"][1]) if res else None


def test_real_prometheus_stores_stamped_samples_at_their_time(tmp_path):
    now = int(time.time())
    ts_ms = (now - 120) * 1000 + 123  # two minutes ago (inside the head's window), with milliseconds
    families, _ = merge([("src", [
        Family("kb_stamped", "gauge", "A sample with its upstream timestamp.",
               [b'kb_stamped{a="1"} 42 %d' % ts_ms], stamped=True),
        *(f for fams, _ in CLASHES.values() for f in fams)])])
    body = encode_openmetrics(families)
    assert b'kb_stamped{a="1"} 42 %d.123\n' % (now - 120) in body
    strict(body)
    with serve(body) as target, prometheus(tmp_path, [target]) as url:
        assert poll(url, 'up{job="kubebridge"} == 1')
        (tgt,) = targets(url)
        assert tgt["health"] == "up" and tgt["lastError"] == "", tgt
        at = ts_ms / 1000
        deadline = time.monotonic() + 30
        while value(url, "kb_stamped", at) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert value(url, "kb_stamped", at) == 42
        assert value(url, "kb_stamped", at - 0.001) is None  # nothing before its timestamp
        assert value(url, "timestamp(kb_stamped)", at + 30) == at
        # The clashing counters, stored under their full names, next to the families they met.
        for name, want in (("go_memstats_alloc_bytes", 1), ("go_memstats_alloc_bytes_total", 2),
                           ("h_count", 1), ("h_count_total", 3), ("req_total", 4), ("a_total_total", 2)):
            assert value(url, name) == want, name
