"""What a source may plug into the engine: a SeriesHook, and what its `prepare` reports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from collections.abc import Hashable

from exporter.podindex import PodIndex
from exporter.pods import PodMeta

Pairs = list[tuple[str, str]]
PodKey = tuple[str, str]


@dataclass(frozen=True)
class Changes:
    """Which cached rewrites a hook's `prepare` made stale: those of some pods, or all."""

    pods: frozenset[PodKey] = frozenset()
    everything: bool = False


NOTHING = Changes()
EVERYTHING = Changes(everything=True)


class SeriesHook(Protocol):
    """Source-specific rewriting of one label set (cAdvisor classification, volume claims).

    Contract: `rewrite` depends only on the variant, the pairs, the pod, and the state `prepare`
    last saw, so that the engine may cache its result per label text. `prepare` runs before
    every transform, with the payload's lines and the pod index, and reports what its new state
    makes stale; the engine evicts exactly that."""

    def variant(self, family: str) -> Hashable: ...

    def rewrite(self, variant: Hashable, pairs: Pairs, pod: PodMeta | None) -> Pairs | None: ...

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes: ...


class NoHook:
    """The identity hook."""

    def variant(self, family: str) -> Hashable:
        return None

    def rewrite(self, variant: Hashable, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        return pairs

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        return NOTHING
