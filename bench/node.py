"""One realistic node, four ways to turn its cAdvisor payload into an exposition.

The node is the Kubernetes 1.35 cAdvisor + /pods capture cloned to N pods with fresh names and
UIDs (`exporter.replay.synth.clone_pods`: every label shape is a captured one). Per size it
measures, as the median of repeated runs, all four interleaved (time.perf_counter):

- baseline: prometheus_client's `text_string_to_metric_families` -> pod join from a dict ->
  `generate_latest` of a registry holding a custom collector (what a competent engineer writes
  without kubebridge; see bench/README.md);
- cold: kubebridge's first scrape with a freshly built collector (empty caches);
- warm: kubebridge's steady state, the same collector scraping again and again;
- floor: `b"\\n".join(payload.split(b"\\n"))`, the least any line-based pass can cost.

kubebridge's scrape is timed as the server does the work after the HTTP fetch, offline and
synchronously: `collector.process(payload)` -> `merge` -> `encode_text`. Scrapes rotate through
payload variants with the same series but other values and timestamps (see `perturb`), so no
stamped line repeats and nothing can cache whole lines, and the warm output of each variant is
checked byte for byte against a cold collector's.

    python -m bench.node                      # 110 and 250 pods, one subprocess each, a table
    python -m bench.node --pods 110 --json    # one size in this process, one JSON object
    python -m bench.node --pods 250 --profile # also a cProfile top-15 of the warm path
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = (110, 250)
CLUSTER = "bench"
COLLECTOR = "cadvisor"
VARIANTS = 3
SCRAPE_INTERVAL_MS = 10_000  # how far each variant moves the sample timestamps
# The targets on a 2-core machine: (ratio key, comparison, bound).
TARGETS = (("baseline_over_warm", ">=", 40.0), ("warm_over_floor", "<=", 3.0),
           ("baseline_over_cold", ">=", 10.0))


# --- the node ---------------------------------------------------------------------------------

@dataclass
class Node:
    """A synthetic node: payload variants (same series, other values) and its PodList."""

    pods: int
    payloads: list[bytes]
    podlist: dict[str, Any]
    series: int            # sample lines per payload
    lines_changed: float   # share of sample lines that differ between variants 0 and 1
    values_changed: float  # share of sample values that differ between variants 0 and 1


def load_capture() -> tuple[bytes, dict[str, Any]]:
    """The real 1.35 pair (package data in exporter/replay/data/, the one copy of each capture)."""
    from exporter.replay.paths import CADVISOR, PODS, data_file
    cadvisor = data_file(CADVISOR.format(version="1.35")).read_bytes()
    pods = json.loads(data_file(PODS.format(version="1.35")).read_text())
    return cadvisor, pods


def make_node(pods: int, seed: int = 0, variants: int = VARIANTS) -> Node:
    """Clone the capture to `pods` pods and derive the value variants."""
    from exporter.replay.synth import clone_pods
    cadvisor, podlist = load_capture()
    payload, podlist = clone_pods(cadvisor, podlist, pods, seed)
    payloads = [payload] + [perturb(payload, k) for k in range(1, variants)]
    samples = [ln for ln in payload.split(b"\n") if ln and not ln.startswith(b"#")]
    lines = values = 0.0
    if len(payloads) > 1 and samples:
        other = [ln for ln in payloads[1].split(b"\n") if ln and not ln.startswith(b"#")]
        lines = sum(a != b for a, b in zip(samples, other)) / len(samples)
        values = sum(_value(a) != _value(b) for a, b in zip(samples, other)) / len(samples)
    return Node(pods, payloads, podlist, len(samples), lines, values)


def _split_sample(line: bytes) -> tuple[bytes, bytes]:
    """(name and labels including the separator, `value [timestamp]`)."""
    head, sep, tail = line.rpartition(b"} ")
    if sep:
        return head + sep, tail
    name, _, tail = line.partition(b" ")
    return name + b" ", tail


def _value(line: bytes) -> bytes:
    return _split_sample(line)[1].partition(b" ")[0]


def perturb(payload: bytes, k: int) -> bytes:
    """Variant `k` of a payload: the same lines, series and families, other numbers.

    cAdvisor stamps its usage samples and leaves the spec ones (`container_spec_*`,
    `container_start_time_seconds`, `machine_*`) unstamped and constant. So in every stamped
    sample the timestamp moves k scrape intervals ahead (no such line repeats between variants,
    as in a real next scrape), and the value's last significant mantissa digit (1-9) is rotated
    when the mantissa has at least two digits, which keeps Go's float formatting and the line
    length; zeros and one-digit values stay. Unstamped samples stay byte for byte, as they do
    between real scrapes (and start times must: they decide which containers are stale).
    """
    if k == 0:
        return payload
    out = []
    for line in payload.split(b"\n"):
        if not line or line.startswith(b"#"):
            out.append(line)
            continue
        head, tail = _split_sample(line)
        value, sep, ts = tail.partition(b" ")
        if sep and ts.lstrip(b"-").isdigit():
            line = head + _bump(value, k) + sep + b"%d" % (int(ts) + k * SCRAPE_INTERVAL_MS)
        out.append(line)
    return b"\n".join(out)


def _bump(value: bytes, k: int) -> bytes:
    mantissa, e, exponent = value.partition(b"e")
    digits = sum(c in b"0123456789" for c in mantissa)
    last = mantissa[-1:]
    if digits < 2 or not last or last not in b"123456789":
        return value
    d = (int(last) - 1 + k) % 9 + 1
    return mantissa[:-1] + b"%d" % d + e + exponent


# --- the four pipelines -----------------------------------------------------------------------

def build_collector(podlist: dict[str, Any]) -> Any:
    """A cadvisor collector built like tests/conftest.py `offline("cadvisor", {"cluster": ...},
    podlist)`: the `kubebridge transform` wiring, no network."""
    import collectors  # noqa: F401  (registers every collector)
    from exporter import config as config_mod
    from exporter.deps import Deps
    from exporter.podindex import PodIndex
    from exporter.pods import parse_podlist
    from exporter.registry import get
    cfg = config_mod.parse({"cluster": CLUSTER}, env={})
    index = PodIndex(cfg.label_policy)
    index.replace(parse_podlist(podlist))
    return get(COLLECTOR).factory(Deps(cfg, None, index), cfg.collectors[COLLECTOR])


def kubebridge_scrape(collector: Any, payload: bytes) -> bytes:
    """One scrape as the server does it once the upstream body is in hand."""
    from exporter.expfmt import encode_text
    from exporter.merge import merge
    res = collector.process(payload)
    return encode_text(merge([(COLLECTOR, res.families)])[0])


def floor_scrape(payload: bytes) -> bytes:
    """The floor: one split and one join of the whole payload, nothing per line in Python."""
    return b"\n".join(payload.split(b"\n"))


class BaselineCollector:
    """The straightforward prometheus_client exporter: a custom collector whose collect() parses
    the upstream text, adds the pod's labels from a dict (upstream labels win), drops sample
    timestamps (as kubebridge does by default) and yields the families."""

    def __init__(self, joins: dict[tuple[str, str], dict[str, str]], common: dict[str, str]) -> None:
        self.joins = joins
        self.common = common
        self.payload = b""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families
        from prometheus_client.samples import Sample
        joins, common = self.joins, self.common
        for family in text_string_to_metric_families(self.payload.decode()):
            samples = []
            for s in family.samples:
                extra = joins.get((s.labels.get("namespace", ""), s.labels.get("pod", "")), common)
                samples.append(Sample(s.name, {**extra, **s.labels}, s.value))
            family.samples = samples
            yield family


def build_baseline(podlist: dict[str, Any]) -> tuple[Any, BaselineCollector]:
    """A registry holding the baseline collector. The join dict is built once per pod list (not
    per scrape), with the same labels kubebridge joins (label_*, workload, workload_kind, node)."""
    from prometheus_client import CollectorRegistry

    from exporter import config as config_mod
    from exporter.podindex import PodIndex
    from exporter.pods import parse_podlist
    cfg = config_mod.parse({"cluster": CLUSTER}, env={})
    index = PodIndex(cfg.label_policy)
    pods = parse_podlist(podlist)
    index.replace(pods)
    common = {"cluster": CLUSTER, "collector": COLLECTOR}
    joins = {key: {**dict(index.join_labels(meta)), **common} for key, meta in pods.items()}
    collector = BaselineCollector(joins, common)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry, collector


def baseline_scrape(registry: Any, collector: BaselineCollector, payload: bytes) -> bytes:
    from prometheus_client import generate_latest
    collector.payload = payload  # the "fetch": the body is already in hand, as for kubebridge
    return generate_latest(registry)


# --- measuring --------------------------------------------------------------------------------

def timed(fn: Callable[..., bytes], *args: Any) -> tuple[tuple[float, float], bytes]:
    """((wall ms, CPU ms), result) of one call. Wall time (perf_counter) is the measure; this
    process's CPU time is kept beside it because it excludes time spent waiting for a core,
    which dominates the noise when other processes load a small machine."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    t1, c1 = time.perf_counter(), time.process_time()
    return ((t1 - t0) * 1000.0, (c1 - c0) * 1000.0), out


