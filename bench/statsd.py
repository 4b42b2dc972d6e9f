"""The statsd listener under a flood: samples per second, loss, and RSS at 100k live series.

One sender process (the `datadog` package's DogStatsD client, as applications use it) floods
the listener for `--duration` seconds (default 30) in each mode:

- buffered: the client's default buffering (`disable_buffering=False`: lines packed into
  datagrams of up to 1432 bytes, UDP's safe payload), about 25-30 samples per datagram;
- single: one sample per datagram (`disable_buffering=True`, the client's constructor default).

and with two senders: `datadog`, the client formatting and sending every sample (a Python app
flooding: on a 2-core box the sender itself is the bottleneck), and `replay`, the datagrams
the client sent for 10,000 samples, recorded once and sent again at the target rate (100k/s
buffered, 25k/s single; `--rate` overrides), so the listener is what is measured.
`recv/cpu-s` is samples per CPU second of the listener process (robust to a loaded machine).

The listener runs in this process exactly as in the node agent (`exporter.statsd`: the UDP
receiver thread, parser, mapper, store), with telemetry off in the client so every received
sample is one the sender counted. A sender that outruns the listener loses datagrams: loss is
1 - received / sent, with the kernel's drop count for the socket (/proc/net/udp) alongside.
`--rate` paces the sender (samples/s) instead of flooding. The series mix: 100 series (a
counter, a gauge, a timer and a histogram, over 25 tag values).

Then 100,000 live series are created (distinct tag values, 20 lines per datagram) and the
process RSS is reported, with the time one scrape's encode takes.

    python -m bench.statsd                     # both modes, 30 s each, then RSS; a table
    python -m bench.statsd --duration 5 --json # shorter, one JSON object on stdout
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"buffered": 100_000, "single": 25_000}   # samples/s, each with loss < 0.1 %
MAX_LOSS = 0.001
LIVE_SERIES = 100_000


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _listener(max_series: int = 200_000):  # type: ignore[no-untyped-def]
    from exporter.statsd.ingest import Ingest, Policy
    from exporter.statsd.listener import Listener, Sockets
    from exporter.statsd.mapping import DEFAULT_BUCKETS, Mapper
    from exporter.statsd.origin import Resolver
    from exporter.statsd.store import Limits, Store

    store = Store(Limits(max_series=max_series, max_series_per_pod=max_series))
    ingest = Ingest(store, Mapper(), Resolver(None), Policy(buckets=DEFAULT_BUCKETS))
    listener = Listener(ingest, Sockets(udp="127.0.0.1:0", receive_buffer=8 << 20))
    listener.start()
    return listener


def _received(listener) -> int:  # type: ignore[no-untyped-def]
    with listener.ingest.store.lock:
        return sum(listener.ingest.stats.samples.values())


def _drain(listener, deadline: float = 30.0) -> int:  # type: ignore[no-untyped-def]
    """Samples received once the socket is quiet (no change for 0.5 s)."""
    end = time.monotonic() + deadline
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        got = _received(listener)
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        time.sleep(0.05)
    return last


def run_mode(mode: str, client: str, duration: float, rate: float) -> dict[str, Any]:
    """One sender subprocess flooding (or paced at `rate`) for `duration` seconds."""
    listener = _listener()
    try:
        cmd = [sys.executable, "-m", "bench.statsd", "--sender", mode, "--client", client,
               "--port", str(listener.udp_port), "--duration", str(duration), "--rate", str(rate)]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        cpu0 = time.process_time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode())
        sender = json.loads(proc.stdout)
        received = _drain(listener)
        cpu = time.process_time() - cpu0
        with listener.ingest.store.lock:
            packets = sum(listener.ingest.stats.packets.values())
            errors = sum(listener.ingest.stats.parse_errors.values())
        drops = listener.udp_drops() or 0
    finally:
        listener.stop()
    sent = sender["samples"]
    return {"mode": mode, "client": client, "rate": rate, "seconds": sender["seconds"], "sent": sent,
            "received": received,
            "samples_per_s": round(received / sender["seconds"]),
            "sent_per_s": round(sent / sender["seconds"]),
            "loss": round(1 - received / sent, 6) if sent else 0.0, "kernel_drops": drops,
            "datagrams": packets, "samples_per_datagram": round(received / packets, 1) if packets else 0,
            "parse_errors": errors, "listener_cpu_s": round(cpu, 1),
            "samples_per_cpu_s": round(received / cpu) if cpu else 0,
            "target_per_s": TARGETS[mode]}


_TAGS = [[f"endpoint:e{i}", "env:bench"] for i in range(25)]


def _round(client) -> int:  # type: ignore[no-untyped-def]
    """100 samples: one of each series, as an app's code calls the client."""
    for i, t in enumerate(_TAGS):
        client.increment("bench.requests", tags=t)
        client.gauge("bench.inflight", i % 7, tags=t)
        client.timing("bench.latency", 12.5 + i, tags=t)
        client.histogram("bench.size", 512, tags=t)
    return 100


def _client(mode: str, port: int):  # type: ignore[no-untyped-def]
    from datadog.dogstatsd import DogStatsd

    return DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True, origin_detection_enabled=False,
                     disable_buffering=(mode == "single"))


