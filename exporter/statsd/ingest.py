"""The hot path: a datagram's lines into the store, each line wholly applied or not at all.

A metric line splits into name, values and meta (`protocol.split_line`). Everything but the
values (the mapping, tags to labels, the pod join, the series) depends only on the sender, the
name and the meta bytes, which a call site repeats on every call: it is resolved once into a
`Target` and cached under (sender, name, meta). The cache is cleared when the pod index moves
on (the join may change) or when it outgrows its bound; a cached target whose series expired
is resolved again. Refusals are not cached (budgets free up when series expire).
"""
from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field
from collections.abc import Collection

from exporter.statsd import protocol
from exporter.statsd.mapping import Mapper
from exporter.statsd.origin import Origin, Resolver
from exporter.statsd.protocol import LineError, Meta, Refusal, Tags
from exporter.statsd.store import Series, Store

_RESERVED = frozenset({"namespace", "pod", "container", "node", "cluster", "collector", "workload",
                       "workload_kind", "le", "quantile", "__name__"})
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_KIND = {"c": "counter", "g": "gauge", "ms": "histogram", "h": "histogram", "d": "histogram", "s": "set"}
SAMPLE_TYPES = ("c", "g", "ms", "h", "d", "s", "event", "service_check")
_SIGNS = b"+-"
_VALUES = 50_000  # distinct values remembered parsed
_REJECTED = 20     # rejected lines named offline (all are counted)
_REFUSALS = frozenset({"tags_limit", "label_value_limit"})  # counted as refusals, not parse errors
EVENTS = "statsd_events_total"
SERVICE_CHECKS = "statsd_service_checks_total"


@dataclass(frozen=True)
class Policy:
    """How tags become labels, the bounds, and the defaults a mapping does not override."""

    tag_allowlist: Collection[str] = ("*",)
    max_tags: int = 32
    max_label_value_length: int = 256
    ttl: float = 600.0
    buckets: tuple[float, ...] = ()
    buckets_by_name: dict[str, tuple[float, ...]] = field(default_factory=dict)
    timer_scale: float = 0.001      # ms -> seconds, as statsd_exporter does

    def admits(self, tag: str) -> bool:
        return "*" in self.tag_allowlist or tag in self.tag_allowlist


@dataclass
class Stats:
    """Counters the receivers keep (read by the collector under the store lock)."""

    packets: dict[str, int] = field(default_factory=dict)            # by listener
    samples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAMPLE_TYPES, 0))
    parse_errors: dict[str, int] = field(default_factory=dict)       # by reason
    refused: dict[str, int] = field(default_factory=dict)            # by reason (budgets, mapping drops)
    join_misses: int = 0                                             # samples joined to no pod

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


def _members(values: bytes) -> list[str]:
    """A set line's members (UTF-8, non-empty)."""
    try:
        texts = [m.decode("utf-8") for m in values.split(b":")]
    except UnicodeDecodeError:
        raise LineError("not_utf8") from None
    if not all(texts):
        raise LineError("bad_value")
    return texts


class Target:
    """A resolved line: what its values update."""

    __slots__ = ("series", "kind", "weight", "scale", "miss")

    def __init__(self, series: Series, kind: str, weight: float, scale: float, miss: bool) -> None:
        self.series = series
        self.kind = kind        # StatsD type
        self.weight = weight    # 1 / sample rate
        self.scale = scale      # timers: ms -> s
        self.miss = miss


def label_name(tag: str) -> str:
    """A tag key as a label name: invalid characters `_`, a leading digit prefixed `_`, and
    names kubebridge sets itself (namespace, pod, ..., `label_*`) prefixed `exported_`."""
    name = _BAD_LABEL_CHARS.sub("_", tag)
    if name[:1].isdigit():
        name = "_" + name
    if name in _RESERVED or name.startswith(("label_", "__")):
        name = "exported_" + name
    return name


