"""The labels every series of a collector gains, and the relabel rules: applied in one place.

Every path that emits a series, the transform engine, the declared-table collectors
(exporter.families.Builder) and the self and process metrics, ends in `CommonLabels.finish`.
Order of the result: the series' own labels (empty values left out; an own `collector`
renamed `exported_collector`, `exported_` repeated until free, as Prometheus resolves clashes
with target labels), then the joined labels it does not have (pod labels, workload, node),
then `node`, the node's topology (`region`, `zone`, `node_role`, `node_label_*`: only on series
that get this agent's `node`) and `cluster` unless present, then `collector`. The relabel rules
see all of these and `__name__`; `collector` stays last.

The topology is live (`NodeLabels`, the node agent's `exporter.nodeinfo.NodeTopology`): the
configured `cluster` wins over the one it names, and `finish_cached` forgets its results when
its generation moves. (The engine's caches are evicted by the hook wrapper in
exporter/passthrough.py.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from collections.abc import Sequence

from exporter import relabel
from exporter.expfmt import METRIC_NAME, format_labels


_CACHED = 100_000
Pairs = tuple[tuple[str, str], ...]
_MISSING = object()


class NodeLabels(Protocol):
    """The live dimensions of the agent's node. `generation` changes whenever the answers of
    `pairs()` or `cluster()` may change."""

    generation: int

    def pairs(self) -> Pairs: ...

    def cluster(self) -> str: ...


class Finished(NamedTuple):
    """A series' final name and its label text (`a="1",b="2"`, b"" for none)."""

    name: str
    labels: bytes


@dataclass(frozen=True)
class CommonLabels:
    """What one collector adds to each of its series, and its relabel rules (global first)."""

    collector: str = ""
    cluster: str = ""
    node: str = ""
    rules: tuple[relabel.Rule, ...] = ()
    topology: NodeLabels | None = field(default=None, compare=False)
    # finish()'s results by argument, for callers that build the same series every scrape
    # (see finish_cached). Cleared when it outgrows _CACHED.
    _done: dict[tuple[str, Pairs, Pairs], Finished | None] = field(default_factory=dict, compare=False,
                                                                    repr=False)
    _seen: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)  # topology generation

    def _extra(self) -> list[tuple[str, str]]:
        """node, the node's topology and cluster, in output order (empty values included)."""
        topo = self.topology
        if topo is None:
            return [("node", self.node), ("cluster", self.cluster)]
        out = [("node", self.node)]
        if self.node:
            out += topo.pairs()
        out.append(("cluster", self.cluster or topo.cluster()))
        return out

    def defaults(self) -> dict[str, str]:
        """The node, its topology and cluster a series gets when it has none of its own."""
        return {k: v for k, v in self._extra() if v}

    def finish_cached(self, name: str, own: Sequence[tuple[str, str]],
                      joined: Sequence[tuple[str, str]] = ()) -> Finished | None:
        """finish(), remembered by its arguments (the declared-table collectors rebuild the
        same label sets on every scrape)."""
        if self.topology is not None and self.topology.generation != self._seen[0]:
            self._done.clear()
            self._seen[0] = self.topology.generation
        key = (name, tuple(own), tuple(joined))
        got = self._done.get(key, _MISSING)
        if got is _MISSING:
            if len(self._done) >= _CACHED:
                self._done.clear()
            got = self._done[key] = self.finish(name, own, joined)
        return got  # type: ignore[return-value]

    def finish(self, name: str, own: Sequence[tuple[str, str]],
               joined: Sequence[tuple[str, str]] = ()) -> Finished | None:
        """The final name and labels of a series, or None when a rule drops it."""
        labels: dict[str, str] = {}
        for k, v in own:
            if v:
                if k == "collector" and self.collector:
                    k = "exported_collector"
                    while any(n == k for n, _ in own):
                        k = "exported_" + k
                labels[k] = v
        for k, v in joined:
            if v and k not in labels:
                labels[k] = v
        for k, v in self._extra():
            if v and k not in labels:
                labels[k] = v
        if self.collector:
            labels["collector"] = self.collector
        if self.rules:
            out = relabel.apply(self.rules, {"__name__": name, **labels})
            if out is None:
                return None
            name = out.pop("__name__", "")
            if not METRIC_NAME.match(name):
                return None
            if self.collector and "collector" in out:
                out["collector"] = out.pop("collector")
            labels = out
        return Finished(name, format_labels(labels.items()))
