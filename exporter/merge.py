"""Merging families from many sources into one exposition: one HELP/TYPE per name."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from exporter.expfmt import Family


def merge(sources: Iterable[tuple[str, Iterable[Family]]]) -> tuple[list[Family], Counter[str]]:
    """Families with the same name from several sources become one (samples concatenated in
    source order, each source's sample order kept: histogram buckets stay in order). A family
    whose type differs from the one already kept is dropped and counted per source. A merged
    family is stamped (its lines may carry timestamps) if any of its parts is.
    Output is sorted by family name, so it is deterministic."""
    kept: dict[str, Family] = {}
    conflicts: Counter[str] = Counter()
    for source, families in sources:
        for fam in families:
            have = kept.get(fam.name)
            if have is None:
                kept[fam.name] = Family(fam.name, fam.type, fam.help, list(fam.lines),
                                        fam.stamped)
            elif have.type == fam.type:
                have.lines.extend(fam.lines)
                if have.help is None:
                    have.help = fam.help
                if fam.stamped:
                    have.stamped = True
            else:
                conflicts[source] += 1
    return [kept[n] for n in sorted(kept)], conflicts
