"""The replay: a payload shaped exactly like the last clean one, rewritten at C speed.

Between two scrapes an upstream usually serves the same series in the same order with new
values. After a clean scan (nothing irregular, see scan.Scanner) a `Plan` records, by line
position, what each line must start with (its series head, or the whole line for comments and
blank lines) and an output template (name, label piece, validated value, newline per emitted
series) of which only the values change. The next payload is checked against the plan and
rewritten with map/compress/join over whole lists: no Python bytecode runs per line. Anything
that does not fit returns None, and the transformer scans.

Invariant of the check: every head of a sample line is non-empty, so the rests (one
`bytes.removeprefix` per line) add up to exactly "payload minus heads" only if every line
started with its head; comment and blank lines must leave nothing at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import itemgetter, ne

from exporter.expfmt import Family
from exporter.transform import values
from exporter.transform.result import Result

_FIRST = itemgetter(0)


@dataclass(frozen=True)
class PlannedFamily:
    """A family of the replayed output and the blocks (indexes into Plan.cuts) it holds."""

    name: str
    type: str
    help: str | None
    blocks: list[int]


@dataclass
class Plan:
    """What the last clean scan saw, position by position, and the output it made."""

    heads: list[bytes]             # what each line starts with (the whole line: comments, blanks)
    head_bytes: int                # their total length
    comment: bytes                 # 1: a comment or blank line, after whose head nothing may follow
    emitted: bytes                 # 1: a sample line that went out (the others were dropped)
    template: list[bytes]          # output, 4 pieces per emitted line: name, labels, value, newline
    cuts: list[tuple[int, int]]    # per family block: its slice of `template`
    families: list[PlannedFamily]
    stamped: bool                  # the values carry their timestamps
    counts: Result                 # the scan's counts, without families: a replay has the same
                                   # (its bad lines can only be comments, repeated byte for byte)


def replay(plan: Plan, size: int, lines: list[bytes]) -> list[Family] | None:
    """The families for `lines` (a payload of `size` bytes split on newlines) by the plan, or
    None when the lines do not have the plan's shape or a changed value is invalid. On success
    the lines are consumed (the list is emptied: only their values are needed by then)."""
    heads, out = plan.heads, plan.template
    if len(lines) != len(heads):
        return None
    rests = list(map(bytes.removeprefix, lines, heads))
    if (sum(map(len, rests)) != size - len(lines) + 1 - plan.head_bytes
            or any(compress(rests, plan.comment))):
        return None
    kept = compress(rests, plan.emitted)
    vals = list(kept) if plan.stamped else list(map(_FIRST, map(bytes.partition, kept, repeat(b" "))))
    if not values.all_valid(list(compress(vals, map(ne, vals, islice(out, 2, None, 4)))), plan.stamped):
        return None
    lines.clear()
    del rests
    out[2::4] = vals
    blocks = [b"".join(out[a:b]) for a, b in plan.cuts]
    return [Family(f.name, f.type, f.help, [blocks[i] for i in f.blocks], plan.stamped)
            for f in plan.families]
