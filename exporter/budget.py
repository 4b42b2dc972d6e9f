"""The cardinality budget: a series cap per source and over all sources, that sheds.

Contract:
- A series is one output line's identity: its name and label set (value and timestamp aside).
  Each source remembers the series it exposed (a hash of each, and when it was last seen); a
  series unseen for `ttl` seconds is forgotten. That set is what counts against the caps, so a
  label whose value changes every scrape fills the budget over time, as it fills Prometheus.
- Series already known are always exposed. New series are admitted in arrival order while the
  source's set is under its cap and the sum of every source's set is under the overall cap;
  the rest are refused and counted. Nothing else fails: the scrape goes on with what fits.
- A histogram or summary is admitted or refused whole (all buckets of one label set), so a
  refused one never appears with buckets missing; this can overshoot a cap by one group.
- The known set of a source is bounded by its cap (plus at most one histogram group).
- Cost: a digest of each family's series (values cut off by one regex pass per block). When
  every digest matches the last collection's, nothing else is done: the series are the same,
  and they are marked seen as a whole.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

from exporter.expfmt import Family

_VALUE = re.compile(rb" [^ \n]*$", re.M)  # the value at the end of each line (no timestamp)
# A bucket or quantile label, removed to name the group a histogram/summary line belongs to.
_GROUP_LABEL = re.compile(rb'(?:^|,)(?:le|quantile)="(?:[^"\\]|\\.)*"')
_GROUPED = frozenset({"histogram", "summary"})
_COLLECTIONS = 64  # collection times held before the ones past the ttl are dropped


def _lines(fam: Family) -> list[bytes]:
    out: list[bytes] = []
    for block in fam.lines:
        if b"\n" in block:
            out.extend(block.split(b"\n"))
        else:
            out.append(block)
    return out


def _stamped_head(line: bytes) -> bytes:
    """The series part of a line that may end in `value timestamp`."""
    brace = line.rfind(b"}")
    tail = line[brace + 1:] if brace >= 0 else line
    tokens = tail.split()
    cut = 2 if len(tokens) >= (3 if brace < 0 else 2) else 1
    head = line
    for _ in range(cut):
        head = head.rpartition(b" ")[0]
    return head


def series_keys(fam: Family) -> list[int]:
    """One key per sample line of the family, in order (the hash of name and labels)."""
    if fam.stamped:
        return [hash(_stamped_head(line)) for line in _lines(fam)]
    keys: list[int] = []
    for block in fam.lines:
        keys.extend(map(hash, _VALUE.sub(b"", block).split(b"\n")))
    return keys


def digest(fam: Family) -> int:
    """A hash of the family's series, in order (equal digests: the same series)."""
    if fam.stamped:
        return hash((fam.name, *series_keys(fam)))
    return hash((fam.name, *(_VALUE.sub(b"", block) for block in fam.lines)))


def _group(fam: Family, line: bytes) -> int:
    """The histogram/summary label set a line belongs to (suffix and le/quantile removed)."""
    head = _stamped_head(line) if fam.stamped else line.rpartition(b" ")[0]
    name, _, labels = head.partition(b"{")
    return hash((fam.name, _GROUP_LABEL.sub(b"", labels)))


@dataclass
class SeriesPool:
    """The overall cap, shared by every source's budget (sources run on one event loop, so
    admission needs no lock)."""

    limit: int
    ttl: float = 600.0
    clock: Callable[[], float] = time.monotonic
    budgets: list[SeriesBudget] = field(default_factory=list)

    def budget(self, collector: str, limit: int) -> SeriesBudget:
        """A source's budget within this pool."""
        b = SeriesBudget(collector, limit, self)
        self.budgets.append(b)
        return b

    def known(self) -> int:
        """Series known over all sources."""
        return sum(len(b.known) for b in self.budgets)

    def expire(self) -> None:
        """Forget, in every source, the series unseen for `ttl`."""
        for b in self.budgets:
            b.expire()


@dataclass
class SeriesBudget:
    """One source's known series and counters (see the module's contract)."""

    collector: str
    limit: int
    pool: SeriesPool
    # series key -> the collection that last saw it; a collection's time is kept once, in
    # `_seen_at`, so a collection that repeats the last one refreshes all its series at once.
    known: dict[int, int] = field(default_factory=dict)
    refused_total: int = 0
    refused_last: int = 0
    _seen_at: dict[int, float] = field(default_factory=dict)
    _collection: int = 0
    _digests: tuple[int, ...] = ()  # of the last collection admitted whole (one of `_collection`)

    def expire(self) -> None:
        """Forget the series unseen for the pool's `ttl`."""
        cutoff = self.pool.clock() - self.pool.ttl
        old = {c for c, seen in self._seen_at.items() if seen < cutoff}
        if old:
            if self._collection in old:
                self._digests = ()
            self.known = {k: c for k, c in self.known.items() if c not in old}
            self._seen_at = {c: seen for c, seen in self._seen_at.items() if c not in old}

    def room(self) -> int:
        """How many new series may still be admitted."""
        return max(0, min(self.limit - len(self.known), self.pool.limit - self.pool.known()))

    def admit(self, families: Sequence[Family]) -> list[Family]:
        """The families with the series over budget removed (known series always stay)."""
        now = self.pool.clock()
        self.refused_last = 0
        digests = tuple(map(digest, families))
        if digests and digests == self._digests:
            self._seen_at[self._collection] = now  # the same series as last time: all kept
            return list(families)
        self._digests = ()
        keys = [series_keys(f) for f in families]
        seen = set(chain.from_iterable(keys))
        new = len(seen.difference(self.known))
        if new and new > self.room():
            self.pool.expire()  # make room from series that stopped appearing, then decide
            new = len(seen.difference(self.known))
        self._collection += 1
        self._seen_at[self._collection] = now
        if len(self._seen_at) > _COLLECTIONS:
            self.expire()  # (the times of collections kept are bounded by the ttl)
        if not new or new <= self.room():
            self.known.update(dict.fromkeys(seen, self._collection))
            self._digests = digests
            return list(families)
        out = list(self._shed(families, keys))
        self.refused_total += self.refused_last
        return out

    def _shed(self, families: Sequence[Family], keys: list[list[int]]) -> Iterator[Family]:
        known, room, collection = self.known, self.room(), self._collection
        for fam, fam_keys in zip(families, keys):
            lines = _lines(fam)
            kept: list[bytes] = []
            groups: dict[int, bool] = {}  # histogram/summary group -> admitted
            for line, key in zip(lines, fam_keys):
                if key in known:
                    ok = True
                elif fam.type in _GROUPED:
                    group = _group(fam, line)
                    if group not in groups:
                        groups[group] = room > 0
                    ok = groups[group]
                    room -= ok
                else:
                    ok = room > 0
                    room -= ok
                if ok:
                    known[key] = collection
                    kept.append(line)
                else:
                    self.refused_last += 1
            if kept:
                yield Family(fam.name, fam.type, fam.help, kept, fam.stamped)
