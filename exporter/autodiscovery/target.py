"""One discovered target (shared by `autodiscovery` and `sidecar`): fetch, limits, transform.

Each target has its own pipeline `Transformer` (its caches live as long as the target). Its
series get their labels from `TargetHook`: the upstream's own `namespace`, `pod`, `container`,
... are kept as `exported_<name>` (Prometheus' honor_labels: false), then the target's identity
and the pod join are added. A template's relabel rules run first, then "guard" rules put the
identity labels back, so an annotation cannot make its series claim another pod; the admin's
global and per-collector rules run last.

Targets are fetched with the collector's own plain `aiohttp.ClientSession` (no cookies, no
proxy from the environment, no redirects, no credentials of any kind), under per-target limits.
A target over a limit is cut off (none of its series are served) and counted by reason.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import aiohttp

from exporter import __version__, relabel
from exporter.autodiscovery.templates import Endpoint
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.passthrough import SerialTransform
from exporter.podindex import PodIndex
from exporter.transform import EVERYTHING, NOTHING, Changes, Options, Pairs, Payload, Result, Transformer
from exporter.pods import PodMeta
from exporter.upstream import METRICS_ACCEPT, is_openmetrics

log = logging.getLogger("kubebridge.autodiscovery")
Key = tuple[str, str, str]  # namespace, pod, container


class Cut(Exception):
    """The target broke a limit (or answered badly): its scrape is discarded."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Per-target limits (the timeout is the endpoint's own: templates may set it)."""

    body: int
    series: int
    labels: int
    value_length: int

    @classmethod
    def from_options(cls, opt: Mapping[str, Any]) -> Limits:
        """From the LIMIT_OPTIONS of a collector section."""
        return cls(opt["max_body_bytes"], opt["max_series"], opt["max_labels"], opt["max_label_value_length"])


@dataclass(frozen=True)
class TargetSpec:
    """Everything a target is built from; a target is rebuilt when its spec changes."""

    key: Key
    trigger: str
    endpoint: Endpoint
    identity: tuple[tuple[str, str], ...]  # namespace, pod, container, then the pod join


class TargetHook:
    """Series hook: enforce the label limits, rename clashing upstream labels, add the target's."""

    def __init__(self, spec: TargetSpec, limits: Limits) -> None:
        self.tail = list(spec.endpoint.labels) + list(spec.identity)
        self.taken = {k for k, _ in self.tail} | {"cluster"}
        self.limits = limits
        self.violation = ""

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        """After a violation, the offending label sets were cached as dropped: forget them."""
        if not self.violation:
            return NOTHING
        self.violation = ""
        return EVERYTHING

    def variant(self, family: str) -> Any:
        return None

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        if len(pairs) > self.limits.labels or any(len(v) > self.limits.value_length for _, v in pairs):
            self.violation = (f"a series has {len(pairs)} labels (limit {self.limits.labels}) or a value "
                              f"over {self.limits.value_length} characters")
            return None
        names = {k for k, _ in pairs}
        out = []
        for k, v in pairs:
            if k in self.taken:  # the target's label wins; the upstream's is kept, renamed
                k = "exported_" + k
                while k in names or k in self.taken:
                    k = "exported_" + k
            out.append((k, v))
        return out + self.tail


def guard_rules(spec: TargetSpec, cluster: str, collector: str) -> tuple[relabel.Rule, ...]:
    """After a template's own rules: drop whatever it did to the identity labels, set them again."""
    pins = [*spec.identity, *([("cluster", cluster)] if cluster else []), ("collector", collector)]
    names = "|".join(sorted({k for k, _ in pins} | {"collector"}))
    raw = [{"action": "labeldrop", "regex": names}]
    raw += [{"target_label": k, "replacement": v.replace("$", "$$")} for k, v in pins]
    return relabel.parse_rules(raw, "guard")