class Ingest:
    """Datagrams -> store, counting everything in `stats`."""

    def __init__(self, store: Store, mapper: Mapper, resolver: Resolver, policy: Policy,
                 cache_size: int = 200_000) -> None:
        self.store = store
        self.mapper = mapper
        self.resolver = resolver
        self.policy = policy
        self.stats = Stats()
        self._cache: dict[tuple, Target] = {}
        self._values: dict[bytes, float] = {}  # valid single values seen, parsed
        self.rejected: list[tuple[bytes, str]] | None = None  # offline: (line, reason) of the first few
        self._cache_size = cache_size

    def refresh(self) -> None:
        """Pick up a new pod index generation (clears the cache if it moved). Call under the lock."""
        if self.resolver.fresh():
            self._cache.clear()

    def datagram(self, data: bytes, peer: str | int | None, now: float) -> None:
        """One datagram from `peer` (source IP or Unix peer pid). Call under the store lock.

        Fast path: a line whose (sender, name, meta) is cached and whose single value was seen
        before (`_values`: counters' `1`s, repeated gauges) costs two partitions and three dict
        lookups; anything else takes `_line`, which validates fully."""
        cache = self._cache
        known = self._values
        samples = self.stats.samples
        misses = 0
        for line in data.split(b"\n") if b"\n" in data else (data,):
            if not line:
                continue
            name, _, rest = line.partition(b":")
            values, _, meta = rest.partition(b"|")
            t = cache.get((peer, name, meta))
            v = known.get(values)
            if t is None or v is None or not t.series.alive:  # (events and service checks: never cached)
                self._line(line, peer, now)
                continue
            k = t.kind
            s = t.series
            if k == "c":
                if v < 0:
                    self.stats.count(self.stats.parse_errors, "negative_counter")
                    continue
                s.value += v * t.weight
            elif k == "g":
                s.value = s.value + v if values[0] in _SIGNS else v
            elif k == "s":
                self._line(line, peer, now)
                continue
            elif s.bounds:  # a histogram
                x = v * t.scale
                w = t.weight
                s.counts[bisect_left(s.bounds, x)] += w
                s.sum += x * w
                s.count += w
            else:
                s.observe(v * t.scale, t.weight, now)
            s.last = now
            samples[k] += 1
            if t.miss:
                misses += 1
        if misses:
            self.stats.join_misses += misses

    def _line(self, line: bytes, peer: str | int | None, now: float) -> None:
        """One line, validated fully: values are checked before anything is resolved or created."""
        if line[0] == 95 and (line.startswith(b"_e{") or line.startswith(b"_sc|")):
            self._special(line, peer, now)
            return
        parse = protocol.parse_value
        try:
            name, values, meta = protocol.split_line(line)
            kind = meta.partition(b"|")[0]
            if kind == b"s":
                parsed: float | list = _members(values)
            elif b":" in values:
                parsed = [parse(v) for v in values.split(b":")]
                if kind == b"c" and min(parsed) < 0:
                    raise LineError("negative_counter")
            else:
                parsed = parse(values)
                if kind == b"c" and parsed < 0:
                    raise LineError("negative_counter")
                if len(self._values) >= _VALUES:
                    self._values.clear()
                self._values[values] = parsed
            key = (peer, name, meta)
            t = self._cache.get(key)
            if t is None or not t.series.alive:
                t = self._resolve(key, name, meta, now)
                if t is None:
                    return
        except LineError as exc:
            self._reject(line, exc.reason)
            return
        s = t.series
        s.last = now
        k = t.kind
        n = 1
        if isinstance(parsed, float):
            if k == "c":
                s.value += parsed * t.weight
            elif k == "g":
                s.value = s.value + parsed if values[0] in _SIGNS else parsed
            else:
                s.observe(parsed * t.scale, t.weight, now)
        else:
            n = self._many(t, values, parsed, now)
        self.stats.samples[k] += n
        if t.miss:
            self.stats.join_misses += n

    def _reject(self, line: bytes, reason: str) -> None:
        refused = reason in _REFUSALS
        self.stats.count(self.stats.refused if refused else self.stats.parse_errors, reason)
        if self.rejected is not None and len(self.rejected) < _REJECTED:
            self.rejected.append((line, reason))

    def _many(self, t: Target, values: bytes, parsed: list, now: float) -> int:
        """Several values of one line (DogStatsD 1.1 `name:1:2:3|h`), or a set's members."""
        s = t.series
        if t.kind == "s":
            have = s.members
            for m in parsed:
                if m in have or len(have) < self.store.limits.max_set_members:
                    have[m] = now
                else:
                    self.stats.count(self.stats.refused, "set_members_limit")
        elif t.kind == "c":
            s.value += sum(parsed) * t.weight
        elif t.kind == "g":
            for raw, v in zip(values.split(b":"), parsed):
                s.value = s.value + v if raw[:1] in b"+-" else v
        else:
            for v in parsed:
                s.observe(v * t.scale, t.weight, now)
        return len(parsed)

    def _resolve(self, key: tuple, name: bytes, raw_meta: bytes, now: float) -> Target | None:
        """Resolve and cache a line's target; None when refused (counted)."""
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise LineError("not_utf8") from None
        meta = protocol.parse_meta(raw_meta)
        mapped = self.mapper.map(text, meta.type)
        if mapped.drop:
            self.stats.count(self.stats.refused, "mapping_drop")
            return None
        if not mapped.name:
            raise LineError("bad_name")
        kind = _KIND[meta.type]
        prom = mapped.name
        if kind == "counter" and not prom.endswith("_total"):
            prom += "_total"
        bounds: tuple[float, ...] = ()
        quantiles: tuple[float, ...] = ()
        if kind == "histogram" and (mapped.summary and prom not in self.policy.buckets_by_name):
            kind, quantiles = "summary", mapped.quantiles
        elif kind == "histogram":
            bounds = self.policy.buckets_by_name.get(prom) or mapped.buckets or self.policy.buckets
        ttl = mapped.ttl if mapped.ttl is not None else self.policy.ttl
        got = self._series(kind, prom, mapped.labels, meta, key[0], now, ttl, bounds, mapped.help,
                           quantiles, mapped.max_age)
        if got is None:
            return None
        series, origin = got
        weight = 1.0 if meta.type == "g" else 1.0 / meta.rate
        t = Target(series, meta.type, weight, self.policy.timer_scale if meta.type == "ms" else 1.0,
                   origin.pod is None)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = t
        return t

    def _series(self, kind: str, name: str, fixed: Tags, meta: Meta | protocol.Event | protocol.ServiceCheck,
                peer: str | int | None, now: float, ttl: float, bounds: tuple[float, ...] = (),
                help: str = "", quantiles: tuple[float, ...] = (),
                max_age: float = 0.0) -> tuple[Series, Origin] | None:
        labels = self._labels(fixed, meta.tags)
        origin = self.resolver.pod_of(peer, meta.container_id, meta.entity_id)
        if origin.pod is None and self.resolver.index is not None:
            self.resolver.index.request_refresh()  # a new pod? (rate-limited by the index)
        got = self.store.get(kind, name, labels, origin.pod, origin.container, now, ttl, bounds, help,
                             quantiles, max_age)
        if isinstance(got, str):
            self.stats.count(self.stats.refused, got)
            return None
        return got, origin

    def _labels(self, fixed: Tags, tags: Tags) -> Tags:
        """Mapping labels, then the allowed tags (first of a repeated key wins), bounded. Neither
        may name a label kubebridge sets (`label_name`): the pod's identity is the join's."""
        if len(tags) > self.policy.max_tags:
            raise Refusal("tags_limit")
        out = {label_name(k): v for k, v in fixed}
        for k, v in tags:
            if not self.policy.admits(k):
                continue
            out.setdefault(label_name(k), v or "true")
        limit = self.policy.max_label_value_length
        if any(len(v) > limit for v in out.values()):
            raise Refusal("label_value_limit")
        return tuple(sorted(out.items()))

    def _special(self, line: bytes, peer: str | int | None, now: float) -> None:
        """An event or service check: one increment of its counter."""
        try:
            if line.startswith(b"_e{"):
                ev = protocol.parse_event(line)
                own: Tags = (("alert_type", ev.alert_type), ("priority", ev.priority),
                             ("source_type", ev.source_type))
                got = self._series("counter", EVENTS, own, ev, peer, now, self.policy.ttl,
                                   help="DogStatsD events received.")
                kind = "event"
            else:
                sc = protocol.parse_service_check(line)
                own = (("check", sc.name), ("status", sc.status))
                got = self._series("counter", SERVICE_CHECKS, own, sc, peer, now, self.policy.ttl,
                                   help="DogStatsD service checks received, by check and status.")
                kind = "service_check"
        except LineError as exc:
            self._reject(line, exc.reason)
            return
        if got is None:
            return
        series, origin = got
        series.value += 1
        series.last = now
        self.stats.samples[kind] += 1
        if origin.pod is None:
            self.stats.join_misses += 1
