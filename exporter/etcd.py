"""etcd members, for the `etcd` and `etcd_v2` collectors (not a collector): member names,
per-member isolation, `/health`, and the finishing transform of derived series.

The runner knows one source per collector, but an etcd cluster is several members: one member
being down must not take the whole source down. So each member is fetched in its own task with
its own deadline, its failure is kept as a value, and only when *every* member failed does the
collector raise (and the runner report the source as down, not_permitted or no_data).
"""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from exporter.config import CollectorConfig, Endpoint
from exporter.deps import Deps
from exporter.errors import ConfigError, NoDataError, describe
from exporter.jsonshape import loads
from exporter.transform import Options, Result, SeriesHook, Transformer
from exporter.registry import Option
from exporter.upstream import Upstream

log = logging.getLogger("kubebridge.etcd")
T = TypeVar("T")
JSON = "application/json"
# Share of the source's budget one member may use: a hung member must time out on its own (and
# read as down) before the runner's deadline for the whole source fails every member with it.
MEMBER_SHARE = 0.8
# etcd 3.4 answers /health with the string "true"; accept a JSON boolean as well.
TRUE = ("true", True)
_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

MEMBERS = Option((), help="etcd members: a list of {url, ca_file, cert_file, key_file, "
                 "server_name, insecure_skip_verify}. Each member is labelled member=<host:port of "
                 "its url>.", kind="endpoints")

Outcome = tuple[str, Any]  # (member, result or the exception it failed with)


def member_name(ep: Endpoint) -> str:
    """`host:port` of the member's URL. It is known whether or not the member answers, so a
    member's series keep one identity across up and down (a name read from the member itself
    would make its `member_up 0` a different series than its `member_up 1`)."""
    return urlsplit(ep.url).netloc.rpartition("@")[2]


def members(cfg: CollectorConfig) -> list[tuple[str, Endpoint]]:
    """The configured members with their names (duplicate names are a config error)."""
    named = [(member_name(ep), ep) for ep in cfg.options["members"]]
    seen: set[str] = set()
    for i, (name, _) in enumerate(named):
        if name in seen:
            raise ConfigError(f"collectors.{cfg.name}.members[{i}].url", f"member {name} listed twice")
        seen.add(name)
    return named


def upstreams(deps: Deps, cfg: CollectorConfig) -> dict[str, Upstream]:
    """One Upstream per member (TLS per member); none offline. An enabled collector without
    members is a config error: it could only ever report down."""
    named = members(cfg)
    if deps.session is None:
        return {}
    if not named:
        raise ConfigError(f"collectors.{cfg.name}.members", "at least one member is required")
    return {name: deps.upstream(ep) for name, ep in named}


def member_timeout(cfg: CollectorConfig, budget: float) -> float:
    """Each member's deadline (see MEMBER_SHARE)."""
    return min(cfg.timeout or budget, budget) * MEMBER_SHARE


async def each_member(ups: dict[str, Upstream], fetch: Callable[[str, Upstream], Awaitable[T]],
                      timeout: float) -> list[Outcome]:
    """Run `fetch` for every member concurrently; each failure is returned, not raised."""
    async def one(name: str, up: Upstream) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await fetch(name, up)
        except Exception as exc:  # isolation per member; cancellation still propagates
            leaf = _leaf(exc)
            level = logging.DEBUG if isinstance(leaf, NoDataError) else logging.WARNING
            log.log(level, "etcd member %s: %s", name, describe(leaf))
            return leaf
    return list(zip(ups, await asyncio.gather(*(one(n, u) for n, u in ups.items()))))


def _leaf(exc: BaseException) -> BaseException:
    # A member's requests run in a TaskGroup: report the leaf error the runner can classify.
    while isinstance(exc, BaseExceptionGroup):
        exc = _pick(list(exc.exceptions))
    return exc


def _pick(errors: Sequence[BaseException]) -> BaseException:
    # A real failure says more than "no data" (a down member beside v2-less ones is down).
    return next((e for e in errors if not isinstance(e, NoDataError)), errors[0])


def raise_if_all_failed(outcomes: Sequence[Outcome]) -> None:
    """Every member failed: the source is down (or no_data / not_permitted): raise."""
    errors = [r for _, r in outcomes if isinstance(r, BaseException)]
    if errors and len(errors) == len(outcomes):
        raise _pick(errors)


def failed(result: Any) -> bool:
    """Whether a member's outcome is a failure."""
    return isinstance(result, BaseException)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object (anything else is a parse error naming the document)."""
    doc = loads(body, what)
    if not isinstance(doc, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


async def health(up: Upstream) -> bool:
    """GET /health. On quorum loss etcd answers 503 {"health":"false"}: that is the member's
    answer (data), not a failed request."""
    resp = await up.request("/health", accept=JSON, ok_statuses=(503,))
    return json_object(resp.body, "/health").get("health") in TRUE


def number(value: Any) -> float:
    """A JSON number (ValueError otherwise, also for booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def go_duration(text: Any) -> float:
    """Go's `time.Duration.String()` ("5m38.43s", "172.06ms", "0s") -> seconds."""
    s = str(text)
    sign, body = (-1.0, s[1:]) if s.startswith("-") else (1.0, s)
    if body == "0":
        return 0.0
    if not body or _DURATION.sub("", body):
        raise ValueError(f"not a Go duration: {s!r}")
    return sign * sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(body))


def timestamp(text: Any) -> float:
    """RFC 3339 with nanoseconds (Go's time.Time JSON) -> Unix seconds."""
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def transformer(deps: Deps, cfg: CollectorConfig, hook: SeriesHook | None = None) -> Transformer:
    """A non-pod-scoped transformer with the collector's common labels and relabel rules."""
    labels = deps.labels(cfg, node=False)
    return Transformer(Options(collector=labels.collector, cluster=labels.cluster, rules=labels.rules,
                               keep_timestamps=bool(cfg.options.get("keep_timestamps", False)),
                               pod_labels=False), None, hook)


def report(passthrough: Sequence[Result], derived: Result, response_bytes: int) -> dict[str, float]:
    """The runner's per-source stats, summed over members (`series_in` counts upstream lines
    only: derived series were not read as lines)."""
    every = [*passthrough, derived]
    return {"response_bytes": float(response_bytes),
            "series_in": float(sum(r.series_in for r in passthrough)),
            "series_out": float(sum(r.series_out for r in every)),
            "malformed": float(sum(r.malformed for r in every)),
            "dropped": float(sum(r.dropped for r in every))}
