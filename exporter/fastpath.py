"""The steady-state fast path: a payload shaped exactly like the last one, at C speed.

Between two scrapes an upstream usually serves the same series in the same order with new
values. After a scan that met nothing irregular, a `Plan` records, by line position, what
each line must start with (its series head, or the whole line for comments and blank lines)
and an output template: name, label bytes, value, newline per emitted series, of which only
the values change. The next payload is checked against the plan and rewritten with `map`/
`compress`/`join` over whole lists: no Python bytecode runs per line. Anything that does not
fit (a new or vanished series, a changed comment) returns None, and the transformer scans
line by line as usual.

The check is one `bytes.removeprefix` per line: a line that starts with its planned head leaves
its value (and timestamp); one that does not comes back whole. Every head of a sample line is
non-empty, so the rests add up to exactly "payload minus heads" only if every line matched;
comment and blank lines must leave nothing at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_, itemgetter, ne
from typing import Any, Callable, Sequence

from exporter.expfmt import Family

_FIRST = itemgetter(0)


@dataclass
class Plan:
    """What the last clean scan saw, position by position."""

    heads: list[bytes]         # what each line starts with (the whole line: comments, blanks)
    head_bytes: int            # their total length
    cmask: list[bool]          # comment and blank lines: nothing may follow their head
    smask: list[bool]          # emitted series (the others are dropped series)
    template: list[bytes]      # output, 4 pieces per line: name, labels, value, newline
    cuts: list[tuple[int, int]]   # per family block: its slice of `template`
    families: list[tuple[str, str, str | None, list[int]]]  # name, type, help, its blocks
    values: list[bytes]        # last values (validated): only changed ones are checked again
    series_in: int
    dropped: int
    misses: int                # series naming a pod the index does not know (yet)
    conflicts: int             # upstream labels that differed from a join label
    dupes: set[str] = field(default_factory=set)  # families the scan had to deduplicate


def build(heads: list[bytes], head_bytes: int, names: list[bytes | None], lbs: list[bytes | None],
          template: list[bytes], families: Sequence[Family], spans: Sequence[tuple[Family, int, int]],
          values: list[bytes], scan: Any) -> Plan:
    """A plan from a clean scan: per line the head it starts with (the whole line for comments
    and blank lines; then their total length), its output name and label bytes (both None for
    comments and blank lines, label bytes b"" for a dropped series), the scan's output template
    (4 pieces per emitted line), the output ranges of each family block, the validated values
    and the scan's counts (a pipeline.Result: its dropped series are the b"" label bytes).
    Comment lines are found by name: a handful of objects, where the label bytes are
    thousands, each touched by a pass."""
    blocks: dict[str, list[int]] = {f.name: [] for f in families}
    for i, (fam, _, _) in enumerate(spans):
        blocks[fam.name].append(i)
    return Plan(heads, head_bytes, list(map(is_, names, repeat(None))), list(map(bool, lbs)),
                template, [(4 * start, 4 * end - 1) for _, start, end in spans],
                [(f.name, f.type, f.help, blocks[f.name]) for f in families], values, scan.series_in,
                scan.dropped, scan.join_misses, scan.label_conflicts)


def run(plan: Plan, payload: bytes, lines: list[bytes], timestamps: bool,
        valid: Callable[[list[bytes], bool], bool]) -> list[Family] | None:
    """Rewrite `lines` (the payload split on newlines) by the plan, or None if they do not
    have the plan's shape or a changed value fails `valid`. Family lines are blocks: several
    sample lines joined by newlines."""
    heads, out = plan.heads, plan.template
    if len(lines) != len(heads):
        return None
    rests = list(map(bytes.removeprefix, lines, heads))
    if (sum(map(len, rests)) != len(payload) - len(lines) + 1 - plan.head_bytes
            or any(compress(rests, plan.cmask))):
        return None
    values: list[bytes] = []
    if out:
        kept = compress(rests, plan.smask)
        # The value is the rest up to its first space (the timestamp, when dropped, after it).
        values = list(kept) if timestamps else list(map(_FIRST, map(bytes.partition, kept, repeat(b" "))))
    changed = list(compress(values, map(ne, values, plan.values)))
    if changed and not valid(changed, timestamps):
        return None
    plan.values = values
    out[2::4] = values
    blocks = [b"".join(out[a:b]) for a, b in plan.cuts]
    return [Family(name, kind, help_, [blocks[i] for i in mine]) for name, kind, help_, mine in plan.families]
