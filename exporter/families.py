"""Building families for derived series (self-metrics, JSON sources) declared as tables."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from exporter.expfmt import Family, escape_help, format_labels


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


class Builder:
    """Collects samples for declared metrics; `families()` returns them in declaration order."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._fams: dict[str, tuple[Metric, Family]] = {}
        for m in metrics:
            self.declare(m)

    def declare(self, metric: Metric) -> None:
        """Add a declaration (idempotent)."""
        self._fams.setdefault(metric.name, (metric, metric.family()))

    def add(self, metric: Metric | str, value: float, labels: Mapping[str, str] | None = None,
            suffix: str = "") -> None:
        """One sample; labels must be the declared ones (extra labels are allowed at the end)."""
        name = metric if isinstance(metric, str) else metric.name
        if not isinstance(metric, str):
            self.declare(metric)
        decl, fam = self._fams[name]
        labels = labels or {}
        missing = [n for n in decl.labels if n not in labels]
        if missing:
            raise ValueError(f"{name}: missing labels {missing}")
        pairs = [(n, str(labels[n])) for n in decl.labels]
        pairs += [(n, str(v)) for n, v in labels.items() if n not in decl.labels]
        text = format_labels(pairs)
        head = (name + suffix).encode()
        fam.lines.append(head + (b"{" + text + b"} " if text else b" ") + format_value(value))

    def families(self) -> list[Family]:
        """Declared families with at least one sample."""
        return [f for _, f in self._fams.values() if f.lines]
