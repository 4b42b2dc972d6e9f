"""The aggregated StatsD series: budgets, TTL expiry, and their encoding as families.

A series is one (Prometheus name, own labels, pod, container). It is created only within the
budgets (all series, series per pod; a name keeps one type); a refused series is reported by
reason and existing ones keep working. `expire` removes series that received no sample for
their TTL, and marks them dead so that any cached reference to them is resolved again.

Not thread-safe by itself: the receivers and the collector share `Store.lock`; `encode` takes it
per chunk of series (each series is read whole, under the lock, as the receivers write it).
"""
from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from collections.abc import Iterable

from exporter.expfmt import Family, escape_help
from exporter.families import format_value
from exporter.podindex import PodIndex
from exporter.labels import CommonLabels

PodKey = tuple[str, str]
_NONE: list[float] = []                 # shared by the series that have no buckets (never mutated)
_NO_MEMBERS: dict[str, float] = {}      # shared by the series that are not sets (never mutated)
_CHUNK = 5000  # series encoded per hold of the lock: the receivers wait at most one chunk
Pairs = tuple[tuple[str, str], ...]
_FAMILY_TYPE = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
                "set": "gauge"}
SUMMARY_WINDOW = 500  # observations a summary keeps for its quantiles (the latest, within max_age)


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets."""

    max_series: int = 100_000
    max_series_per_pod: int = 10_000
    max_set_members: int = 10_000   # distinct members remembered per set series
    set_window: float = 60.0        # seconds: a set's gauge counts members seen this recently


class Series:
    """One live series. `value`: counter total or gauge; histograms use `counts`/`sum`/`count`;
    summaries `window` (the latest observations, with their time), `sum`/`count`; sets use
    `members` (member -> last seen)."""

    __slots__ = ("key", "kind", "name", "own", "pod", "ttl", "last", "alive", "value", "bounds",
                 "counts", "sum", "count", "members", "help", "finished", "gen", "quantiles", "max_age",
                 "window")

    def __init__(self, key: tuple, kind: str, name: str, own: Pairs, pod: PodKey | None,
                 ttl: float, now: float, bounds: tuple[float, ...] = (), help: str = "",
                 quantiles: tuple[float, ...] = (), max_age: float = 0.0) -> None:
        self.key = key
        self.kind = kind
        self.name = name
        self.own = own
        self.pod = pod
        self.ttl = ttl
        self.last = now
        self.alive = True
        self.value = 0.0
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1) if kind == "histogram" else _NONE
        self.sum = 0.0
        self.count = 0.0
        self.members: dict[str, float] = {} if kind == "set" else _NO_MEMBERS
        self.help = help
        self.finished: tuple[str, bytes] | None = None  # (final name, label text), per pod generation
        self.gen = -1
        self.quantiles = quantiles
        self.max_age = max_age
        self.window: deque[tuple[float, float]] | None = \
            deque(maxlen=SUMMARY_WINDOW) if kind == "summary" else None

    def observe(self, value: float, weight: float, now: float) -> None:
        """One histogram or summary observation of `weight` (1 / sample rate)."""
        if self.window is None:
            self.counts[bisect_left(self.bounds, value)] += weight
        else:
            self.window.append((now, value))
        self.sum += value * weight
        self.count += weight


class Store:
    """All live series, keyed by (name, own labels, pod, container)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.lock = threading.Lock()
        self.series: dict[tuple, Series] = {}
        self.per_pod: dict[PodKey | None, int] = {}
        self.kinds: dict[str, tuple[str, int]] = {}  # name -> (kind, live series)
        self.expired = 0
        self._gen = -1

    def __len__(self) -> int:
        return len(self.series)

    def get(self, kind: str, name: str, own: Pairs, pod: PodKey | None, container: str, now: float,
            ttl: float, bounds: tuple[float, ...] = (), help: str = "", quantiles: tuple[float, ...] = (),
            max_age: float = 0.0) -> Series | str:
        """The series, created if the budgets allow; else the refusal's reason."""
        key = (name, own, pod, container)
        s = self.series.get(key)
        if s is not None:
            return s
        have = self.kinds.get(name)
        if have is not None and have[0] != kind:
            return "type_conflict"
        if len(self.series) >= self.limits.max_series:
            return "series_limit"
        if self.per_pod.get(pod, 0) >= self.limits.max_series_per_pod:
            return "pod_series_limit"
        labels = own + ((("container", container),) if container else ())
        s = self.series[key] = Series(key, kind, name, labels, pod, ttl, now, bounds, help, quantiles,
                                      max_age)
        self.per_pod[pod] = self.per_pod.get(pod, 0) + 1
        self.kinds[name] = (kind, (have[1] if have else 0) + 1)
        return s

    def expire(self, now: float) -> int:
        """Remove series idle longer than their TTL (0: never); returns how many."""
        dead = [s for s in self.series.values() if s.ttl and now - s.last > s.ttl]
        for s in dead:
            self._remove(s)
        self.expired += len(dead)
        return len(dead)

    def _remove(self, s: Series) -> None:
        s.alive = False
        del self.series[s.key]
        left = self.per_pod[s.pod] - 1
        if left:
            self.per_pod[s.pod] = left
        else:
            del self.per_pod[s.pod]
        kind, n = self.kinds[s.name]
        if n > 1:
            self.kinds[s.name] = (kind, n - 1)
        else:
            del self.kinds[s.name]

    def encode(self, labels: CommonLabels, index: PodIndex | None,
               now: float) -> tuple[list[Family], int, int]:
        """The families of all live series, and (series exposed, series a rule dropped). Label
        text is finished once per series and again only when its pod changed in the index.
        Called without the lock (it takes it per chunk); one caller at a time."""
        with self.lock:
            todo = list(self.series.values())
        changed: set[PodKey] | None = set()
        gen = index.generation if index is not None else 0
        if index is not None and gen != self._gen:
            changed = index.changed_since(self._gen) if self._gen >= 0 else None
        self._gen = gen
        fams: dict[str, Family] = {}
        counts = [0, 0]  # exposed, dropped
        for i in range(0, len(todo), _CHUNK):
            with self.lock:
                self._encode(todo[i:i + _CHUNK], fams, counts, labels, index, gen, changed, now)
        return [fams[n] for n in sorted(fams)], counts[0], counts[1]

    def _encode(self, chunk: list[Series], fams: dict[str, Family], counts: list[int], labels: CommonLabels,
                index: PodIndex | None, gen: int, changed: set[PodKey] | None, now: float) -> None:
        window = self.limits.set_window
        for s in chunk:
            if not s.alive:
                continue
            if s.finished is None or (s.gen != gen and (changed is None or s.pod in changed)):
                s.finished = _finish(s, labels, index)
                s.gen = gen
            if not s.finished[0]:
                counts[1] += 1
                continue
            name, text = s.finished
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = Family(name, _FAMILY_TYPE[s.kind], escape_help(s.help or _HELP[s.kind]))
            counts[0] += 1
            lab = b"{" + text + b"}" if text else b""
            if s.kind == "histogram":
                fam.lines.append(_histogram(name.encode(), text, s))
            elif s.kind == "summary":
                fam.lines.append(_summary(name.encode(), text, s, now))
            elif s.kind == "set":
                if len(s.members) > 0:
                    s.members = {m: t for m, t in s.members.items() if now - t <= window}
                fam.lines.append(name.encode() + lab + b" " + format_value(float(len(s.members))))
            else:
                fam.lines.append(name.encode() + lab + b" " + format_value(s.value))


