"""Running collectors: single flight per source, per-source budgets, isolation, self-metrics."""
from __future__ import annotations

import asyncio
import logging
import itertools
import time
from dataclasses import dataclass, field, replace
from collections.abc import Mapping, Sequence

from exporter import NAMESPACE
from exporter.budget import SeriesBudget
from exporter.errors import describe
from exporter.expfmt import Family
from exporter.failures import STATUS as REASON_STATUS, FailureLog, classify
from exporter.families import Builder, Metric
from exporter.registry import Collector
from exporter.labels import CommonLabels
from exporter.upstream import BODY_LIMIT

log = logging.getLogger("kubebridge.runner")
STATUSES = ("ok", "down", "not_permitted", "no_data")
_GRACE = 0.05  # seconds a run's starter waits past the run's own deadline
_SEQ = itertools.count(1)


@dataclass
class Outcome:
    """One collector run."""

    name: str
    families: Sequence[Family] = ()
    status: str = "ok"
    reason: str = ""
    detail: str = ""  # the error in one line (no reprs, no secrets), for logs and the landing page
    seconds: float = 0.0
    stats: Mapping[str, float] = field(default_factory=dict)
    # Unique per Outcome: scrapes that got the same outcomes of every source (they joined the
    # same runs) see the same state and share one encoded body (server.SharedBodies).
    seq: int = field(default_factory=lambda: next(_SEQ))


class Source:
    """A collector plus its single-flight state and error counters."""

    def __init__(self, name: str, collector: Collector, timeout: float = 0.0, *,
                 max_body: int | None = None, series: SeriesBudget | None = None) -> None:
        self.name = name
        self.collector = collector
        self.timeout = timeout  # the source's own cap (0: the scrape budget alone)
        self.max_body = max_body  # the source's body cap (None: each upstream's own)
        self.series = series  # the source's cardinality budget (None: unbounded)
        self.errors: dict[str, int] = {}
        self.last: Outcome | None = None
        self.last_ok = 0.0  # wall clock of the last collection that was not an error (0: never)
        self.last_error: Outcome | None = None
        self.last_error_at = 0.0
        self._inflight: asyncio.Future[Outcome] | None = None
        self._log = FailureLog(log, f"collector {name}")

    async def collect(self, budget: float) -> Outcome:
        """Run the collector, or join the run already in flight (concurrent scrapes share one
        upstream fetch). Either way the caller waits at most its own budget: a run started by
        a caller with a longer one reads as a timeout to this caller, and goes on for others."""
        if self.timeout:
            budget = min(budget, self.timeout)
        inflight, wait = self._inflight, budget
        if inflight is None:
            inflight = self._inflight = asyncio.ensure_future(self._run(budget))
            inflight.add_done_callback(self._clear)
            wait += _GRACE  # (the run's own deadline reports the timeout, with its stats)
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(inflight)
        except TimeoutError:
            if inflight.done():  # (the run itself timed out at the same moment)
                return inflight.result()
            return Outcome(self.name, status="down", reason="timeout", seconds=budget)

    def _clear(self, _: asyncio.Future[Outcome]) -> None:
        self._inflight = None

    async def _run(self, budget: float) -> Outcome:
        start = time.perf_counter()
        out = Outcome(self.name)
        if self.max_body is not None:
            BODY_LIMIT.set(self.max_body)  # (this run's task: every upstream read applies it)
        try:
            async with asyncio.timeout(budget):
                out.families = list(await self.collector.collect(budget))
            if self.series is not None:
                out.families = self.series.admit(out.families)
            self._log.ok()
        except Exception as exc:  # never BaseException: cancellation must propagate
            out.reason = classify(exc)
            out.status = REASON_STATUS.get(out.reason, "down")
            out.detail = describe(exc)
            self._log.failed(out.reason, exc)
        if out.reason and out.reason != "no_data":  # (absent is not a failure)
            self.errors[out.reason] = self.errors.get(out.reason, 0) + 1
            self.last_error, self.last_error_at = out, time.time()
        else:
            self.last_ok = time.time()
        out.seconds = time.perf_counter() - start
        out.stats = dict(getattr(self.collector, "stats", {}) or {})
        # What the landing page and the self-metrics read; not the families, which would stay
        # alive until the next run (a 250-pod node's cAdvisor output is about 20 MB).
        self.last = replace(out, families=())
        return out


async def collect_all(sources: Sequence[Source], budget: float) -> list[Outcome]:
    """Run every source concurrently; one slow or broken source cannot affect the others."""
    return list(await asyncio.gather(*(s.collect(budget) for s in sources)))


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_{name}", kind, help, ("collector", *labels))


UP = _m("up", "gauge", "1 if the source's last collection succeeded, else 0.")
STATUS = _m("source_status", "gauge", "The source's state: ok, down, not_permitted (401/403: "
            "expected on managed control planes, not an outage) or no_data (endpoint absent).",
            "status")
DURATION = _m("scrape_duration_seconds", "gauge", "How long the source's collection took.")
ERRORS = _m("scrape_errors_total", "counter", "Failed collections by reason.", "reason")
# Per-collection statistics a collector reports in `stats`: key -> declared family.
STATS = {
    "response_bytes": _m("upstream_response_bytes", "gauge", "Size of the upstream's last response body."),
    "series_in": _m("series_in", "gauge", "Sample lines read from the upstream in the last collection."),
    "series_out": _m("series_out", "gauge", "Series exposed for the source after join and relabel."),
    "join_misses": _m("join_misses", "gauge", "Series naming a pod missing from the pod index."),
    "malformed": _m("malformed_lines", "gauge",
                    "Upstream lines rejected as malformed in the last collection."),
    "dropped": _m("series_dropped", "gauge",
                  "Series dropped by classification, relabeling or deduplication."),
}
SERIES_LIMIT = _m("series_limit", "gauge", "The source's series cap (the cardinality budget).")
SERIES_KNOWN = _m("series_known", "gauge",
                  "Series the source exposed within the budget's memory (they count against it).")
SERIES_REFUSED = _m("series_refused_total", "counter",
                    "New series refused because the source's or the overall series cap was reached.")
SELF_METRICS = (UP, STATUS, DURATION, ERRORS, *STATS.values(), SERIES_LIMIT, SERIES_KNOWN, SERIES_REFUSED)


def self_metrics(sources: Sequence[Source], outcomes: Sequence[Outcome],
                 labels: CommonLabels) -> list[Family]:
    """The kubebridge_* families about each source (`collector` names the source described)."""
    b = Builder(SELF_METRICS, labels)
    for src, o in zip(sources, outcomes):
        c = {"collector": o.name}
        b.add(UP, 1.0 if o.status == "ok" else 0.0, c)
        for st in STATUSES:
            b.add(STATUS, 1.0 if o.status == st else 0.0, {**c, "status": st})
        b.add(DURATION, o.seconds, c)
        for reason in sorted(src.errors):
            b.add(ERRORS, src.errors[reason], {**c, "reason": reason})
        for key, metric in STATS.items():
            if key in o.stats:
                b.add(metric, o.stats[key], c)
        if src.series is not None:
            b.add(SERIES_LIMIT, src.series.limit, c)
            b.add(SERIES_KNOWN, len(src.series.known), c)
            b.add(SERIES_REFUSED, src.series.refused_total, c)
    return b.families()
