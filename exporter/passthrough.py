"""The shape shared by every Prometheus-format source: fetch one path, transform, report."""
from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple
from collections.abc import Hashable, Sequence

from exporter import malloc
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import ParseError
from exporter.expfmt import Family
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.transform import EVERYTHING, NoHook, Options, Pairs, Payload, Result, SeriesHook, Transformer
from exporter.transform.hooks import Changes
from exporter.labels import CommonLabels, NodeLabels
from exporter.upstream import Response, Upstream, is_openmetrics

# Payloads smaller than this are transformed on the event loop; larger ones in a thread so
# /healthz and other scrapes stay responsive during a cold multi-megabyte transform.
_INLINE_BYTES = 256 << 10


class SerialTransform:
    """A transformer run off the event loop for large payloads, one transform at a time.

    Invariant: a transform that outlives its scrape (the scrape's deadline cancelled the
    wait, not the thread) finishes before the next one starts on the same transformer, and
    its result is discarded. A waiting scrape waits within its own deadline. A finished
    transform's result is not kept here (its families would stay alive until the next one)."""

    def __init__(self, transformer: Transformer) -> None:
        self.transformer = transformer
        self._turn = asyncio.Lock()  # callers take turns...
        self._running: asyncio.Future[Result] | None = None  # ...and wait for a thread left running

    async def run(self, payload: Payload, openmetrics: bool) -> Result:
        """Transform one payload (the transform takes the body: see Payload)."""
        async with self._turn:
            running = self._running
            if running is not None and not running.done():
                with contextlib.suppress(Exception):  # a transform an earlier scrape gave up on
                    await asyncio.shield(running)
            if payload.size <= _INLINE_BYTES:
                return self.transformer.transform(payload, openmetrics)
            loop = asyncio.get_running_loop()
            transform = functools.partial(self.transformer.transform, payload, openmetrics)
            running = self._running = loop.run_in_executor(None, malloc.large, transform)
            running.add_done_callback(self._done)
            return await asyncio.shield(running)

    def _done(self, done: asyncio.Future[Result]) -> None:
        if not done.cancelled():
            done.exception()  # (an abandoned transform's error: its scrape reported its own)
        if self._running is done:
            self._running = None


@dataclass(frozen=True)
class _SharedLabels(Options):
    """Options whose CommonLabels is the collector's own object (Deps.labels), which carries
    the live node topology, rather than a copy made of the fields."""

    common: CommonLabels | None = None

    @property
    def labels(self) -> CommonLabels:
        return self.common if self.common is not None else super().labels


class TopologyEviction:
    """A series hook that also reports every cached rewrite stale when the node topology
    changed since the last transform (the topology's labels are in every rewrite)."""

    def __init__(self, inner: SeriesHook, topology: NodeLabels) -> None:
        self.inner = inner
        self.topology = topology
        self._generation = topology.generation

    def variant(self, family: str) -> Hashable:
        return self.inner.variant(family)

    def rewrite(self, variant: Hashable, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        return self.inner.rewrite(variant, pairs, pod)

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        changes = self.inner.prepare(lines, index)
        if self.topology.generation != self._generation:
            self._generation = self.topology.generation
            return EVERYTHING
        return changes


class Passthrough:
    """Base for passthrough collectors: set `path`, optionally `hook`, `pod_scoped` and
    `may_be_empty`."""

    path = "/metrics"
    pod_scoped = True
    may_be_empty = False  # True: an empty body is an answer with no series (not a parse error)

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        labels = deps.labels(cfg, node=self.pod_scoped)
        hook = self.hook(cfg)
        if labels.topology is not None:
            hook = TopologyEviction(hook or NoHook(), labels.topology)
        self.transformer = Transformer(
            _SharedLabels(collector=labels.collector, cluster=labels.cluster, rules=labels.rules,
                          keep_timestamps=bool(cfg.options.get("keep_timestamps", False)),
                          pod_labels=self.pod_scoped, node=labels.node, common=labels),
            deps.index if self.pod_scoped else None, hook)
        self._serial = SerialTransform(self.transformer)

    def hook(self, cfg: CollectorConfig) -> SeriesHook | None:
        """The source's series hook (None: identity)."""
        return None

    def upstream(self) -> Upstream:
        """Where `path` is fetched from (the node's kubelet by default)."""
        if self.deps.kubelet is None:
            raise RuntimeError("no kubelet upstream configured")
        return self.deps.kubelet

    async def collect(self, budget: float) -> Sequence[Family]:
        """Fetch (split into lines as it streams in) and transform."""
        return await self._transform(await self.upstream().request(self.path, split=True))

    async def _transform(self, resp: Response) -> Sequence[Family]:
        """Transform a response, taking its body or lines (the response keeps neither)."""
        body = take_body(resp)
        res = await self._serial.run(body.payload, is_openmetrics(resp.content_type))
        self._report(res, body.size)
        check_payload(body.blank, res, self.may_be_empty)
        return res.families

    def process(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Offline entry point (`kubebridge transform`)."""
        res = self.transformer.transform(payload, openmetrics)
        self._report(res, len(payload))
        return res

    def _report(self, res: Result, size: int) -> None:
        self.stats = {"response_bytes": size, "series_in": res.series_in,
                      "series_out": res.series_out, "join_misses": res.join_misses,
                      "malformed": res.malformed, "dropped": res.dropped}


class TakenBody(NamedTuple):
    """A response's body handed to a transform, with what the caller still needs of it."""

    payload: Payload
    size: int
    blank: bool


def take_body(resp: Response) -> TakenBody:
    """The response's body (or lines) as a Payload; the response keeps neither."""
    if resp.lines is not None:
        taken = TakenBody(Payload(lines=resp.lines, size=resp.size), resp.size, resp.blank)
        resp.lines = None
    else:
        taken = TakenBody(Payload(resp.body), len(resp.body), is_blank(resp.body))
        resp.body = b""
    return taken


def is_blank(body: bytes) -> bool:
    """Whether a body is empty or only whitespace (without the copy `body.strip()` makes)."""
    return not body or body.isspace()


def check_payload(blank: bool, res: Result, may_be_empty: bool = False) -> None:
    """Raise ParseError for an answer that is no exposition: an empty body (`blank`, unless the
    source may legitimately have no series), or one whose every sample line was rejected (an
    HTML login page, JSON, binary garbage). A body with some good lines is served, the rest
    counted."""
    if blank:
        if may_be_empty:
            return
        raise ParseError("empty body")
    if res.malformed and res.malformed >= res.series_in:
        first = res.errors[0] if res.errors else None
        why = f": {first.reason}" if first else ""
        raise ParseError(f"no valid sample among {res.malformed} lines{why}")


def options_table(**extra: Any) -> dict[str, Any]:
    """Options every passthrough collector accepts."""
    from exporter.registry import Option
    return {"keep_timestamps": Option(False, help="Keep upstream sample timestamps."), **extra}
