"""One label set's rewrite: parse -> hook -> pod join -> common labels and relabel -> format.

The one general rewrite of the engine. Its result is cached per label text (and per sample
name when relabel rules read or write `__name__`), in one lane per hook variant, and evicted
per pod: every cached text that named a pod is listed under that pod, and goes when the pod
index or the hook reports the pod changed. Texts of pods the index does not know yet are
cached too (as join misses); the index lists a pod that appears as changed, so they go then.
"""
from __future__ import annotations

from typing import NamedTuple
from collections.abc import Hashable, Iterable, Sequence

from exporter import relabel
from exporter.errors import ParseError
from exporter.expfmt import parse_labels
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.transform.hooks import Pairs, PodKey, SeriesHook
from exporter.transform import values
from exporter.labels import CommonLabels


class Rewrite(NamedTuple):
    """What a label set becomes: the label piece that follows the sample name (`{...} `, or a
    space; None when the series is dropped), the new sample name when a rule renamed it, the
    pod it named, whether the index lacks that pod, and how many upstream labels differed
    from a join label of the same name (upstream wins)."""

    piece: bytes | None
    renamed: str | None
    pod: PodKey | None
    missed: bool
    conflicts: int


class Lane(NamedTuple):
    """Which cache a label text's rewrite lives in: the hook's variant of its family, and
    whether the family is a histogram or summary (whose `le` and `quantile` must be floats)."""

    variant: Hashable
    bounds: bool = False


class PodJoin(NamedTuple):
    """A pod's join labels, and the same with node and cluster as a dict (for conflicts)."""

    pairs: Pairs
    known: dict[str, str]


class LabelRewriter:
    """Rewrites label sets for one transformer, caching per label text, evicting per pod."""

    def __init__(self, labels: CommonLabels, index: PodIndex | None, hook: SeriesHook,
                 pod_scoped: bool) -> None:
        self.labels = labels
        self.index = index if pod_scoped else None
        self.hook = hook
        self.by_name = relabel.uses_name(labels.rules)  # the rewrite depends on the sample name
        self._lanes: dict[Lane, dict[bytes, Rewrite]] = {}
        self._by_pod: dict[PodKey, list[tuple[Lane, bytes]]] = {}
        self._joins: dict[PodKey | None, PodJoin] = {}

    def lane(self, lane: Lane) -> dict[bytes, Rewrite]:
        """The cache of one lane: label text (name + b"{" + text when by_name) -> rewrite."""
        cache = self._lanes.get(lane)
        if cache is None:
            cache = self._lanes[lane] = {}
        return cache

    def text(self, lane: Lane, name: bytes, text: bytes) -> Rewrite:
        """The rewrite of a label text (the bytes between the braces), cached. Raises
        ParseError for a label text Prometheus would reject."""
        key = name + b"{" + text if self.by_name else text
        cache = self.lane(lane)
        got = cache.get(key)
        if got is None:
            got = cache[key] = self.pairs(lane, name.decode(), parse_labels(text))
            if got.pod is not None:
                self._by_pod.setdefault(got.pod, []).append((lane, key))
        return got

    def pairs(self, lane: Lane, name: str, pairs: Sequence[tuple[str, str]]) -> Rewrite:
        """The rewrite of parsed label pairs (not cached)."""
        for k, v in pairs:
            if k == "__name__":
                raise ParseError("label name __name__ is reserved")
            if lane.bounds and k in ("le", "quantile") and not values.valid(v.encode(), False):
                raise ParseError(f"{k} is not a float: {v[:40]!r}")
        pk, pod = self._pod_of(pairs)
        new = self.hook.rewrite(lane.variant, list(pairs), pod)
        if new is None:
            return Rewrite(None, None, pk, pk is not None and pod is None, 0)
        join = self._join(pk, pod)
        conflicts = sum(1 for k, v in new if v and join.known.get(k, v) != v)
        done = self.labels.finish(name, new, join.pairs)
        if done is None:
            return Rewrite(None, None, pk, pk is not None and pod is None, conflicts)
        piece = b"{" + done.labels + b"} " if done.labels else b" "
        return Rewrite(piece, done.name if done.name != name else None, pk, pk is not None and pod is None,
                       conflicts)

    def _pod_of(self, pairs: Sequence[tuple[str, str]]) -> tuple[PodKey | None, PodMeta | None]:
        if self.index is None:
            return None, None
        labels = dict(pairs)
        ns, name = labels.get("namespace"), labels.get("pod") or labels.get("pod_name")
        if not ns or not name:
            return None, None
        return (ns, name), self.index.get(ns, name)

    def _join(self, pk: PodKey | None, pod: PodMeta | None) -> PodJoin:
        key = pk if pod is not None else None
        join = self._joins.get(key)
        if join is None:
            pairs = self.index.join_pairs(pod) if pod is not None and self.index is not None else []
            join = self._joins[key] = PodJoin(pairs, {**self.labels.defaults(), **dict(pairs)})
        return join

    def evict(self, pods: Iterable[PodKey]) -> bool:
        """Forget the rewrites of these pods; True if any was cached."""
        any_gone = False
        for pk in pods:
            self._joins.pop(pk, None)
            for lane, key in self._by_pod.pop(pk, ()):
                any_gone = self._lanes[lane].pop(key, None) is not None or any_gone
        return any_gone

    def clear(self) -> None:
        """Forget every rewrite."""
        self._lanes.clear()
        self._by_pod.clear()
        self._joins.clear()

    def size(self) -> int:
        """How many rewrites are cached."""
        return sum(map(len, self._lanes.values()))
