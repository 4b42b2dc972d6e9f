"""End to end on one machine: a real Prometheus scrapes raw cAdvisor and kubebridge side by side.

- A fake kubelet on 127.0.0.1 (the replay kubelet, HTTPS with the demo CA and a bearer token)
  serves a synthetic node of N pods: the Kubernetes 1.35 capture cloned to N pods, as bench.node
  builds it, on /metrics/cadvisor, /pods, /stats/summary, /metrics, /metrics/probes,
  /metrics/resource and /healthz. Every `--interval` seconds the node moves on (`Churn`): values
  change the way `bench.node.perturb` changes them and sample timestamps follow the wall clock,
  so no scrape sees the bytes of the previous one.
- kubebridge runs as its own process (`python -m exporter run --config FILE`) with the default
  node collectors, pointed at that kubelet.
- A real Prometheus (its own temp data dir, a loopback port) scrapes, every `--interval` seconds
  for at least `--duration` seconds, job `raw` (the kubelet's /metrics/cadvisor directly) and job
  `kubebridge` (kubebridge's /metrics), otherwise with its own defaults.
- kubebridge's RSS is sampled from /proc/<pid>/status during the run (VmHWM at the end is the
  peak); the idle RSS is that of a second kubebridge with every collector off.
- At the end Prometheus' HTTP API gives the mean `scrape_duration_seconds` and the
  `scrape_samples_scraped` of each job.

    python -m bench.e2e --pods 110                 # a table
    python -m bench.e2e --pods 250 --json          # one JSON object on stdout
    python -m bench.e2e --pods 3 --duration 12 --interval 2 --json   # the smoke test's run

Numbers are printed, never judged: the exit status does not depend on them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from bench.node import _bump, _split_sample

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
CLUSTER = "bench"
# The replay capture's crash-looping container (as the demo shows it): one pod in CrashLoopBackOff.
CRASH_LOOP = ("scraper", "e2e-container-creating", "alpine")
# Prometheus' own counters of samples it refused while ingesting a scrape.
PROM_INGEST_COUNTERS = (
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_exceeded_sample_limit_total",
    "prometheus_target_scrapes_exceeded_body_size_limit_total",
    "prometheus_target_scrape_pool_exceeded_label_limits_total",
)
KEYS = ("raw_ms", "kb_ms", "ratio", "kb_peak_rss_bytes", "kb_idle_rss_bytes", "series_raw",
        "series_kb", "pods", "duration_s", "interval_s", "scrapes", "prometheus_version")


# --- the churning node ------------------------------------------------------------------------

class Churn:
    """One payload, re-rendered per time slot with other numbers.

    Expositions: as `bench.node.perturb`, the last significant mantissa digit of a value is
    rotated (slot n: rotation n % 9, so consecutive slots differ), and a stamped sample's
    timestamp is moved to the slot's start minus its offset from the capture's newest stamp
    (the capture's spread, 20 s, is kept), so Prometheus, which honours the raw job's
    timestamps, gets current, per-series increasing ones. Unstamped samples stay byte for byte
    unless `bump_unstamped` (the kubelet's own /metrics and /metrics/probes have no stamps; their
    counters move between real scrapes), as cAdvisor's spec and start-time samples must.
    JSON (/stats/summary): every integer of two or more digits after a key gets the same
    rotation (usage bytes, inodes, PIDs, CPU nanoseconds; `time` strings stay).
    """

    _JSON_NUMBER = re.compile(rb'(?<=": )(\d{2,})(?=[,\s}\]])')

    def __init__(self, payload: bytes, *, json_body: bool = False, bump_unstamped: bool = False) -> None:
        self.json = json_body
        if json_body:
            self.pieces = self._JSON_NUMBER.split(payload)  # static, number, static, ...
            return
        self.entries: list[bytes | tuple[bytes, bytes, int | None]] = []
        newest = 0
        for line in payload.split(b"\n"):
            if not line or line.startswith(b"#"):
                self.entries.append(line)
                continue
            head, tail = _split_sample(line)
            value, sep, ts = tail.partition(b" ")
            if sep and ts.lstrip(b"-").isdigit():
                stamp = int(ts)
                newest = max(newest, stamp)
                self.entries.append((head, value, stamp))
            elif bump_unstamped:
                self.entries.append((head, value, None))
            else:
                self.entries.append(line)
        # Offsets from the newest stamp (<= 0): the captured spread between containers.
        self.entries = [(e[0], e[1], e[2] - newest) if isinstance(e, tuple) and e[2] is not None else e
                        for e in self.entries]

    def render(self, slot: int, base_ms: int) -> bytes:
        k = slot % 9
        bumped: dict[bytes, bytes] = {}

        def bump(value: bytes) -> bytes:
            out = bumped.get(value)
            if out is None:
                out = bumped[value] = _bump(value, k) if k else value
            return out

        if self.json:
            pieces = self.pieces[:]
            for i in range(1, len(pieces), 2):
                pieces[i] = bump(pieces[i])
            return b"".join(pieces)
        stamps: dict[int, bytes] = {}
        out = []
        append = out.append
        for entry in self.entries:
            if entry.__class__ is bytes:
                append(entry)
                continue
            head, value, offset = entry  # type: ignore[misc]
            if offset is None:
                append(head + bump(value))
                continue
            stamp = stamps.get(offset)
            if stamp is None:
                stamp = stamps[offset] = b" %d" % (base_ms + offset)
            append(head + bump(value) + stamp)
        return b"\n".join(out)


def make_kubelet_class() -> type:
    """`ChurningKubelet`, a ReplayKubelet whose payloads move on every `interval` seconds
    (built lazily so `--help` needs no aiohttp)."""
    from exporter.replay.kubelet import ReplayKubelet

    class ChurningKubelet(ReplayKubelet):
        """Slot n = floor(time / interval). The bodies of slots n and n+1 are prepared in a
        thread ahead of time, so a scrape's latency is the kubelet serving bytes, not Python
        rendering 19 MB. Gzip is done per request, in a worker thread, as the kubelet's promhttp
        handler does (`gzip.NewWriter`, Go's default level 6) for a client that accepts it:
        Prometheus scraping the raw job does; kubebridge asks for identity."""

        CHURNED = {"/metrics/cadvisor": {}, "/metrics/resource": {}, "/stats/summary": {"json_body": True},
                   "/metrics": {"bump_unstamped": True}, "/metrics/probes": {"bump_unstamped": True}}

        def setup_churn(self, interval: float) -> None:
            self.interval = interval
            self.churn = {path: Churn(ReplayKubelet._body(self, path), **kw)
                          for path, kw in self.CHURNED.items()}
            self.slots: dict[int, dict[str, bytes]] = {}
            self.prepare_lock = threading.Lock()
            self.prepare_seconds: list[float] = []
            self._task: asyncio.Task | None = None
            n = self.slot_now()
            self.prepare(n)
            self.prepare(n + 1)

        def slot_now(self) -> int:
            return int(time.time() // self.interval)

        def prepare(self, slot: int) -> dict[str, bytes]:
            with self.prepare_lock:
                if slot not in self.slots:
                    t0 = time.perf_counter()
                    base_ms = int(slot * self.interval * 1000)
                    bodies = {path: c.render(slot, base_ms) for path, c in self.churn.items()}
                    self.slots[slot] = bodies
                    for old in [s for s in self.slots if s < slot - 2]:
                        del self.slots[old]
                    self.prepare_seconds.append(time.perf_counter() - t0)
                return self.slots[slot]

        async def start(self, port: int = 0) -> str:
            url = await super().start(port)
            self._task = asyncio.create_task(self._prepare_ahead())
            return url

        async def stop(self) -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await super().stop()

        async def _prepare_ahead(self) -> None:
            while True:
                n = self.slot_now()
                await asyncio.to_thread(self.prepare, n + 1)
                await asyncio.sleep(max(0.05, (n + 1) * self.interval - time.time() + 0.01))

        def _current(self) -> dict[str, bytes]:
            n = self.slot_now()
            return self.slots.get(n) or self.prepare(n)  # not prepared in time: render now

        def _body(self, path: str) -> bytes:
            if path in self.CHURNED:
                return self._current()[path]
            return super()._body(path)

        async def _metrics_response(self, request: Any, path: str) -> Any:
            from aiohttp import web

            from exporter.replay import protocol
            if path not in self.CHURNED:
                return await super()._metrics_response(request, path)
            headers = {"Content-Type": protocol.METRICS_CONTENT_TYPE}
            body = self._current()[path]
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                headers["Content-Encoding"] = "gzip"
                body = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
            return web.Response(body=body, headers=headers)

    return ChurningKubelet


# --- processes --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


async def wait_http(url: str, proc: subprocess.Popen, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} before {url} answered")
        try:
            await asyncio.to_thread(http_get, url, 2.0)
            return
        except (OSError, urllib.error.HTTPError):
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200 within {deadline:.0f} s")


class Processes:
    """Every child started, each in its own process group; `stop_all` ends them (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # anything left in the group
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (bytes) and Threads from /proc/<pid>/status; {} once the process is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
        elif key == "Threads":
            out[key] = int(rest.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kubebridge_cmd(config: Path, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "exporter", "run", "--config", str(config), *extra]


def child_env() -> dict[str, str]:
    """The children import the exporter from this checkout, whatever the caller's directory."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# --- Prometheus -------------------------------------------------------------------------------

def prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def prometheus_config(interval: float, kubelet: str, kb: str, ca: Path, token: Path) -> dict[str, Any]:
    """Two jobs side by side. Only the interval (and the timeout, which may not exceed it) is
    set; everything else, content negotiation included, is Prometheus' default."""
    kubelet_host = urllib.parse.urlsplit(kubelet).netloc
    return {
        "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": f"{min(interval, 10.0):g}s"},
        "scrape_configs": [
            {"job_name": "raw", "scheme": "https", "metrics_path": "/metrics/cadvisor",
             "tls_config": {"ca_file": str(ca)},
             "authorization": {"type": "Bearer", "credentials_file": str(token)},
             "static_configs": [{"targets": [kubelet_host]}]},
            {"job_name": "kubebridge", "static_configs": [{"targets": [kb]}]},
        ],
    }


def query(prom: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    body = json.loads(http_get(f"{prom}/api/v1/query?{urllib.parse.urlencode(params)}", 30.0))
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    return body["data"]["result"]


def per_job(prom: str, promql: str, at: float) -> dict[str, float]:
    return {r["metric"].get("job", ""): float(r["value"][1]) for r in query(prom, promql, at)}


def prometheus_counters(prom: str) -> dict[str, float]:
    """Prometheus' own ingestion counters (its /metrics; it scrapes no job of itself here)."""
    out: dict[str, float] = {}
    for line in http_get(f"{prom}/metrics", 10.0).decode().splitlines():
        name, _, value = line.partition(" ")
        if name in PROM_INGEST_COUNTERS:
            out[name.removeprefix("prometheus_target_")] = float(value)
    return out


# --- the run ----------------------------------------------------------------------------------

def write_config(path: Path, listen: str, kubelet: Any, token: Path) -> None:
    """kubebridge's config: the defaults (collectors included), pointed at the fake kubelet."""
    cfg: dict[str, Any] = {
        "listen_address": listen, "cluster": CLUSTER, "node_name": kubelet.node_name,
        "kubelet": {"url": kubelet.base_url, "token_file": str(token), "ca_file": str(kubelet.ca_file)},
    }
    path.write_text(json.dumps(cfg, indent=1))


async def measure_idle(tmp: Path, kubelet: Any, token: Path, procs: Processes,
                       settle: float) -> dict[str, int]:
    """A kubebridge with every collector off: its RSS after two /metrics requests and `settle` s."""
    import collectors  # noqa: F401  (registers every collector)
    from exporter.registry import registrations
    names = [r.name for r in registrations()]
    port = free_port()
    config = tmp / "kubebridge-idle.json"
    write_config(config, f"127.0.0.1:{port}", kubelet, token)
    proc = procs.start(kubebridge_cmd(config, [f"--no-collector.{n}" for n in names]),
                       tmp / "kubebridge-idle.log", cwd=ROOT, env=child_env())
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        for _ in range(2):
            await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
            await asyncio.sleep(0.5)
        await asyncio.sleep(settle)
        status = proc_status(proc.pid)
        return {"rss": status.get("VmRSS", 0), "hwm": status.get("VmHWM", 0), "collectors_off": len(names)}
    finally:
        Processes.stop(proc)


async def sample_rss(pid: int, samples: list[tuple[float, int]], every: float = 0.5) -> None:
    while True:
        rss = proc_status(pid).get("VmRSS")
        if rss is None:
            return
        samples.append((time.time(), rss))
        await asyncio.sleep(every)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run; whatever it started is stopped and its temp dir removed, however it ends."""
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="kubebridge-e2e-"))
    kubelets: list[Any] = []
    try:
        return await _run(args, procs, tmp, kubelets.append)
    finally:
        procs.stop_all()
        for kubelet in kubelets:
            await kubelet.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def _run(args: argparse.Namespace, procs: Processes, tmp: Path, hold: Any) -> dict[str, Any]:
    from exporter.replay.podstatus import crash_loop_backoff

    def log(msg: str) -> None:
        print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    token = tmp / "token"
    token.write_text(secrets.token_urlsafe(32))
    t0 = time.perf_counter()
    kubelet = make_kubelet_class().from_package_data(token)
    hold(kubelet)
    kubelet.set_pods(args.pods, seed=args.seed)
    ns, pod, container = CRASH_LOOP
    with contextlib.suppress(KeyError):  # present from 18 pods on (a captured pod)
        kubelet.update_pod(ns, pod, lambda item: crash_loop_backoff(item, container))
    await asyncio.to_thread(kubelet.setup_churn, args.interval)
    await kubelet.start()
    cadvisor = kubelet._body("/metrics/cadvisor")
    node = {"series_upstream": sum(1 for ln in cadvisor.split(b"\n") if ln and not ln.startswith(b"#")),
            "cadvisor_bytes": len(cadvisor),
            "cadvisor_gzip_bytes": len(gzip.compress(cadvisor, 6, mtime=0))}
    log(f"kubelet {kubelet.base_url}: {args.pods} pods, {node['series_upstream']:,} cAdvisor series, "
        f"{node['cadvisor_bytes'] / 1e6:.1f} MB, built in {time.perf_counter() - t0:.1f} s")

    idle = await measure_idle(tmp, kubelet, token, procs, args.idle_settle)
    log(f"idle kubebridge ({idle['collectors_off']} collectors off): RSS {idle['rss'] / 2**20:.1f} MiB")

    kb_port = free_port()
    kb_addr = f"127.0.0.1:{kb_port}"
    config = tmp / "kubebridge.json"
    write_config(config, kb_addr, kubelet, token)
    kb = procs.start(kubebridge_cmd(config), tmp / "kubebridge.log", cwd=ROOT, env=child_env())
    await wait_http(f"http://{kb_addr}/readyz", kb)
    rss_ready = proc_status(kb.pid).get("VmRSS", 0)
    log(f"kubebridge pid {kb.pid} ready on {kb_addr}: RSS {rss_ready / 2**20:.1f} MiB")

    binary = args.prometheus
    version = prometheus_version(binary)
    prom_port = free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(json.dumps(prometheus_config(args.interval, kubelet.base_url, kb_addr,
                                                     kubelet.ca_file, token), indent=1))
    prom_proc = procs.start([binary, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'prom-data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], tmp / "prometheus.log", cwd=tmp)
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample_rss(kb.pid, samples))
    try:
        await wait_http(f"{prom}/-/ready", prom_proc)
        # The first samples appear after Prometheus' target-sync throttle (5-6 s): the run
        # starts once both jobs have one, so each job is scraped for at least --duration s.
        deadline = time.monotonic() + 60 + 2 * args.interval
        while True:
            if prom_proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with status {prom_proc.returncode}")
            if len(await asyncio.to_thread(per_job, prom, "up", time.time())) == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus never scraped both jobs")
            await asyncio.sleep(0.5)
        start = time.time()
        cpu_start = proc_cpu_seconds(kb.pid)
        log(f"prometheus {version} on {prom}: scraping both jobs every {args.interval:g} s "
            f"for {args.duration:g} s")
        await asyncio.sleep(args.duration)
        # Let the scrapes of the last interval land, then judge the window [start, end].
        end = time.time()
        cpu_end = proc_cpu_seconds(kb.pid)
        await asyncio.sleep(min(args.interval, 10.0) + 0.5)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    status = proc_status(kb.pid)
    prom_results = await asyncio.to_thread(prometheus_results, prom, start, end)
    scrapes = prom_results.pop("scrapes_by_job")
    in_window = [rss for t, rss in samples if start <= t <= end]
    cpu = cpu_end - cpu_start
    return {
        "pods": args.pods, "duration_s": round(end - start, 1), "interval_s": args.interval,
        **prom_results,
        "scrapes": min(scrapes.get("raw", 0), scrapes.get("kubebridge", 0)), "scrapes_by_job": scrapes,
        "kb_peak_rss_bytes": status.get("VmHWM", 0),
        "kb_rss_ready_bytes": rss_ready,
        "kb_rss_start_bytes": in_window[0] if in_window else 0,
        "kb_rss_mean_bytes": int(sum(in_window) / len(in_window)) if in_window else 0,
        "kb_rss_max_sampled_bytes": max(in_window, default=0),
        "kb_rss_end_bytes": status.get("VmRSS", 0),
        "kb_rss_anon_end_bytes": status.get("RssAnon", 0),
        "kb_rss_samples": len(in_window),
        "kb_threads_end": status.get("Threads", 0),
        "kb_cpu_s": round(cpu, 2),
        "kb_cpu_ms_per_scrape": round(cpu * 1000 / max(1, scrapes.get("kubebridge", 0)), 1),
        "kb_idle_rss_bytes": idle["rss"], "kb_idle_hwm_bytes": idle["hwm"],
        "kubelet_prepare_max_ms": round(1000 * max(kubelet.prepare_seconds, default=0.0), 1),
        **node,
        "prometheus_version": version,
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }


def prometheus_results(prom: str, start: float, end: float) -> dict[str, Any]:
    """What Prometheus recorded over [start, end], per job, and kubebridge's self-metrics."""
    window = f"[{math.ceil(end - start + 1)}s]"

    def job(promql: str, scale: float = 1.0, digits: int = 1) -> dict[str, float]:
        return {k: round(v * scale, digits) for k, v in per_job(prom, promql, end).items()}

    def by(labels: str, promql: str, scale: float = 1.0) -> dict[str, float]:
        return {"/".join(r["metric"].get(label, "") for label in labels.split("/")):
                round(float(r["value"][1]) * scale, 1) for r in query(prom, promql, end)}

    mean_ms = job(f"avg_over_time(scrape_duration_seconds{window})", 1000.0)
    max_ms = job(f"max_over_time(scrape_duration_seconds{window})", 1000.0)
    samples = job("scrape_samples_scraped", digits=0)
    samples_max = job(f"max_over_time(scrape_samples_scraped{window})", digits=0)
    scrapes = job(f"count_over_time(up{window})", digits=0)
    up_min = job(f"min_over_time(up{window})")
    up_sum = job(f"sum_over_time(up{window})", digits=0)
    # The node's churn, seen from both jobs: value changes of one container family over the run.
    changes = job(f"sum by (job) (changes(container_cpu_usage_seconds_total{window}))", digits=0)
    targets = json.loads(http_get(f"{prom}/api/v1/targets", 10.0))["data"]["activeTargets"]
    raw_ms, kb_ms = mean_ms.get("raw", 0.0), mean_ms.get("kubebridge", 0.0)
    kb = '{job="kubebridge"}'
    return {
        "raw_ms": raw_ms, "kb_ms": kb_ms, "ratio": round(kb_ms / raw_ms, 2) if raw_ms else None,
        "raw_max_ms": max_ms.get("raw", 0.0), "kb_max_ms": max_ms.get("kubebridge", 0.0),
        "series_raw": int(samples.get("raw", 0)), "series_kb": int(samples.get("kubebridge", 0)),
        "series_raw_max": int(samples_max.get("raw", 0)),
        "series_kb_max": int(samples_max.get("kubebridge", 0)),
        "scrapes_by_job": {j: int(n) for j, n in scrapes.items()},
        "up": {j: up_min.get(j) == 1.0 for j in ("raw", "kubebridge")},
        "failed_scrapes": {j: int(scrapes.get(j, 0) - up_sum.get(j, 0)) for j in ("raw", "kubebridge")},
        "cpu_usage_value_changes": {j: int(changes.get(j, 0)) for j in ("raw", "kubebridge")},
        "last_error": {t["labels"]["job"]: t.get("lastError", "") for t in targets},
        "prometheus_ingest_errors": prometheus_counters(prom),
        # kubebridge's view of its sources, as Prometheus stored it.
        "kb_source_ms": by("collector", f"avg_over_time(kubebridge_scrape_duration_seconds{kb}{window})",
                           1000.0),
        "kb_source_min_up": by("collector", f"min_over_time(kubebridge_up{kb}{window})"),
        "kb_source_errors": by("collector/reason",
                               f"increase(kubebridge_scrape_errors_total{kb}{window}) > 0"),
    }


# --- reporting --------------------------------------------------------------------------------

def table(r: dict[str, Any]) -> str:
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    lines = [
        f"kubebridge end to end: {r['pods']} pods ({r['series_upstream']:,} cAdvisor series, "
        f"{r['cadvisor_bytes'] / 1e6:.1f} MB), Prometheus {r['prometheus_version']}, every "
        f"{r['interval_s']:g} s for {r['duration_s']:g} s, python {r['python']}, {r['cpus']} CPUs",
        "",
        f"  {'job':<11} {'scrape ms (mean)':>17} {'max ms':>9} {'samples':>9} {'scrapes':>8} {'failed':>7}",
    ]
    for job, short in (("raw", "raw"), ("kubebridge", "kb")):
        lines.append(f"  {job:<11} {r[short + '_ms']:>17.1f} {r[short + '_max_ms']:>9.1f} "
                     f"{r['series_' + short]:>9,} {r['scrapes_by_job'].get(job, 0):>8} "
                     f"{r['failed_scrapes'][job]:>7}")
    lines += [
        "",
        f"  ratio kubebridge / raw: {r['ratio']}",
        f"  kubebridge RSS: peak {mib(r['kb_peak_rss_bytes'])} (VmHWM), mean {mib(r['kb_rss_mean_bytes'])}, "
        f"at ready {mib(r['kb_rss_ready_bytes'])}, at end {mib(r['kb_rss_end_bytes'])}; "
        f"idle (every collector off) {mib(r['kb_idle_rss_bytes'])}",
        f"  kubebridge CPU: {r['kb_cpu_s']} s over the run, {r['kb_cpu_ms_per_scrape']} ms per scrape",
        "  kubebridge per source (mean ms): "
        + ", ".join(f"{k} {v:g}" for k, v in sorted(r["kb_source_ms"].items())),
    ]
    errors = {job: e for job, e in r["last_error"].items() if e}
    if errors or r["kb_source_errors"] or any(r["prometheus_ingest_errors"].values()):
        lines.append(f"  errors: last {errors}, kubebridge sources {r['kb_source_errors']}, "
                     f"prometheus ingest {r['prometheus_ingest_errors']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=110, help="pods on the node (default 110)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of scraping (default 120)")
    p.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--seed", type=int, default=0, help="clone seed (default 0)")
    p.add_argument("--idle-settle", type=float, default=3.0,
                   help="seconds the idle kubebridge settles before its RSS is read (default 3)")
    p.add_argument("--prometheus", default=PROMETHEUS, help=f"the Prometheus binary (default {PROMETHEUS})")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs, TSDB)")
    args = p.parse_args(argv)
    if args.pods < 1 or args.duration <= 0 or args.interval <= 0:
        p.error("--pods, --duration and --interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(args.prometheus, os.X_OK):
        print(f"{args.prometheus}: not found (apt-get install -y prometheus)", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through run()'s finally: children stopped

    signal.signal(signal.SIGTERM, terminate)
    result = asyncio.run(run(args))
    print(json.dumps(result, sort_keys=True) if args.json else table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
