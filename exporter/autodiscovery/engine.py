"""The engine shared by `autodiscovery` and `sidecar`: the current targets (`exporter.autodiscovery.target`),
scraped concurrently, their limits as options, and the self-metrics table.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any
from collections.abc import Mapping, Sequence

import aiohttp

from exporter import NAMESPACE
from exporter.autodiscovery.target import Cut, Key, Limits, Target, TargetSpec
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.merge import merge
from exporter.transform import Result
from exporter.pods import PodMeta
from exporter.registry import Option

log = logging.getLogger("kubebridge.autodiscovery")
__all__ = ["Engine", "Key", "LIMIT_OPTIONS", "TargetSpec", "identity", "own_port", "positive"]


def positive(value: Any) -> str | None:
    """Option check: a positive number."""
    return None if value > 0 else "must be positive"


LIMIT_OPTIONS = {
    "max_body_bytes": Option(10 << 20, positive, "Per target: largest response body (decompressed)."),
    "max_series": Option(20000, positive, "Per target: most sample lines in one response."),
    "max_labels": Option(30, positive, "Per target: most labels the target puts on one series."),
    "max_label_value_length": Option(1024, positive, "Per target: longest label value."),
    "target_timeout": Option(5.0, positive, "Per target timeout (seconds) unless its template sets one; "
                             "never beyond the scrape budget."),
}


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_autodiscovery_{name}", kind, help, labels)


_T = ("namespace", "pod", "container")
TARGET_UP = _m("target_up", "gauge", "1 if the target's last scrape succeeded, else 0.", *_T)
TARGET_DURATION = _m("target_scrape_duration_seconds", "gauge", "How long the target's last scrape took.",
                     *_T)
TARGET_SERIES = _m("target_series", "gauge", "Series served for the target from its last scrape.", *_T)
TARGET_ERRORS = _m("target_errors_total", "counter", "Failed target scrapes by reason (body_too_large, "
                   "too_many_series, label_limit, timeout, connect, http_status, internal).", *_T, "reason")
TARGETS = _m("targets", "gauge", "Discovered targets by trigger (annotation, prometheus_io, image, "
             "sidecar).", "trigger")
TEMPLATE_ERRORS = _m("template_errors_total", "counter", "Rejected templates by source (annotation, "
                     "prometheus_io, file, etcd, etcd_v2, consul, config; pod: a pod object that could "
                     "not be read).", "source")
TEMPLATES = _m("templates", "gauge", "Valid per-image templates a store holds.", "source")
STORE_UP = _m("template_store_up", "gauge", "1 if the store's last read of its backend succeeded.", "source")
TABLE = (TARGET_UP, TARGET_DURATION, TARGET_SERIES, TARGET_ERRORS, TARGETS, TEMPLATE_ERRORS, TEMPLATES,
         STORE_UP)


def identity(meta: PodMeta, container: str, join: Sequence[tuple[str, str]], node: str) -> tuple:
    """The labels every series of a container's target carries (besides cluster/collector)."""
    pairs = (("namespace", meta.namespace), ("pod", meta.name), ("container", container), *join)
    if node and not any(k == "node" for k, _ in pairs):
        pairs += (("node", node),)
    return tuple(pairs)


def own_port(listen_address: str) -> int:
    """kubebridge's own port (never a target: a scrape of itself would wait on itself)."""
    return int(listen_address.rpartition(":")[2] or 0)


