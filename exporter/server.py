"""The aiohttp app: /metrics, /healthz, /readyz and a landing page."""
from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import NAMESPACE, __version__
from exporter.bodies import SharedBodies, gzip_body
from exporter.budget import SeriesPool
from exporter.config import Config
from exporter.deps import Deps
from exporter.expfmt import (OPENMETRICS_TYPE, TEXT_TYPE, Family, encode_openmetrics, encode_text,
                             wants_openmetrics)
from exporter.families import Builder, Metric
from exporter.merge import merge
from exporter.transform.labels import CommonLabels
from exporter.podindex import PodIndex
from exporter.podstream import parse_podlist_bytes
from exporter.registry import Background, get
from exporter.runner import Outcome, Source, collect_all, self_metrics

log = logging.getLogger("kubebridge.server")
_MARGIN = 0.5  # seconds kept back from Prometheus' scrape timeout for encoding and transfer

BUILD = Metric(f"{NAMESPACE}_build_info", "gauge", "kubebridge version.", ("version",))
POD_METRICS = (
    Metric(f"{NAMESPACE}_pod_index_pods", "gauge", "Pods known to the pod index."),
    Metric(f"{NAMESPACE}_pod_index_last_sync_timestamp_seconds", "gauge", "When the pod index last synced."),
    Metric(f"{NAMESPACE}_pod_index_syncs_total", "counter", "Successful pod index refreshes."),
    Metric(f"{NAMESPACE}_pod_index_errors_total", "counter", "Failed pod index refreshes."),
)
MERGE_CONFLICTS = Metric(f"{NAMESPACE}_merge_type_conflicts", "gauge",
                         "Families dropped in the last scrape because another source exposes the "
                         "same name with another type.", ("collector",))


class State:
    """Everything the handlers need."""

    def __init__(self, config: Config, index: PodIndex | None) -> None:
        self.config = config
        self.index = index
        self.sources: list[Source] = []
        self.background: list[tuple[str, Background]] = []
        self.bodies = SharedBodies()
        self.series = SeriesPool(config.series_limit, config.series_ttl)
        # kubebridge's own series: no `collector` of their own (theirs names the source they
        # describe), the cluster, and the global relabel rules.
        self.labels = CommonLabels("", config.cluster, "", config.relabel_configs)
        self.process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.process)
        PlatformCollector(registry=self.process)
        GCCollector(registry=self.process)

    def exporter_metrics(self) -> list[Family]:
        """Build info, pod index state and process metrics."""
        b = Builder([BUILD, *POD_METRICS], self.labels)
        b.add(BUILD, 1, {"version": __version__})
        if self.index is not None:
            for metric, value in zip(POD_METRICS, (len(self.index), self.index.last_sync,
                                                   self.index.syncs, self.index.errors)):
                b.add(metric, value)
        add_registry(b, self.process)
        return b.families()


STATE = web.AppKey("state", State)


_CLIENT_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}


def add_registry(b: Builder, registry: CollectorRegistry) -> None:
    """prometheus_client's process, platform and GC collectors, read as samples (no text
    encoded and parsed again). A counter's family is named with its `_total`, as the text
    format names it; `_created` samples are left out."""
    for mf in registry.collect():
        kind = _CLIENT_TYPES.get(mf.type, "untyped")
        name = mf.name + "_total" if kind == "counter" else mf.name
        metric = Metric(name, kind, mf.documentation)
        for s in mf.samples:
            if s.name.endswith("_created") and s.name != name:
                continue
            b.add(metric, s.value, s.labels, suffix=s.name[len(name):] if s.name.startswith(name) else "")


_MAX_BUDGET = 120.0  # seconds: a header asking for more (or `inf`) is clamped to this


def budget(headers: Mapping[str, str], default: float) -> float:
    """Per-source time budget: Prometheus' scrape timeout minus a margin, else the default;
    clamped to 0.5 s .. _MAX_BUDGET (NaN and garbage read as absent)."""
    raw = headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    try:
        value = float(raw) - _MARGIN if raw else default
    except ValueError:
        value = default
    if value != value:  # NaN
        value = default
    return max(0.5, min(value, _MAX_BUDGET))