class Target:
    """One discovered endpoint: its transformer, its last result and its counters."""

    def __init__(self, spec: TargetSpec, deps: Deps, cfg: CollectorConfig, limits: Limits,
                 errors: Counter[str] | None = None) -> None:
        self.spec = spec
        self.limits = limits
        self.hook = TargetHook(spec, limits)
        rules = spec.endpoint.rules
        if rules:
            rules += guard_rules(spec, deps.config.cluster, cfg.name)
        self.transformer = Transformer(
            Options(collector=cfg.name, cluster=deps.config.cluster, pod_labels=False,
                    rules=rules + deps.config.relabel_configs + cfg.relabel_configs), None, self.hook)
        self.serial = SerialTransform(self.transformer)  # one transform at a time, off the loop when big
        self.errors: Counter[str] = errors if errors is not None else Counter()
        self.families: list[Family] = []
        self.up = 0.0
        self.seconds = 0.0
        self.last_ok = -1e18
        self.res = Result(families=[])
        self.size = 0
        self._last_reason = ""

    async def scrape(self, session: aiohttp.ClientSession, budget: float) -> None:
        """Fetch and transform, unless the template's interval says the last result is fresh."""
        ep = self.spec.endpoint
        if ep.interval and self.up and time.monotonic() - self.last_ok < ep.interval:
            return
        start = time.perf_counter()
        try:
            async with asyncio.timeout(max(0.05, min(ep.timeout, budget))):
                body, ctype = await self._fetch(session)
            size = len(body)
            self.accept(await self.serial.run(Payload(body), is_openmetrics(ctype)), size)
            self.last_ok = time.monotonic()
        except Cut as exc:
            self.fail(exc.reason, str(exc))
        except TimeoutError:
            self.fail("timeout", f"no answer within {min(ep.timeout, budget):.1f}s")
        except (aiohttp.ClientConnectionError, OSError) as exc:
            self.fail("connect", str(exc) or type(exc).__name__)
        except Exception as exc:  # never BaseException: cancellation must propagate
            log.exception("autodiscovery target %s failed", ep.url)
            self.fail("internal", str(exc))
        self.seconds = time.perf_counter() - start

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[bytes, str]:
        ep = self.spec.endpoint
        tls = not ep.insecure_skip_verify  # True: verify against the system's CAs
        headers = {"Accept": METRICS_ACCEPT, "User-Agent": f"kubebridge/{__version__}"}
        async with session.get(ep.url, headers=headers, allow_redirects=False, ssl=tls) as resp:
            if not 200 <= resp.status < 300:
                raise Cut("http_status", f"HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > self.limits.body:
                raise Cut("body_too_large", f"Content-Length {resp.content_length} > {self.limits.body}")
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > self.limits.body:
                    raise Cut("body_too_large", f"body over {self.limits.body} bytes")
                chunks.append(chunk)
            return b"".join(chunks), resp.headers.get("Content-Type", "")

    def ingest(self, body: bytes, openmetrics: bool) -> Result:
        """Transform one response and apply the series and label limits (raises Cut)."""
        return self.accept(self.transformer.transform(body, openmetrics), len(body))

    def accept(self, res: Result, size: int) -> Result:
        """Apply the series and label limits to a transform's result (raises Cut)."""
        self.size = size
        if self.hook.violation:
            raise Cut("label_limit", self.hook.violation)
        if res.series_in > self.limits.series:
            raise Cut("too_many_series", f"{res.series_in} series > {self.limits.series}")
        self.res, self.families, self.up = res, res.families, 1.0
        self._last_reason = ""
        return res

    def fail(self, reason: str, detail: str) -> None:
        """Count a failed scrape; the target serves no series until it succeeds again."""
        self.errors[reason] += 1
        self.families, self.up, self.res = [], 0.0, Result(families=[])
        if reason != self._last_reason:  # log a change of state, not every failed scrape
            log.warning("autodiscovery target %s/%s/%s (%s) cut off: %s (%s)", *self.spec.key,
                        self.spec.endpoint.url, reason, detail)
        self._last_reason = reason