class Engine:
    """The current targets, scraped concurrently, plus their self-metrics."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps, self.cfg = deps, cfg
        self.limits = Limits.from_options(cfg.options)
        self.targets: dict[Key, Target] = {}
        self.stats: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def set_targets(self, specs: Mapping[Key, TargetSpec]) -> None:
        """Add, keep (same spec: caches and counters kept) or rebuild targets; drop the rest."""
        old = self.targets
        self.targets = {}
        for key in sorted(specs):
            have = old.get(key)
            if have is not None and have.spec == specs[key]:
                self.targets[key] = have
            else:
                self.targets[key] = Target(specs[key], self.deps, self.cfg, self.limits,
                                           have.errors if have is not None else None)
        for key in old.keys() - specs.keys():
            log.info("autodiscovery: target %s/%s/%s removed", *key)
        for key in specs.keys() - old.keys():
            log.info("autodiscovery: target %s/%s/%s added: %s", *key, specs[key].endpoint.url)

    def session(self) -> aiohttp.ClientSession:
        """The targets' own session: nothing in it may leak to a target (see module doc)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def collect(self, budget: float) -> list[Family]:
        """Scrape every target concurrently within `budget`."""
        targets = list(self.targets.values())
        if targets:
            session = self.session()
            # Keep back a little of the budget for merging and encoding.
            await asyncio.gather(*(t.scrape(session, max(0.05, budget - 0.25)) for t in targets))
        return self.families()

    def offline(self, payloads: Sequence[bytes], errors: Mapping[str, int],
                stores: Sequence[Any] = ()) -> Result:
        """`kubebridge transform`: the current targets, in order, get one payload each (targets
        beyond the payloads are left out); the result is what `collect` serves for them."""
        self.targets = dict(list(self.targets.items())[:len(payloads)])
        for target, payload in zip(self.targets.values(), payloads):
            start = time.perf_counter()
            try:
                target.ingest(payload, payload.rstrip().endswith(b"# EOF"))
            except Cut as exc:
                target.fail(exc.reason, str(exc))
            target.seconds = time.perf_counter() - start
        res = Result(self.families() + self.self_metrics(errors, stores))
        for key in ("series_in", "series_out", "malformed", "dropped"):
            setattr(res, key, int(self.stats[key]))
        return res

    def families(self) -> list[Family]:
        """The targets' series, merged (one family per name)."""
        targets = list(self.targets.values())
        merged, conflicts = merge(("/".join(t.spec.key), t.families) for t in targets)
        self.stats = {k: float(sum(getattr(t.res, k) for t in targets))
                      for k in ("series_in", "series_out", "malformed", "dropped")}
        self.stats["dropped"] += sum(conflicts.values())
        self.stats["response_bytes"] = float(sum(t.size for t in targets if t.up))
        return merged

    def self_metrics(self, errors: Mapping[str, int], stores: Sequence[Any] = ()) -> list[Family]:
        """Per-target and per-store families (collector and cluster labels added)."""
        extra: dict[str, str] = {}
        b = Builder(TABLE, self.deps.labels(self.cfg, node=False))
        triggers: Counter[str] = Counter()
        for key, t in self.targets.items():
            ids = dict(zip(_T, key), **extra)
            b.add(TARGET_UP, t.up, ids)
            b.add(TARGET_DURATION, t.seconds, ids)
            b.add(TARGET_SERIES, sum(f.count() for f in t.families), ids)
            for reason in sorted(t.errors):
                b.add(TARGET_ERRORS, t.errors[reason], {**ids, "reason": reason})
            triggers[t.spec.trigger] += 1
        for trigger in sorted(triggers):
            b.add(TARGETS, triggers[trigger], {"trigger": trigger, **extra})
        for source in sorted(errors):
            b.add(TEMPLATE_ERRORS, errors[source], {"source": source, **extra})
        for store in stores:
            b.add(TEMPLATES, len(store.templates), {"source": store.name, **extra})
            b.add(STORE_UP, store.up, {"source": store.name, **extra})
        return b.families()


class EngineCollector:
    """What the autodiscovery and sidecar collectors share: an Engine of scrape targets that
    `sync()` keeps current, template stores to follow (none for a sidecar) and an ErrorLog."""

    engine: Engine
    errors: Any        # stores.ErrorLog
    stores: Sequence[Any] = ()
    stats: dict[str, float]

    def sync(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Follow every store; own the targets' session."""
        try:
            await asyncio.gather(*(s.run() for s in self.stores), asyncio.Event().wait())
        finally:
            await self.engine.close()

    async def collect(self, budget: float) -> Sequence[Family]:
        self.sync()
        families = await self.engine.collect(budget)
        self.stats = self.engine.stats
        return families + self.engine.self_metrics(self.errors.counts, self.stores)

    def process(self, *payloads: bytes) -> Result:
        """Offline: the current targets, in order, get one payload each; targets without a
        payload are left out."""
        self.sync()
        return self.engine.offline(payloads, self.errors.counts, self.stores)
