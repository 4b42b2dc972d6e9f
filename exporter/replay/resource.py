"""kubelet /metrics/resource DERIVED from a /stats/summary (no real capture of it exists).

The shared fixtures have no /metrics/resource capture, so this renders what the kubelet's
resource metrics collector (pkg/kubelet/metrics/collectors/resource_metrics.go) would
print for the same summary: the same families, HELP texts with the stability prefix,
label names, value conversions (core-nanoseconds -> seconds) and sample timestamps
(the summary's per-stat `time`, in ms). As in the kubelet's registry output, families
are sorted by name and samples by label values, and values use Go float formatting.

Families: node/container/pod CPU and working set ([STABLE]), container_start_time_seconds
([STABLE], no timestamp), the [ALPHA] swap families when the summary has swap stats,
and `resource_scrape_error` (0). The older `scrape_error` gauge is deprecated since
1.29.0 and hidden by the kubelet from 1.30 on, so it is only emitted when asked for
(`legacy_scrape_error=True`, matching a 1.21-1.29 kubelet).
"""

from __future__ import annotations

from datetime import datetime

from .encoding import go_float

_HELP = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the container in bytes"),
    "container_start_time_seconds": (
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "container_swap_limit_bytes": (
        "gauge",
        "[ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems",
    ),
    "container_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "node_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
    ),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "pod_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    ),
    "resource_scrape_error": (
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
    "scrape_error": (
        "gauge",
        "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, "
        "0 otherwise",
    ),
}

# (family, label pairs sorted by name as Go prints them, value, timestamp in ms or None)
_Labels = tuple[tuple[str, str], ...]
_Sample = tuple[str, _Labels, float, "int | None"]


def _ms(stamp: str | None) -> int | None:
    """RFC 3339 (as in the summary, nanoseconds allowed) -> Unix ms, like Go's UnixMilli."""
    if not stamp:
        return None
    main, _, frac = stamp.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(main + "+00:00").timestamp())
    return seconds * 1000 + int((frac + "000")[:3])


def _cpu(name: str, labels: _Labels, stats: dict | None) -> list[_Sample]:
    if not stats or stats.get("usageCoreNanoSeconds") is None:
        return []
    return [(name, labels, stats["usageCoreNanoSeconds"] / 1e9, _ms(stats.get("time")))]


def _memory(name: str, labels: _Labels, stats: dict | None) -> list[_Sample]:
    if not stats or stats.get("workingSetBytes") is None:
        return []
    return [(name, labels, float(stats["workingSetBytes"]), _ms(stats.get("time")))]


def _samples(summary: dict) -> list[_Sample]:
    node = summary.get("node", {})
    out = _cpu("node_cpu_usage_seconds_total", (), node.get("cpu"))
    out += _memory("node_memory_working_set_bytes", (), node.get("memory"))
    swap = node.get("swap")
    if swap and swap.get("swapUsageBytes") is not None:
        # The kubelet stamps node swap with the *memory* time; mirrored on purpose.
        out.append(
            (
                "node_swap_usage_bytes",
                (),
                float(swap["swapUsageBytes"]),
                _ms((node.get("memory") or {}).get("time")),
            )
        )
    for pod in summary.get("pods", []):
        ref = pod["podRef"]
        pod_labels = (("namespace", ref.get("namespace", "")), ("pod", ref["name"]))
        for c in pod.get("containers", []):
            labels = (("container", c["name"]), *pod_labels)
            start = _ms(c.get("startTime"))
            if start is not None and start > 0:
                out.append(("container_start_time_seconds", labels, start / 1000, None))
            out += _cpu("container_cpu_usage_seconds_total", labels, c.get("cpu"))
            out += _memory("container_memory_working_set_bytes", labels, c.get("memory"))
            cswap = c.get("swap")
            if cswap:
                usage = cswap.get("swapUsageBytes")
                if usage is not None:
                    out.append(("container_swap_usage_bytes", labels, float(usage), _ms(cswap.get("time"))))
                if cswap.get("swapAvailableBytes") is not None:
                    limit = float(cswap["swapAvailableBytes"]) + float(usage or 0)
                    out.append(("container_swap_limit_bytes", labels, limit, _ms(cswap.get("time"))))
        out += _cpu("pod_cpu_usage_seconds_total", pod_labels, pod.get("cpu"))
        out += _memory("pod_memory_working_set_bytes", pod_labels, pod.get("memory"))
        pswap = pod.get("swap")
        if pswap and pswap.get("swapUsageBytes") is not None:
            out.append(
                ("pod_swap_usage_bytes", pod_labels, float(pswap["swapUsageBytes"]), _ms(pswap.get("time")))
            )
    return out


def render_resource_metrics(
    summary: dict, *, scrape_error: bool = False, legacy_scrape_error: bool = False
) -> bytes:
    """The /metrics/resource body for `summary` (text format 0.0.4).

    `scrape_error=True` renders what the kubelet serves when it cannot get stats: only
    the error gauge(s) set to 1.
    """
    samples = [] if scrape_error else _samples(summary)
    error = 1.0 if scrape_error else 0.0
    samples.append(("resource_scrape_error", (), error, None))
    if legacy_scrape_error:
        samples.append(("scrape_error", (), error, None))
    by_family: dict[str, list[_Sample]] = {}
    for sample in samples:
        by_family.setdefault(sample[0], []).append(sample)
    lines: list[str] = []
    for name in sorted(by_family):
        kind, help_text = _HELP[name]
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        # client_golang orders a family's metrics by label values, then timestamp.
        for _, labels, value, stamp in sorted(
            by_family[name], key=lambda s: ([v for _, v in s[1]], s[3] or 0)
        ):
            label_text = "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""
            suffix = f" {stamp}" if stamp is not None else ""
            lines.append(f"{name}{label_text} {go_float(value)}{suffix}")
    return ("\n".join(lines) + "\n").encode("utf-8")
