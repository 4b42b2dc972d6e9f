"""The aiohttp app: /metrics, /healthz, /readyz and a landing page."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import NAMESPACE, __version__
from exporter.bodies import SharedBodies, encode_body
from exporter.budget import SeriesPool
from exporter.config import Config
from exporter.deps import Deps
from exporter.expfmt import OPENMETRICS_TYPE, TEXT_TYPE, Family, wants_openmetrics
from exporter.families import Builder, Metric
from exporter.merge import merge
from exporter.labels import CommonLabels
from exporter.nodeinfo import NodeInfo, NodeTopology, fetch_gke_cluster, fetch_node
from exporter.podindex import PodIndex
from exporter.podstream import parse_podlist_bytes
from exporter.registry import Background, get
from exporter.runner import Outcome, Source, collect_all, self_metrics
from exporter.shard.pool import ShardPool
from exporter.web.landing import render as render_landing
from exporter.upstream import UpstreamError

log = logging.getLogger("kubebridge.server")
_MARGIN = 0.5  # seconds kept back from Prometheus' scrape timeout for encoding and transfer

BUILD = Metric(f"{NAMESPACE}_build_info", "gauge", "kubebridge version.", ("version",))
POD_METRICS = (
    Metric(f"{NAMESPACE}_pod_index_pods", "gauge", "Pods known to the pod index."),
    Metric(f"{NAMESPACE}_pod_index_last_sync_timestamp_seconds", "gauge", "When the pod index last synced."),
    Metric(f"{NAMESPACE}_pod_index_syncs_total", "counter", "Successful pod index refreshes."),
    Metric(f"{NAMESPACE}_pod_index_errors_total", "counter", "Failed pod index refreshes."),
)
POD_INDEX_STATUS = Metric(f"{NAMESPACE}_pod_index_status", "gauge",
                          "The pod list's last refresh: ok, not_permitted (403: series lose their "
                          "pod labels; fix the RBAC), down, or pending (not tried yet).", ("status",))
POD_INDEX_STATUSES = ("ok", "not_permitted", "down", "pending")
NODE_METRICS = (
    Metric(f"{NAMESPACE}_node_topology_last_sync_timestamp_seconds", "gauge",
           "When the agent last read its own Node object."),
    Metric(f"{NAMESPACE}_node_topology_syncs_total", "counter", "Successful reads of the agent's own Node."),
    Metric(f"{NAMESPACE}_node_topology_errors_total", "counter", "Failed reads of the agent's own Node."),
)
POD_UP = Metric(f"{NAMESPACE}_pod_index_up", "gauge", "1 if the last pod index refresh succeeded; "
                "0 if it failed (the last good listing is kept).")
POD_FAILURES = Metric(f"{NAMESPACE}_pod_index_sync_failures_total", "counter",
                      "Failed pod index refreshes by reason (connect, timeout, http_status, parse, "
                      "not_permitted, no_data, internal).", ("reason",))
MERGE_CONFLICTS = Metric(f"{NAMESPACE}_merge_type_conflicts", "gauge",
                         "Families dropped in the last scrape because another source exposes the "
                         "same name with another type.", ("collector",))


class State:
    """Everything the handlers need."""

    def __init__(self, config: Config, index: PodIndex | None, topology: NodeTopology | None = None) -> None:
        self.config = config
        self.index = index
        self.topology = topology
        self.sources: list[Source] = []
        self.shard: ShardPool | None = None  # cluster_collector: every (owned) node's kubelet
        self.background: list[tuple[str, Background]] = []
        self.bodies = SharedBodies(functools.partial(families_of, self))
        self.series = SeriesPool(config.series_limit, config.series_ttl)
        # kubebridge's own series: no `collector` of their own (theirs names the source they
        # describe), the cluster, and the global relabel rules.
        self.labels = CommonLabels("", config.cluster, "", config.relabel_configs, topology)
        self.process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.process)
        PlatformCollector(registry=self.process)
        GCCollector(registry=self.process)

    def exporter_metrics(self) -> list[Family]:
        """Build info, pod index state and process metrics."""
        b = Builder([BUILD, *POD_METRICS, POD_INDEX_STATUS, POD_UP, POD_FAILURES, *NODE_METRICS], self.labels)
        b.add(BUILD, 1, {"version": __version__})
        if self.index is not None:
            for metric, value in zip(POD_METRICS, (len(self.index), self.index.last_sync,
                                                   self.index.syncs, self.index.errors)):
                b.add(metric, value)
            now = self.index.status or "pending"
            for st in POD_INDEX_STATUSES:
                b.add(POD_INDEX_STATUS, 1.0 if st == now else 0.0, {"status": st})
            b.add(POD_UP, 1.0 if self.index.up else 0.0)
            for reason, n in sorted(self.index.failures.items()):
                b.add(POD_FAILURES, n, {"reason": reason})
        if self.topology is not None:
            topo = self.topology
            for metric, value in zip(NODE_METRICS, (topo.last_sync, topo.syncs, topo.errors)):
                b.add(metric, value)
        if not self.config.disable_exporter_metrics:
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
    scrapes share the bodies built from their sources' runs (SharedBodies)."""
    state: State = request.app[STATE]
    limit = budget(request.headers, state.config.scrape_timeout)
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    compress = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    if state.shard is None:
        # (no local holds the outcomes while the body is built: the build holds what it needs)
        body = await state.bodies.get(await collect_all(state.sources, limit), openmetrics, compress)
    else:
        # The cluster collector's nodes, concurrently with the other sources. Their runs carry
        # no sequence number, so each scrape encodes its own body.
        outcomes, (nodes, about) = await asyncio.gather(collect_all(state.sources, limit),
                                                        state.shard.collect(limit))
        families = families_of(state, outcomes, nodes, about)
        del outcomes, nodes, about
        body = await asyncio.to_thread(encode_body, families, openmetrics, compress)
    headers = {"Content-Type": OPENMETRICS_TYPE if openmetrics else TEXT_TYPE, "Vary": "Accept-Encoding"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


def families_of(state: State, outcomes: Sequence[Outcome], nodes: Sequence[Family] = (),
                about: Sequence[Family] = ()) -> list[Family]:
    """Every family of one body: the sources' (one HELP/TYPE per name) and kubebridge's own."""
    families, conflicts = merge([(o.name, o.families) for o in outcomes] + [("nodes", nodes)])
    own = self_metrics(state.sources, outcomes, state.labels) + list(about)
    b = Builder([MERGE_CONFLICTS], state.labels)
    for src in state.sources:
        b.add(MERGE_CONFLICTS, conflicts.get(src.name, 0), {"collector": src.name})
    extra = own + b.families() + state.exporter_metrics()
    return merge([("self", extra), ("sources", families)])[0]


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
    """Ready means "can serve": once the pod index's first refresh succeeded or was refused
    (403, reported by kubebridge_pod_index_status); not while the kubelet is unreachable."""
    state: State = request.app[STATE]
    if state.index is not None and not state.index.settled.is_set():
        return web.Response(status=503, text="pod index not synced yet\n")
    if state.shard is not None and not state.shard.settled():
        return web.Response(status=503, text="node list not synced yet\n")
    return web.Response(text="ok\n")


async def landing(request: web.Request) -> web.Response:
    """The landing page (exporter/web/landing.py)."""
    state: State = request.app[STATE]
    return web.Response(text=render_landing(state.config, state.sources, state.index, state.series),
                        content_type="text/html")


def build_app(config: Config, *, index: PodIndex | None = None,
              session: aiohttp.ClientSession | None = None) -> web.Application:
    """The application; `index`/`session` may be injected by tests."""
    app = web.Application()
    sharded = config.cluster_collector.enabled
    needs_pods = not sharded and any(get(c.name).scope == "node" for c in config.enabled())
    own_index = index is None
    if own_index and needs_pods:
        index = PodIndex(config.label_policy)
    topo = config.node_topology
    topology = None
    if needs_pods and topo.enabled and config.node_name:
        topology = NodeTopology(config.node_name, "node_labels" in topo.cluster_from)
    elif needs_pods and topo.enabled:
        log.warning("node_topology is on but node_name (NODE_NAME) is not set: no region/zone labels")
    state = State(config, index, topology)
    if sharded:  # the node collectors run per node, in the pool (exporter/shard)
        state.shard = ShardPool(config)
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle(session, own_index))
    app.router.add_get(config.telemetry_path, metrics)
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
        deps = Deps(state.config, session, state.index, topology=state.topology)
        sharded = state.shard is not None
        if not sharded and any(get(c.name).scope == "node" for c in state.config.enabled()):
            # (scope "pod", the sidecar: no kubelet). The kubelet is node-local: identity encoding.
            # Through the API server's node proxy (docs/topology.md) the bytes cross the network
            # twice: ask for gzip there.
            proxied = "/api/v1/nodes/" in state.config.kubelet.url
            deps.kubelet = deps.upstream(state.config.kubelet, compressed=proxied)
        for c in state.config.enabled():
            if sharded and get(c.name).scope == "node":
                continue
            collector = get(c.name).factory(deps, c)
            state.sources.append(Source(
                c.name, collector, c.timeout, max_body=state.config.body_limit(c),
                series=state.series.budget(c.name, state.config.source_limit(c))))
            if isinstance(collector, Background):
                state.background.append((c.name, collector))
        tasks = [asyncio.create_task(b.run(), name=f"bg:{n}") for n, b in state.background]
        if state.index is not None and own_index:
            interval = state.config.pod_refresh_interval
            tasks.append(asyncio.create_task(state.index.run(
                lambda: _fetch_pods(deps), interval, timeout=min(30.0, max(1.0, interval))),
                name="podindex"))
        if state.shard is not None:
            tasks.append(asyncio.create_task(state.shard.run(session), name="shard"))
        if state.topology is not None:
            tasks.append(asyncio.create_task(state.topology.run(
                _node_reader(deps, state.topology), state.config.node_topology.refresh_interval),
                name="node-topology"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if injected is None:
                await session.close()
    return ctx


def _node_reader(deps: Deps, topology: NodeTopology) -> Callable[[], Awaitable[NodeInfo]]:
    """One read of the agent's own Node (and, opted in and while unknown, the GKE cluster name)."""
    cfg = deps.config.node_topology
    api = deps.upstream(cfg.apiserver, max_bytes=4 << 20)
    allow = frozenset(cfg.labels)
    gke = "gke_metadata" in cfg.cluster_from and not deps.config.cluster

    async def read() -> NodeInfo:
        info = await fetch_node(api, topology.name, allow, cfg.roles)
        if gke and not info.cluster and not topology.platform_cluster and deps.session is not None:
            try:
                topology.set_platform_cluster(await fetch_gke_cluster(deps.session, cfg.gke_metadata_url))
            except (aiohttp.ClientError, OSError, TimeoutError, UpstreamError) as exc:
                log.info("GKE metadata: no cluster name (%s)", exc)
        return info
    return read


async def _fetch_pods(deps: Deps) -> dict:
    """The kubelet's /pods as a listing; a body that is not a PodList raises ParseError."""
    assert deps.kubelet is not None
    resp = await deps.kubelet.request("/pods", accept="application/json")
    return await parse_podlist_bytes(resp.body)


def split_address(addr: str) -> tuple[str, int]:
    """`host:port` -> (host, port); `[::1]:9500` works too."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


__all__: Sequence[str] = ["build_app", "split_address", "State", "STATE"]
