"""The landing page at `/`, in the style of exporter-toolkit's (a coloured header, the version,
links), plus what an operator needs in the first minute: each source's status, the reason for
its last error, when it last succeeded, its series in and out, and the pod index's state.

Contract: everything shown is escaped (collector names are ours, but error text quotes
upstreams); the page is self-contained (no script, no external resource) and carries stable
ids and classes (`#sources`, `tr.source[data-collector]`, `td.status`, `#pod-index`) that the
browser test reads.
"""
from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass

from exporter import __version__
from exporter.budget import SeriesPool
from exporter.config import Config
from exporter.podindex import PodIndex
from exporter.runner import Source

HEADER_COLOR = "#e6522c"  # exporter-toolkit's default
_CSS = """
body { font-family: -apple-system,BlinkMacSystemFont,Segoe UI,Roboto,Helvetica Neue,Arial,Noto Sans,
  Liberation Sans,sans-serif; margin: 0; }
header { background-color: HEADER_COLOR; color: #fff; font-size: 1rem; padding: 1rem; }
header h1 { margin: 0; }
main { padding: 1rem; }
table { border-collapse: collapse; margin-top: .5rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; font-weight: 600; }
.down { color: #cf222e; font-weight: 600; }
.not_permitted { color: #9a6700; font-weight: 600; }
.no_data, .pending { color: #57606a; }
.detail { font-family: monospace; font-size: .85rem; max-width: 40rem; word-break: break-word; }
""".replace("HEADER_COLOR", HEADER_COLOR)


@dataclass(frozen=True)
class Link:
    """One link of the list under the header."""

    path: str
    text: str
    description: str


def _ago(at: float, now: float) -> str:
    if not at:
        return "never"
    secs = max(0, int(now - at))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    if secs < 120:
        rel = f"{secs}s ago"
    elif secs < 7200:
        rel = f"{secs // 60}m ago"
    else:
        rel = f"{secs // 3600}h ago"
    return f'<time datetime="{stamp}" title="{stamp}">{rel}</time>'


def _num(stats: dict[str, float] | None, key: str) -> str:
    if not stats or key not in stats:
        return ""
    return f"{int(stats[key]):,}"


def _source_row(s: Source, now: float) -> str:
    e = html.escape
    last = s.last
    status = last.status if last else "pending"
    shown = {"pending": "not scraped yet"}.get(status, status)
    err = s.last_error
    reason = f"{e(err.reason)}" if err else ""
    detail = f"{e(err.detail)} ({_ago(s.last_error_at, now)})" if err else ""
    stats = dict(last.stats) if last else None
    duration = f"{last.seconds * 1000:.1f} ms" if last else ""
    return (f'<tr class="source" data-collector="{e(s.name)}"><td>{e(s.name)}</td>'
            f'<td class="status {e(status)}">{e(shown)}</td><td class="reason">{reason}</td>'
            f'<td class="detail">{detail}</td><td class="last-ok">{_ago(s.last_ok, now)}</td>'
            f'<td class="series-in num">{_num(stats, "series_in")}</td>'
            f'<td class="series-out num">{_num(stats, "series_out")}</td>'
            f'<td class="duration num">{duration}</td></tr>')


def _pod_index(index: PodIndex | None, now: float) -> str:
    if index is None:
        return ""
    e = html.escape
    status = index.status or "pending"
    detail = f'<div class="detail">{e(index.detail)}</div>' if index.detail else ""
    hint = ('<p>The kubelet refused the pod list: series are served without pod labels, '
            'workload and node. Grant <code>nodes/pods</code> (Kubernetes 1.33 and later) or '
            '<code>nodes/proxy</code> (before 1.33) to the service account.</p>'
            if status == "not_permitted" else "")
    return (f'<section id="pod-index"><h2>Pod index</h2><p>Status: <span class="status {e(status)}">'
            f'{e(status)}</span>, {len(index)} pods, last synced {_ago(index.last_sync, now)}, '
            f'{index.errors} failed refreshes.</p>{detail}{hint}</section>')


def _series(pool: SeriesPool | None, sources: Sequence[Source]) -> str:
    if pool is None:
        return ""
    e = html.escape
    rows = "".join(f'<li data-collector="{e(s.name)}">{e(s.name)}: {len(s.series.known):,} of '
                   f'{s.series.limit:,} series, {s.series.refused_total:,} refused</li>'
                   for s in sources if s.series is not None)
    return (f'<section id="series-budget"><h2>Series budget</h2><p>{pool.known():,} of '
            f'{pool.limit:,} series over all sources; past a source\'s budget its newest series are '
            f'refused (kubebridge_series_refused_total), the known ones keep flowing.</p>'
            f'<ul>{rows}</ul></section>')


def render(config: Config, sources: Sequence[Source], index: PodIndex | None,
           series: SeriesPool | None = None) -> str:
    """The whole page."""
    e = html.escape
    now = time.time()
    links = [Link(config.telemetry_path.lstrip("/"), config.telemetry_path, "the metrics"),
             Link("healthz", "/healthz", "liveness: the process answers"),
             Link("readyz", "/readyz", "readiness: the pod index has synced, or was refused")]
    items = "".join(f'<li><a href="{e(lk.path)}">{e(lk.text)}</a>: {e(lk.description)}</li>' for lk in links)
    rows = "".join(_source_row(s, now) for s in sources) or \
        '<tr><td colspan="8">no collector is enabled</td></tr>'
    where = []
    if config.node_name:
        where.append(f"node <b>{e(config.node_name)}</b>")
    if config.cluster:
        where.append(f"cluster <b>{e(config.cluster)}</b>")
    if any(s.name in ("cadvisor", "kubelet", "probes", "resource", "pods", "stats_summary") for s in sources):
        where.append(f"kubelet <code>{e(config.kubelet.url)}</code>")
    return (f'<!doctype html><html lang="en"><head><meta charset="UTF-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1.0">'
            f'<title>kubebridge</title><style>{_CSS}</style></head><body>'
            f'<header><h1>kubebridge</h1></header><main>'
            f'<h2>Prometheus exporter that joins Kubernetes pod metadata onto kubelet, cAdvisor, '
            f'etcd and apiserver series</h2><div>Version: <span id="version">{e(__version__)}</span>'
            f'</div><div>{", ".join(where)}</div><div><ul id="links">{items}</ul></div>'
            f'<section id="sources-section"><h2>Sources</h2><table id="sources"><thead><tr>'
            f'<th>collector</th><th>status</th><th>reason</th><th>last error</th>'
            f'<th>last success</th><th>series in</th><th>series out</th><th>duration</th></tr>'
            f'</thead><tbody>{rows}</tbody></table></section>{_pod_index(index, now)}'
            f'{_series(series, sources)}</main></body></html>')