def _recorded(mode: str, rounds: int = 100) -> list[tuple[bytes, int]]:
    """The datagrams the DogStatsD client sends for `rounds` rounds, with their sample counts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cap:
        cap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        cap.bind(("127.0.0.1", 0))
        client = _client(mode, cap.getsockname()[1])
        for _ in range(rounds):
            _round(client)
        client.flush()
        client.close_socket()
        out = []
        cap.settimeout(0.5)
        try:
            while True:
                data = cap.recv(65535)
                out.append((data, sum(1 for line in data.split(b"\n") if line)))
        except TimeoutError:
            pass
    return out


def sender(mode: str, client_kind: str, port: int, duration: float, rate: float) -> None:
    """The flooding app (or paced at `rate` samples/s): prints {"samples": n, "seconds": s}.
    `datadog`: the client formats and sends every sample; `replay`: the datagrams it sent for
    10,000 samples are recorded once and sent again and again (the listener sees the same
    bytes; the sender is no longer the bottleneck)."""
    n = 0
    start = time.perf_counter()
    end = start + duration
    if client_kind == "datadog":
        client = _client(mode, port)
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if rate and n > (now - start) * rate:
                time.sleep(0.0005)
                continue
            n += _round(client)
        client.flush()
        client.close_socket()
    else:
        recorded = _recorded(mode)
        start = time.perf_counter()
        end = start + duration
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.connect(("127.0.0.1", port))
            send = out.send
            i, count = 0, len(recorded)
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                if rate and n > (now - start) * rate:
                    time.sleep(0.0005)
                    continue
                for _ in range(64):
                    data, k = recorded[i]
                    i = (i + 1) % count
                    try:
                        send(data)
                    except OSError:  # ECONNREFUSED from an earlier ICMP; the datagram was sent
                        pass
                    n += k
    seconds = time.perf_counter() - start
    print(json.dumps({"samples": n, "seconds": seconds}))


def live_series(count: int = LIVE_SERIES) -> dict[str, Any]:
    """RSS with `count` live series (counters, distinct tag values), and one encode's time."""
    from exporter.labels import CommonLabels

    base = _rss()
    listener = _listener(max_series=count)
    try:
        before = _rss()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            for i in range(0, count, 20):
                s.sendto(b"\n".join(b"bench.series:1|c|#id:%d,env:bench" % j for j in range(i, i + 20)),
                         ("127.0.0.1", listener.udp_port))
                if i % 2000 == 0:
                    while _received(listener) < i - 20000:  # stay within the socket buffer
                        time.sleep(0.001)
        while len(listener.ingest.store) < count and _drain(listener, 5.0) < count:
            pass
        live = len(listener.ingest.store)
        after = _rss()
        t0 = time.perf_counter()
        fams, out, _ = listener.ingest.store.encode(CommonLabels("statsd", "bench", "node-1"), None,
                                                    time.monotonic())
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        listener.ingest.store.encode(CommonLabels("statsd", "bench", "node-1"), None, time.monotonic())
        again = time.perf_counter() - t0
        peak = _rss()
    finally:
        listener.stop()
    return {"live_series": live, "rss_bytes": after, "rss_before_bytes": before, "rss_python_bytes": base,
            "bytes_per_series": round((after - before) / max(live, 1)), "rss_after_encode_bytes": peak,
            "encode_first_ms": round(first * 1000), "encode_ms": round(again * 1000), "series_out": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.statsd", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per mode (default 30)")
    p.add_argument("--rate", type=float, default=0.0, help="pace the sender at N samples/s (0: flood)")
    p.add_argument("--mode", choices=("buffered", "single", "both"), default="both")
    p.add_argument("--client", choices=("datadog", "replay", "both"), default="both",
                   help="datadog: the client sends every sample; replay: its recorded datagrams, "
                        "paced at the target rate unless --rate is given")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--no-rss", action="store_true", help="skip the 100k-series RSS measurement")
    p.add_argument("--sender", choices=("buffered", "single"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sender:
        sender(args.sender, args.client, args.port, args.duration, args.rate)
        return 0
    modes = ("buffered", "single") if args.mode == "both" else (args.mode,)
    clients = ("datadog", "replay") if args.client == "both" else (args.client,)
    # replay is paced 2 % above the target (the pacer's sleeps only ever fall short of it)
    runs = [(m, c, args.rate or (TARGETS[m] * 1.02 if c == "replay" else 0.0))
            for c in clients for m in modes]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "duration": args.duration, "load_before": os.getloadavg()[0],
                              "modes": [run_mode(m, c, args.duration, r) for m, c, r in runs]}
    if not args.no_rss:
        report["memory"] = live_series()
    for m in report["modes"]:
        m["meets_target"] = m["samples_per_s"] >= m["target_per_s"] and m["loss"] < MAX_LOSS
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['cpus']} CPUs, Python {report['python']}, {args.duration:.0f} s per run, "
          f"load average {report['load_before']:.1f} before")
    print(f"{'mode':<9} {'sender':<14} {'sent/s':>9} {'recv/s':>9} {'loss':>8} {'drops':>7} "
          f"{'/dgram':>6} {'recv/cpu-s':>10} {'target':>7}")
    for m in report["modes"]:
        sender_desc = m["client"] + (f"@{m['rate'] / 1000:.0f}k" if m["rate"] else " flood")
        print(f"{m['mode']:<9} {sender_desc:<14} {m['sent_per_s']:>9,} {m['samples_per_s']:>9,} "
              f"{m['loss']:>8.3%} {m['kernel_drops']:>7,} {m['samples_per_datagram']:>6} "
              f"{m['samples_per_cpu_s']:>10,} {'met' if m['meets_target'] else 'MISSED':>7}")
    if "memory" in report:
        mem = report["memory"]
        print(f"RSS at {mem['live_series']:,} live series: {mem['rss_bytes'] / 2**20:.0f} MiB "
              f"({mem['bytes_per_series']} B/series over {mem['rss_before_bytes'] / 2**20:.0f} MiB), "
              f"encode {mem['encode_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