def peak_rss() -> int:
    """This process's peak resident set so far, in bytes (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def sample_lines(text: bytes) -> int:
    return sum(1 for ln in text.split(b"\n") if ln and not ln.startswith(b"#"))


def measure(node: Node, repeat: int, cold_repeat: int, baseline_repeat: int,
            profile: bool = False, profile_out: Any = None) -> dict[str, Any]:
    """Every pipeline over `node`. kubebridge's RSS mark is taken before the baseline first
    runs (ru_maxrss only grows), then all four pipelines are timed interleaved."""
    import collectors  # noqa: F401  (importing every collector is setup, not scraping)
    payloads, nv = node.payloads, len(node.payloads)
    rss_setup = peak_rss()

    # A cold reference output for every variant, untimed: warm output must equal it.
    cold_out = {v: kubebridge_scrape(build_collector(node.podlist), payloads[v]) for v in range(nv)}
    gc.collect()
    steady = build_collector(node.podlist)
    for i in range(nv + 1):  # fill the caches, then one unrecorded pass over every variant
        kubebridge_scrape(steady, payloads[i % nv])
    series_out = sample_lines(cold_out[0])
    out_bytes = len(cold_out[0])
    rss_kubebridge = peak_rss()  # (a cold and a steady collector have run: the loop adds nothing)
    registry, base = build_baseline(node.podlist)
    # All four pipelines are interleaved, so that a burst of load from other processes on the
    # machine, or a slower phase of the machine itself, hits them all and their ratios stay
    # meaningful. After each cold or baseline run one untimed warm scrape brings the steady
    # collector's data back into the CPU caches the other run went through.
    timed(floor_scrape, payloads[0])
    cold: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    baseline: list[tuple[float, float]] = []
    baseline_series = 0
    matches = True
    every = max(1, repeat // max(cold_repeat, baseline_repeat))
    for i in range(max(repeat, max(cold_repeat, baseline_repeat) * every)):
        if i % every == 0 and len(cold) < cold_repeat:
            gc.collect()  # the previous fresh collector's garbage is not this one's cost
            fresh = build_collector(node.podlist)
            t, out = timed(kubebridge_scrape, fresh, payloads[len(cold) % nv])
            matches = matches and out == cold_out[len(cold) % nv]
            cold.append(t)
            del fresh, out
            gc.collect()
            kubebridge_scrape(steady, payloads[(i - 1) % nv])
        if i % every == 0 and len(baseline) < baseline_repeat:
            t, out = timed(baseline_scrape, registry, base, payloads[len(baseline) % nv])
            baseline.append(t)
            baseline_series = baseline_series or sample_lines(out)
            del out
            gc.collect()
            kubebridge_scrape(steady, payloads[(i - 1) % nv])
        if i >= repeat:
            continue
        t, out = timed(kubebridge_scrape, steady, payloads[i % nv])
        warm.append(t)
        matches = matches and out == cold_out[i % nv]
        del out
        floor.append(timed(floor_scrape, payloads[i % nv])[0])
    del cold_out

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(max(repeat, nv)):
            kubebridge_scrape(steady, payloads[i % nv])
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        print(f"# cProfile of {max(repeat, nv)} warm scrapes, {node.pods} pods, top 15 by tottime",
              file=profile_out or sys.stdout)
        print(buf.getvalue(), file=profile_out or sys.stdout)
    del steady

    runs = {"baseline": baseline, "cold": cold, "warm": warm, "floor": floor}
    med = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
    result: dict[str, Any] = {
        "pods": node.pods, "series": node.series, "bytes": len(payloads[0]),
        "series_out": series_out, "output_bytes": out_bytes, "baseline_series_out": baseline_series,
        "variants": nv, "lines_changed": round(node.lines_changed, 4),
        "values_changed": round(node.values_changed, 4),
        **{f"{name}_ms": round(ms, 3) for name, ms in med.items()},
        **{f"{name}_series_per_s": round(node.series / (ms / 1000.0)) for name, ms in med.items()},
        "cold_first_ms": round(cold[0][0], 3), "warm_min_ms": round(min(r[0] for r in warm), 3),
        "floor_min_ms": round(min(r[0] for r in floor), 3),
        **_ratios(med),
        "cpu": {**{f"{name}_ms": round(ms, 3) for name, ms in cpu.items()}, **_ratios(cpu)},
        "warm_matches_cold": matches,
        "peak_rss_bytes": peak_rss(), "rss_after_setup_bytes": rss_setup,
        "rss_after_kubebridge_bytes": rss_kubebridge,
        "repeats": {"baseline": baseline_repeat, "cold": cold_repeat, "warm": repeat, "floor": repeat},
        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
    }
    result["targets_met"] = {key: _meets(result[key], op, bound) for key, op, bound in TARGETS}
    return result


def _ratios(ms: dict[str, float]) -> dict[str, float]:
    return {"warm_over_floor": round(ms["warm"] / ms["floor"], 2),
            "baseline_over_warm": round(ms["baseline"] / ms["warm"], 1),
            "baseline_over_cold": round(ms["baseline"] / ms["cold"], 1),
            "cold_over_warm": round(ms["cold"] / ms["warm"], 2)}


def _meets(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


# --- reporting --------------------------------------------------------------------------------

def run_size(pods: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in a fresh interpreter, so its peak RSS is its own."""
    cmd = [sys.executable, "-m", "bench.node", "--pods", str(pods), "--json",
           "--repeat", str(args.repeat), "--seed", str(args.seed)]
    if args.cold_repeat is not None:
        cmd += ["--cold-repeat", str(args.cold_repeat)]
    if args.baseline_repeat is not None:
        cmd += ["--baseline-repeat", str(args.baseline_repeat)]
    if args.profile:
        cmd.append("--profile")  # printed on the child's stderr, which is ours
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
                          stdout=subprocess.PIPE, check=True)
    return json.loads(proc.stdout)