async def metrics(request: web.Request) -> web.Response:
    """One scrape of every enabled source; always 200 with per-source status. Concurrent
    scrapes that joined the same runs share one encoded body and one gzip (SharedBodies)."""
    state: State = request.app[STATE]
    outcomes = await collect_all(state.sources, budget(request.headers, state.config.scrape_timeout))
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    key = state.bodies.key([o.seq for o in outcomes], openmetrics)
    compress = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    body = await state.bodies.get(key, lambda: _encode(state, outcomes, openmetrics), compress)
    headers = {"Content-Type": OPENMETRICS_TYPE if openmetrics else TEXT_TYPE, "Vary": "Accept-Encoding"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


def _encode(state: State, outcomes: Sequence[Outcome], openmetrics: bool) -> bytes:
    families, conflicts = merge((o.name, o.families) for o in outcomes)
    own = self_metrics(state.sources, outcomes, state.labels)
    b = Builder([MERGE_CONFLICTS], state.labels)
    for src in state.sources:
        b.add(MERGE_CONFLICTS, conflicts.get(src.name, 0), {"collector": src.name})
    extra = own + b.families() + state.exporter_metrics()
    families, _ = merge([("self", extra), ("sources", families)])
    return encode_openmetrics(families) if openmetrics else encode_text(families)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (`q=0` refuses it)."""
    for part in header.split(","):
        coding, *params = [p.strip() for p in part.split(";")]
        if coding.lower() in ("gzip", "*"):
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once the pod index has synced (if this instance joins pods)."""
    state: State = request.app[STATE]
    if state.index is not None and not state.index.synced.is_set():
        return web.Response(status=503, text="pod index not synced yet\n")
    return web.Response(text="ok\n")


async def landing(request: web.Request) -> web.Response:
    """A small HTML page with links and each source's last state."""
    state: State = request.app[STATE]
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.last.status if s.last else 'not scraped yet'}</td>"
        f"<td>{s.last.seconds * 1000:.1f} ms</td></tr>" if s.last else
        f"<tr><td>{html.escape(s.name)}</td><td>not scraped yet</td><td></td></tr>"
        for s in state.sources)
    pods = f"<p>Pod index: {len(state.index)} pods</p>" if state.index is not None else ""
    series = "".join(
        f"<li>{html.escape(s.name)}: {len(s.series.known):,} of {s.series.limit:,} series, "
        f"{s.series.refused_total:,} refused</li>" for s in state.sources if s.series is not None)
    pods += (f"<p>Series budget ({state.series.known():,} of {state.series.limit:,} over all "
             f"sources):</p><ul>{series}</ul>")
    page = (f"<!doctype html><html><head><title>kubebridge</title></head><body>"
            f"<h1>kubebridge {__version__}</h1><ul><li><a href='metrics'>/metrics</a></li>"
            f"<li><a href='healthz'>/healthz</a></li><li><a href='readyz'>/readyz</a></li></ul>"
            f"{pods}<table border=1><tr><th>source</th><th>status</th><th>duration</th></tr>"
            f"{rows}</table></body></html>")
    return web.Response(text=page, content_type="text/html")


def build_app(config: Config, *, index: PodIndex | None = None,
              session: aiohttp.ClientSession | None = None) -> web.Application:
    """The application; `index`/`session` may be injected by tests."""
    app = web.Application()
    needs_pods = any(get(c.name).scope == "node" for c in config.enabled())
    own_index = index is None
    if own_index and needs_pods:
        index = PodIndex(config.label_policy)
    state = State(config, index)
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle(session, own_index))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    return app


def _lifecycle(injected: aiohttp.ClientSession | None, own_index: bool):
    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state: State = app[STATE]
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=30)
        session = injected or aiohttp.ClientSession(timeout=timeout)
        deps = Deps(state.config, session, state.index)
        if any(get(c.name).scope == "node" for c in state.config.enabled()):
            # (scope "pod", the sidecar: no kubelet). The kubelet is node-local: identity encoding.
            deps.kubelet = deps.upstream(state.config.kubelet, compressed=False)
        for c in state.config.enabled():
            collector = get(c.name).factory(deps, c)
            state.sources.append(Source(
                c.name, collector, c.timeout, max_body=state.config.body_limit(c),
                series=state.series.budget(c.name, state.config.source_limit(c))))
            if isinstance(collector, Background):
                state.background.append((c.name, collector))
        tasks = [asyncio.create_task(b.run(), name=f"bg:{n}") for n, b in state.background]
        if state.index is not None and own_index:
            tasks.append(asyncio.create_task(state.index.run(
                lambda: _fetch_pods(deps), state.config.pod_refresh_interval), name="podindex"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if injected is None:
                await session.close()
    return ctx


async def _fetch_pods(deps: Deps) -> dict:
    assert deps.kubelet is not None
    resp = await deps.kubelet.request("/pods", accept="application/json")
    return await parse_podlist_bytes(resp.body)


def serve(app: web.Application, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT; shutdown stays well inside Kubernetes' 30 s grace period."""
    web.run_app(app, host=host or None, port=port, shutdown_timeout=5.0, access_log=None,
                print=lambda *a: None, handle_signals=True)


def split_address(addr: str) -> tuple[str, int]:
    """`host:port` -> (host, port); `[::1]:9500` works too."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


__all__: Sequence[str] = ["build_app", "gzip_body", "serve", "split_address", "State", "STATE"]
