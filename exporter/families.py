"""Families of derived series (self-metrics, JSON sources), declared as tables.

A collector that builds its series itself declares them as `Metric`s and adds samples to a
`Builder`, which finishes every label set through the collector's CommonLabels: the same
common labels, pod join and relabel rules as the series the transform engine rewrites, with
no text encoded and parsed again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple
from collections.abc import Iterable, Mapping

from exporter.expfmt import Family, escape_help
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.transform.hooks import Pairs, PodKey
from exporter.labels import CommonLabels
from exporter.transform.result import Result


def format_value(value: float) -> bytes:
    """A float as Go's exposition writes it (NaN, +Inf, -Inf, shortest repr)."""
    if math.isnan(value):
        return b"NaN"
    if math.isinf(value):
        return b"+Inf" if value > 0 else b"-Inf"
    if value == int(value) and abs(value) < 1e15:
        return b"%d" % int(value)
    return repr(float(value)).encode()


@dataclass(frozen=True)
class Metric:
    """A declared family: name, type, help, label names."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()

    def family(self) -> Family:
        """An empty family for this declaration."""
        return Family(self.name, self.type, escape_help(self.help))


class PodLabels(NamedTuple):
    """A pod-scoped series' own labels (namespace and pod first) and its pod's join labels
    (none when the pod index lacks the pod)."""

    own: Mapping[str, str]
    joined: Pairs


Labels = Mapping[str, object] | PodLabels | None


class Builder:
    """Collects samples of declared metrics, finished through `labels`; `families()` returns
    them in declaration order (families a rule renamed into come after)."""

    def __init__(self, metrics: Iterable[Metric], labels: CommonLabels,
                 index: PodIndex | None = None) -> None:
        self.labels = labels
        self.index = index
        self.misses = 0    # pod-scoped samples whose pod the index did not know
        self.dropped = 0   # samples a relabel rule dropped
        self.samples = 0
        self._fams: dict[str, tuple[Metric, Family]] = {}
        self._moved: dict[str, Family] = {}
        self._joins: dict[PodKey, Pairs | None] = {}
        for m in metrics:
            self.declare(m)

    def declare(self, metric: Metric) -> None:
        """Add a declaration (idempotent)."""
        if metric.name not in self._fams:
            self._fams[metric.name] = (metric, metric.family())

    def meta(self, namespace: str, pod: str) -> PodMeta | None:
        """The pod's metadata, or None (then the index is asked to refresh early)."""
        meta = self.index.get(namespace, pod) if self.index is not None else None
        if meta is None and self.index is not None:
            self.index.request_refresh()
        return meta

    def pod(self, namespace: str, pod: str, own: Mapping[str, str] | None = None,
            meta: PodMeta | None = None) -> PodLabels:
        """Labels of a series of this pod: namespace, pod and `own`, plus the pod's join. A pod
        the index does not know counts as a join miss, as in the engine."""
        key = (namespace, pod)
        if key not in self._joins:
            meta = meta or self.meta(namespace, pod)
            self._joins[key] = list(self.index.join_labels(meta)) if meta and self.index else None
        joined = self._joins[key]
        if joined is None and self.index is not None:
            self.misses += 1
        return PodLabels({"namespace": namespace, "pod": pod, **(own or {})}, joined or [])

    def add(self, metric: Metric | str, value: float, labels: Labels = None, suffix: str = "") -> None:
        """One sample. The declared labels must be given (empty values are left out); extra
        labels follow them."""
        name = metric if isinstance(metric, str) else metric.name
        if not isinstance(metric, str):
            self.declare(metric)
        decl, fam = self._fams[name]
        own, joined = (labels.own, labels.joined) if isinstance(labels, PodLabels) else (labels or {}, [])
        missing = [n for n in decl.labels if n not in own]
        if missing:
            raise ValueError(f"{name}: missing labels {missing}")
        pairs = [(n, str(own[n])) for n in decl.labels]
        pairs += [(n, str(v)) for n, v in own.items() if n not in decl.labels and v is not None]
        done = self.labels.finish_cached(name + suffix, pairs, joined)
        if done is None:
            self.dropped += 1
            return
        if done.name != name + suffix:
            fam = self._moved.get(done.name) or self._moved.setdefault(done.name, Family(
                done.name, decl.type if decl.type in ("counter", "gauge") else "untyped", fam.help))
        self.samples += 1
        fam.lines.append(done.name.encode() + (b"{" + done.labels + b"} " if done.labels else b" ")
                         + format_value(float(value)))

    def families(self) -> list[Family]:
        """Declared families with at least one sample, then families rules renamed into."""
        return [f for _, f in self._fams.values() if f.lines] + [f for f in self._moved.values() if f.lines]

    def result(self) -> Result:
        """The families and counts, as a transform reports them."""
        return Result(families=self.families(), series_out=self.samples, dropped=self.dropped,
                      join_misses=self.misses)