def table(results: Sequence[dict[str, Any]]) -> str:
    """A human-readable report of several sizes."""
    first = results[0]
    lines = [f"kubebridge node benchmark: python {first['python']}, {first['cpus']} CPUs "
             f"({first['machine']}); {first['variants']} payload variants rotated: "
             f"{first['lines_changed']:.0%} of sample lines (every timestamped one) and "
             f"{first['values_changed']:.0%} of values differ between them"]
    for r in results:
        lines += [
            "",
            f"{r['pods']} pods: {r['series']:,} series in, {r['series_out']:,} out, "
            f"{r['bytes'] / 1e6:.1f} MB in, {r['output_bytes'] / 1e6:.1f} MB out, "
            f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"(after setup {r['rss_after_setup_bytes'] / 2**20:.0f}, "
            f"after kubebridge {r['rss_after_kubebridge_bytes'] / 2**20:.0f})",
            f"  {'pipeline':<10} {'ms/scrape':>11} {'series/s':>13} {'runs':>5} {'CPU ms':>11}",
        ]
        for name in ("baseline", "cold", "warm", "floor"):
            lines.append(f"  {name:<10} {r[name + '_ms']:>11.1f} {r[name + '_series_per_s']:>13,} "
                         f"{r['repeats'][name]:>5} {r['cpu'][name + '_ms']:>11.1f}")
        checks = []
        for key, op, bound in TARGETS:
            mark = "ok" if r["targets_met"][key] else "MISSED"
            checks.append(f"{key.replace('_over_', '/')} {r[key]:g} (target {op} {bound:g}: {mark})")
        lines.append("  " + "; ".join(checks))
        lines.append("  on CPU time: " + "; ".join(
            f"{key.replace('_over_', '/')} {r['cpu'][key]:g}" for key, _, _ in TARGETS))
        if not r["warm_matches_cold"]:
            lines.append("  WARNING: warm output differs from a cold collector's for the same payload")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.node", description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, help="one node size (default: 110 and 250)")
    p.add_argument("--json", action="store_true",
                   help="run one size (--pods) in this process and print one JSON object")
    p.add_argument("--repeat", type=int, default=21, help="warm and floor runs (default 21)")
    p.add_argument("--cold-repeat", type=int,
                   help="cold runs, each a fresh collector (default min(repeat, 5))")
    p.add_argument("--baseline-repeat", type=int, help="baseline runs (default min(repeat, 3))")
    p.add_argument("--seed", type=int, default=0, help="clone_pods seed (default 0)")
    p.add_argument("--profile", action="store_true", help="print a cProfile top-15 of the warm path")
    args = p.parse_args(argv)
    if args.repeat < 1 or (args.pods is not None and args.pods < 1):
        p.error("--repeat and --pods must be >= 1")
    if args.json and args.pods is None:
        p.error("--json needs --pods")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json:
        cold_repeat = args.cold_repeat if args.cold_repeat is not None else min(args.repeat, 5)
        base_repeat = args.baseline_repeat if args.baseline_repeat is not None else min(args.repeat, 3)
        node = make_node(args.pods, args.seed)
        result = measure(node, args.repeat, max(1, cold_repeat), max(1, base_repeat),
                         args.profile, sys.stderr)
        print(json.dumps(result, sort_keys=True))
        return 0
    results = [run_size(n, args) for n in ([args.pods] if args.pods else SIZES)]
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
