"""What one transform returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from exporter.expfmt import Family

ERRORS_KEPT = 20  # bad lines named per transform (all are counted)


class BadLine(NamedTuple):
    """An upstream line that was dropped, and why."""

    line: bytes
    reason: str


@dataclass
class Result:
    """One transform's families and counts."""

    families: list[Family]
    series_in: int = 0
    series_out: int = 0
    malformed: int = 0
    join_misses: int = 0
    dropped: int = 0
    label_conflicts: int = 0
    errors: list[BadLine] = field(default_factory=list)

    def bad(self, line: bytes, reason: str) -> None:
        """Count a malformed line (and name it, for the first few)."""
        self.malformed += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(BadLine(line, reason))
