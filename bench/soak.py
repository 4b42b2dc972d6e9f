"""Soak and concurrency: many scrapers against kubebridge running over the demo's replay cluster.

- The replay cluster (`exporter.replay.cluster.ReplayCluster`: the replay kubelet, apiserver,
  etcd and app pods, what `kubebridge demo` runs against) runs on loopback in its own process
  (`python -m bench.soak --serve-cluster DIR`), so the scrapers' work (this process) does not
  slow the upstreams down.
- kubebridge runs as its own process (`python -m exporter run --config FILE`) with the demo's
  configuration (every node and cluster collector), so its RSS is its own.
- **soak** (default): `--scrapers` (50) clients scrape `/metrics` back to back (gzip, with
  Prometheus' timeout header; bodies are inflated and checked) for `--duration` seconds (600)
  while pods churn: every `--churn` seconds (2) one pod is added and, past 5 added, the oldest
  added one removed. Reports p50/p99 latency, failures, and kubebridge's RSS at start (after
  the first scrape) and end, and its peak.
- **burst** (`--burst N`, repeatable): N scrapes at once, `--rounds` times (5); reports p99
  latency, errors and peak RSS (VmHWM) per N. A fresh kubebridge per N.
- `--node-agent` runs only what the DaemonSet runs by default (cadvisor, kubelet, probes,
  healthz, pods, stats_summary): the figures the DaemonSet's memory limit is derived from.
- `--pods N` scales the replay node to N pods (the capture cloned, as bench.node does): about
  420 pods make a cAdvisor body at the default 32 MiB body cap.

    python -m bench.soak                       # the 10-minute soak
    python -m bench.soak --duration 60         # a quick one
    python -m bench.soak --burst 50 --burst 200
    python -m bench.soak --burst 5 --rounds 1 --json    # the smoke test's run

Numbers are printed, never judged: the exit status does not depend on them.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.e2e import Processes, child_env, free_port, kubebridge_cmd, proc_status, wait_http

# The demo's collectors that the node agent (DaemonSet) does not run by default.
CLUSTER_ONLY = ("apiserver", "events", "kube_system", "etcd", "etcd_v2", "autodiscovery", "resource")
HEADERS = {"Accept-Encoding": "gzip", "X-Prometheus-Scrape-Timeout-Seconds": "10"}


@dataclass
class Scrapes:
    """Latencies of successful scrapes (seconds) and failures by kind."""

    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    checked: dict[bytes, bool] = field(default_factory=dict)  # digest of a raw body -> complete

    def complete(self, raw: bytes, gzipped: bool) -> bool:
        """Whether a body is a whole exposition; each distinct body is inflated once (50 real
        Prometheus servers inflate on their own machines, not in this process)."""
        key = hashlib.blake2b(raw, digest_size=16).digest()
        got = self.checked.get(key)
        if got is None:
            text = gzip.decompress(raw) if gzipped else raw
            got = self.checked[key] = b"kubebridge_up{" in text and text.endswith(b"\n")
        return got

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {"scrapes": len(lat), "failures": sum(self.failures.values()),
                "failure_kinds": dict(self.failures),
                "p50_s": round(_pct(lat, 0.50), 3), "p99_s": round(_pct(lat, 0.99), 3),
                "max_s": round(lat[-1], 3) if lat else 0.0}


def _pct(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def scrape(session: aiohttp.ClientSession, url: str, out: Scrapes) -> None:
    start = time.perf_counter()
    try:
        async with session.get(url, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=30),
                               auto_decompress=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                out.fail(f"http_{resp.status}")
                return
            if not out.complete(body, resp.headers.get("Content-Encoding") == "gzip"):
                out.fail("incomplete")
                return
    except (aiohttp.ClientError, TimeoutError, OSError, EOFError) as exc:
        out.fail(type(exc).__name__)
        return
    out.latencies.append(time.perf_counter() - start)


async def serve_cluster(tmp: Path, churn: float, pods: int) -> None:
    """The replay cluster until SIGTERM; its kubebridge config goes to tmp/cluster.json; with
    `churn` > 0 one pod is added every `churn` seconds (the oldest of 5 added removed)."""
    from exporter.replay.cluster import ReplayCluster
    token = tmp / "token"
    token.write_text(secrets.token_urlsafe(32))
    cluster = ReplayCluster(tmp, token)
    await cluster.start()
    if pods:
        cluster.kubelet.set_pods(pods)
    part = tmp / "cluster.json.part"
    part.write_text(json.dumps(cluster.exporter_config("127.0.0.1:0")))
    part.rename(tmp / "cluster.json")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    added: list[tuple[str, str]] = []
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), churn if churn > 0 else None)
        except TimeoutError:
            added.append(cluster.kubelet.add_pod())
            if len(added) > 5:
                cluster.kubelet.remove_pod(*added.pop(0))
    await cluster.stop()


class Bench:
    """The replay cluster's process, one kubebridge process at a time, and the clients."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Processes()
        self.config: dict[str, Any] = {}
        self.node_agent = False

    async def start_cluster(self, churn: float, pods: int) -> None:
        cmd = [sys.executable, "-m", "bench.soak", "--serve-cluster", str(self.tmp), "--churn", str(churn),
               "--pods", str(pods)]
        proc = self.procs.start(cmd, self.tmp / "cluster.log", env=child_env())
        done = self.tmp / "cluster.json"
        end = time.monotonic() + 120
        while not done.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the replay cluster did not start: see {self.tmp / 'cluster.log'}")
            await asyncio.sleep(0.1)
        self.config = json.loads(done.read_text())

    async def start_exporter(self, tag: str) -> tuple[subprocess.Popen, str]:
        listen = f"127.0.0.1:{free_port()}"
        cfg = self.tmp / f"kubebridge-{tag}.yaml"
        doc = {**self.config, "listen_address": listen}
        if self.node_agent:  # what the DaemonSet runs: the node collectors enabled by default
            doc["collectors"] = {**doc["collectors"], **{n: {"enabled": False} for n in CLUSTER_ONLY}}
        cfg.write_text(yaml.safe_dump(doc))
        proc = self.procs.start(kubebridge_cmd(cfg), self.tmp / f"kubebridge-{tag}.log", env=child_env())
        base = f"http://{listen}"
        await wait_http(base + "/readyz", proc)
        return proc, base + "/metrics"

    async def soak(self, duration: float, scrapers: int, churn: float) -> dict[str, Any]:
        proc, url = await self.start_exporter("soak")
        out = Scrapes()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await scrape(session, url, Scrapes())  # cold
            rss_start = proc_status(proc.pid).get("VmRSS", 0)
            end = time.monotonic() + duration

            async def scraper() -> None:
                while time.monotonic() < end:
                    await scrape(session, url, out)
            await asyncio.gather(*(scraper() for _ in range(scrapers)))
        st = proc_status(proc.pid)
        self.procs.stop(proc)
        return {"mode": "soak", "duration_s": duration, "scrapers": scrapers, "churn_s": churn,
                **out.summary(), "rss_start_mib": _mib(rss_start), "rss_end_mib": _mib(st.get("VmRSS", 0)),
                "rss_peak_mib": _mib(st.get("VmHWM", 0))}

    async def burst(self, n: int, rounds: int) -> dict[str, Any]:
        proc, url = await self.start_exporter(f"burst{n}")
        out = Scrapes()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await scrape(session, url, Scrapes())  # cold
            rss_start = proc_status(proc.pid).get("VmRSS", 0)
            for _ in range(rounds):
                await asyncio.gather(*(scrape(session, url, out) for _ in range(n)))
        st = proc_status(proc.pid)
        self.procs.stop(proc)
        return {"mode": "burst", "concurrent": n, "rounds": rounds, **out.summary(),
                "rss_start_mib": _mib(rss_start), "rss_peak_mib": _mib(st.get("VmHWM", 0))}