_HELP = {"counter": "StatsD counter.", "gauge": "StatsD gauge.", "histogram": "StatsD timer or histogram.",
         "summary": "StatsD timer or histogram (quantiles over the latest observations within max_age).",
         "set": "StatsD set: distinct members seen within the set window."}


def _finish(s: Series, labels: CommonLabels, index: PodIndex | None) -> tuple[str, bytes]:
    own: list[tuple[str, str]] = []
    joined: Iterable[tuple[str, str]] = ()
    if s.pod is not None:
        own += (("namespace", s.pod[0]), ("pod", s.pod[1]))
        meta = index.get(*s.pod) if index is not None else None
        if meta is not None and index is not None:
            joined = index.join_labels(meta)
    own += s.own
    done = labels.finish(s.name, own, tuple(joined))
    return (done.name, done.labels) if done is not None else ("", b"")


def _summary(name: bytes, text: bytes, s: Series, now: float) -> bytes:
    assert s.window is not None
    recent = sorted(v for t, v in s.window if now - t <= s.max_age)
    pre = b"{" + text + b"," if text else b"{"
    lab = b"{" + text + b"}" if text else b""
    lines = []
    for q in s.quantiles:  # nearest rank; NaN without recent observations, as client_golang
        value = recent[max(0, math.ceil(q * len(recent)) - 1)] if recent else math.nan
        lines.append(name + pre + b'quantile="' + format_value(q) + b'"} ' + format_value(value))
    lines.append(name + b"_sum" + lab + b" " + format_value(s.sum))
    lines.append(name + b"_count" + lab + b" " + format_value(s.count))
    return b"\n".join(lines)


def _histogram(name: bytes, text: bytes, s: Series) -> bytes:
    pre = b"{" + text + b"," if text else b"{"
    lab = b"{" + text + b"}" if text else b""
    lines = []
    total = 0.0
    for bound, n in zip((*s.bounds, float("inf")), s.counts):
        total += n
        lines.append(name + b"_bucket" + pre + b'le="' + format_value(bound) + b'"} ' + format_value(total))
    lines.append(name + b"_sum" + lab + b" " + format_value(s.sum))
    lines.append(name + b"_count" + lab + b" " + format_value(s.count))
    return b"\n".join(lines)