def _mib(b: int) -> float:
    return round(b / (1 << 20), 1)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="kubebridge-soak-") as tmp:
        bench = Bench(Path(tmp))
        bench.node_agent = args.node_agent
        try:
            await bench.start_cluster(0.0 if args.burst else args.churn, args.pods)
            if args.burst:
                return [await bench.burst(n, args.rounds) for n in args.burst]
            return [await bench.soak(args.duration, args.scrapers, args.churn)]
        finally:
            bench.procs.stop_all()


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        what = (f"soak {r['duration_s']:.0f} s, {r['scrapers']} scrapers, a pod change every {r['churn_s']} s"
                if r["mode"] == "soak" else f"{r['concurrent']} concurrent x {r['rounds']}")
        end = f", RSS end {r['rss_end_mib']} MiB" if "rss_end_mib" in r else ""
        rows.append(f"{what}: {r['scrapes']} scrapes, {r['failures']} failed {r['failure_kinds'] or ''}, "
                    f"p50 {r['p50_s']} s, p99 {r['p99_s']} s, max {r['max_s']} s; "
                    f"RSS start {r['rss_start_mib']} MiB{end}, peak {r['rss_peak_mib']} MiB")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="soak seconds (default 600)")
    p.add_argument("--scrapers", type=int, default=50, help="concurrent scrapers in the soak (default 50)")
    p.add_argument("--churn", type=float, default=2.0, help="seconds between pod changes (default 2)")
    p.add_argument("--pods", type=int, default=0,
                   help="scale the replay node to N pods (default 0: the demo's capture as it is)")
    p.add_argument("--node-agent", action="store_true",
                   help="only the collectors the DaemonSet runs by default (not the demo's cluster ones)")
    p.add_argument("--burst", type=int, action="append", help="N concurrent scrapes instead of a soak")
    p.add_argument("--rounds", type=int, default=5, help="bursts per N (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    p.add_argument("--serve-cluster", type=Path, help=argparse.SUPPRESS)  # the cluster's own process
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_cluster:
        asyncio.run(serve_cluster(args.serve_cluster, args.churn, args.pods))
        return 0
    results = asyncio.run(run(args))
    print(json.dumps(results) if args.json else table(results), flush=True)
    return 0


__all__ = ["main", "Scrapes"]

if __name__ == "__main__":
    sys.exit(main())
