"""The scan: a payload read line by line into families, predicted by the last scan.

Each sample line is, in order of cost:
1. predicted: it starts with the head (`name{labels} `) the line at its position had last
   time, while the payload has the last scan's comment lines at the same positions; the
   rewrite is the one found then;
2. split: `name{text} rest` found with find/rfind, the text's rewrite looked up in the
   rewriter's cache (or made once: rewrite.LabelRewriter);
3. precise: anything else (other whitespace, escapes that fool the split, samples outside
   their family, renamed series) goes through the precise parser, uncached.
Then one repair step: stray histogram and summary series join their family (read again as
its series: `le` and `quantile` must be floats), values are validated in bulk (a line whose
value fails is parsed precisely once more, then dropped and counted if it still fails), and
duplicate output series keep the last. The value of a series that the hook or a rule drops is
not read (a replay does not read it either).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import attrgetter, is_, itemgetter
from typing import NamedTuple

from exporter.errors import ParseError
from exporter.expfmt import METRIC_NAME, Family, escape_help, parse_comment, parse_line
from exporter.transform import values
from exporter.transform.hooks import SeriesHook
from exporter.transform.plan import Plan, PlannedFamily
from exporter.transform.result import Result
from exporter.transform.rewrite import LabelRewriter, Lane, Rewrite

_FIRST = itemgetter(0)
_PIECE, _MISSED, _CONFLICTS = attrgetter("piece"), attrgetter("missed"), attrgetter("conflicts")
_BLANKS = (b" ", b"\t", b"")
_INDENTS = _BLANKS[:2]


@dataclass
class Positions:
    """What a scan saw at each line position, for the next one to predict with: the head a
    sample line started with (the whole line for comments and blanks; None: look again), its
    output name and its rewrite (None for comments, blank and bad lines); and after each
    comment or blank line, the family the lines that follow belong to. A prediction holds
    while those families are the same as last time."""

    heads: list[bytes | None] = field(default_factory=list)
    names: list[bytes | None] = field(default_factory=list)
    rewrites: list[Rewrite | None] = field(default_factory=list)
    sections: dict[int, tuple[str, str] | None] = field(default_factory=dict)  # by position


@dataclass
class Scan:
    """One pass: its Positions, and per position what followed the head and the family the
    line belongs to; the families by name; whether a replay could repeat it."""

    now: Positions = field(default_factory=Positions)
    rests: list[bytes] = field(default_factory=list)
    fams: list[Family | None] = field(default_factory=list)
    families: dict[str, Family] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)  # families with a TYPE or samples: no TYPE now
    precise: dict[int, bytes] = field(default_factory=dict)  # the lines read precisely, by position
    openmetrics: bool = False
    irregular: bool = False

    def emitted(self) -> list[int]:
        """The positions of the series that go out."""
        return [p for p, r in enumerate(self.now.rewrites) if r is not None and r.piece is not None]


class Precise(NamedTuple):
    """A sample line read by the precise parser: its family, output name, rewrite and rest."""

    family: Family
    name: bytes
    rewrite: Rewrite
    rest: bytes


class Scanner:
    """Reads payloads into families for one transformer, remembering the last scan."""

    def __init__(self, rewriter: LabelRewriter, hook: SeriesHook, keep_timestamps: bool) -> None:
        self.rewriter = rewriter
        self.hook = hook
        self.stamped = keep_timestamps
        self.last = Positions()

    def lane_of(self, fam: Family) -> Lane:
        """The rewriter's lane for a family's label texts."""
        return Lane(self.hook.variant(fam.name), fam.type in ("histogram", "summary"))

    def forget(self) -> None:
        """Predict nothing from the last scan (its rewrites may be stale)."""
        self.last = Positions()

    def text(self, lines: list[bytes], res: Result) -> Plan | None:
        """Scan a text-format payload into res.families; returns a plan when a replay can
        repeat this scan."""
        last, rw = self.last, self.rewriter
        st = Scan()
        heads, names, rewrites, rests, fams = st.now.heads, st.now.names, st.now.rewrites, st.rests, st.fams
        predict = len(last.heads) == len(lines) and _same_comments(lines, last)
        cur: Family | None = None
        lane: dict[bytes, Rewrite] = {}
        key = Lane(None)
        owned: dict[bytes, bool] = {}
        seen: dict[bytes, bytes] = {}  # one object per sample name (positions hold names)
        sampled = False  # cur has had a sample line since its header
        by_name = rw.by_name
        head: bytes | None
        for pos, line in enumerate(lines):
            lines[pos] = b""  # consumed: its head and rest replace it (line == head + rest)
            if line[:1] in _INDENTS and line.lstrip(b" \t")[:1] in b"#":
                line = line.lstrip(b" \t")  # an indented comment, or a line of blanks
            if not line or line[0] == 35:  # blank, or a comment ('#')
                res.series_in -= 1
                if line:
                    if sampled:
                        st.settled.add(cur.name)  # type: ignore[union-attr]  # (sampled: cur is set)
                        sampled = False
                    fam = header(line[1:], cur, st, res)
                    if fam is not None:  # (a TYPE may change what the family owns)
                        cur, owned, key = fam, {}, self.lane_of(fam)
                        lane = rw.lane(key)
                section = st.now.sections[pos] = (cur.name, cur.type) if cur is not None else None
                if predict and last.sections.get(pos, ()) != section:
                    predict = False  # (a TYPE taken last time, refused now): other families follow
                head, nm, r, rest = line, None, None, b""
            elif predict and (head := last.heads[pos]) is not None and line.startswith(head):
                nm, r, rest = last.names[pos], last.rewrites[pos], line[len(head):]
                sampled = True
            else:
                i = line.find(b"{")
                if i > 0:  # `name{text} rest`
                    k = line.rfind(b"} ") + 2
                    split = k - 2 > i
                    nm, text = line[:i], line[i + 1:k - 2]
                else:  # `name rest`
                    k = line.find(b" ") + 1
                    split = i < 0 and k > 1
                    nm, text = line[:k - 1], b""
                nm = seen.setdefault(nm, nm)
                ok = owned.get(nm)
                if ok is None and cur is not None:
                    ok = owned[nm] = METRIC_NAME.match(nm.decode("latin-1")) is not None and cur.owns(
                        nm.decode())
                r = None
                if split and ok:
                    r = lane.get(nm + b"{" + text if by_name else text)
                    if r is None:
                        try:
                            r = rw.text(key, nm, text)
                        except ParseError:
                            r = None
                    if r is not None and r.piece is not None and line[k:k + 1] in _BLANKS:
                        r = None  # more blanks, or none, before the value: read precisely
                if r is None or r.renamed is not None:
                    self._precise(line, cur, st, res)
                    continue
                head, rest = line[:k], line[k:]
                sampled = True
            heads.append(head)
            names.append(nm)
            rewrites.append(r)
            rests.append(rest)
            fams.append(cur)
        return self._finish(lines, st, res)

    def openmetrics(self, lines: list[bytes], res: Result) -> None:
        """Scan an OpenMetrics payload (every line precisely; rare upstreams, not planned)."""
        end = len(lines)
        while end and not lines[end - 1]:
            end -= 1
        if not end or lines[end - 1].rstrip(b"\r") != b"# EOF":
            raise ParseError("OpenMetrics payload does not end with '# EOF' (truncated?)")
        st = Scan(openmetrics=True, irregular=True)
        cur: Family | None = None
        for line in lines[:end - 1]:
            if line.startswith(b"#"):
                res.series_in -= 1
                cur = header(line[1:], cur, st, res)
                self._record(st, line, None, None, b"", cur)
            else:
                self._precise(line, cur, st, res)
        res.series_in -= len(lines) - end + 1
        self._finish(lines, st, res)

    @staticmethod
    def _record(st: Scan, head: bytes | None, name: bytes | None, r: Rewrite | None, rest: bytes,
                fam: Family | None) -> None:
        st.now.heads.append(head)
        st.now.names.append(name)
        st.now.rewrites.append(r)
        st.rests.append(rest)
        st.fams.append(fam)

    def _precise(self, line: bytes, cur: Family | None, st: Scan, res: Result) -> None:
        """Record a line read by the precise parser at the next position (or count it bad)."""
        st.irregular = True
        got = self._parse(line, cur, st, res)
        if got is None:
            self._record(st, None, None, None, b"", cur)
        else:
            st.settled.add(got.family.name)
            st.precise[len(st.now.heads)] = line
            self._record(st, None, got.name, got.rewrite, got.rest, got.family)

    def _parse(self, line: bytes, cur: Family | None, st: Scan, res: Result) -> Precise | None:
        fams, openmetrics = st.families, st.openmetrics
        stripped = line.lstrip(b" \t")
        if not stripped.rstrip(b" \t") or stripped.startswith(b"#"):
            res.series_in -= 1  # a line of blanks, or an indented comment
            return None
        try:
            sample = parse_line(stripped, openmetrics)
            rest = sample.value + (b" " + sample.timestamp_ms if sample.timestamp_ms else b"")
            if not values.valid(rest if self.stamped else sample.value, self.stamped):
                raise ParseError(f"value out of range {rest[:40]!r}")
            name = sample.name
            fam = cur
            created = fam is not None and fam.type == "counter" and name == fam.name[:-6] + "_created"
            if openmetrics and created:
                fam = None  # `_created` goes out as a gauge family of its own
            if fam is None or not fam.owns(name):
                fam = fams.get(name) or owner_of(name, fams)
                if fam is None:
                    kind = "gauge" if openmetrics and name.endswith("_created") else "untyped"
                    fam = fams[name] = Family(name, kind)
            r = self.rewriter.pairs(self.lane_of(fam), name, sample.labels)
        except ParseError as exc:
            res.bad(line, str(exc))
            return None
        if r.renamed is not None:
            fam = fams.get(r.renamed) or fams.setdefault(r.renamed, Family(
                r.renamed, fam.type if fam.type in ("counter", "gauge") else "untyped", fam.help))
            name = r.renamed
        return Precise(fam, name.encode(), r, rest)

    def _finish(self, lines: list[bytes], st: Scan, res: Result) -> Plan | None:
        """Repair, fill the families; the plan if the scan was clean."""
        now = st.now
        at, vals = self._repair(st, res)
        count = len(lines)
        lines.clear()  # consumed (see Transformer): the heads, rests and values are all needed now
        family: list[Family] = [st.fams[p] for p in at]  # type: ignore[misc]  # (emitted: has one)
        spans: list[tuple[Family, int]] = []  # (family, its block's first emitted series)
        for k, fam in enumerate(family):
            if not spans or spans[-1][0] is not fam:
                spans.append((fam, k))
        template = [b"\n"] * (4 * len(at))
        template[0::4] = list(map(now.names.__getitem__, at))  # type: ignore[arg-type]
        template[1::4] = [now.rewrites[p].piece for p in at]  # type: ignore[union-attr,misc]
        template[2::4] = vals
        cuts = [(4 * a, 4 * b - 1) for (_, a), (_, b) in zip(spans, [*spans[1:], (None, len(at))])]
        blocks: dict[str, list[int]] = {}
        for n, ((fam, _), (a, b)) in enumerate(zip(spans, cuts)):
            fam.lines.append(b"".join(template[a:b]))
            fam.stamped = self.stamped
            blocks.setdefault(fam.name, []).append(n)
        res.families = list({id(f): f for f in st.families.values() if f.lines}.values())
        res.series_out = len(at)
        self.last = now
        if st.irregular or None in now.heads:
            return None
        emitted = bytearray(count)
        for p in at:
            emitted[p] = 1
        heads: list[bytes] = now.heads  # type: ignore[assignment]  # (no None: checked above)
        return Plan(heads, sum(map(len, heads)), bytes(map(is_, now.names, repeat(None))), bytes(emitted),
                    template, cuts, [PlannedFamily(f.name, f.type, f.help, blocks[f.name])
                                     for f in res.families], self.stamped,
                    replace(res, families=[], errors=list(res.errors)))

    def _repair(self, st: Scan, res: Result) -> tuple[list[int], list[bytes]]:
        """The emitted positions and their output values, after the three repairs (each one
        makes the scan irregular: no plan). Counts drops, join misses and label conflicts."""
        now = st.now
        # Series of a histogram or summary that came outside its block (before its TYPE, or
        # under another family) join its family: one name, one TYPE in the output.
        owners = {f.name: o for f in st.families.values()
                  if (o := owner_of(f.name, st.families)) is not None and o is not f}
        if owners:
            st.irregular = True
            st.families.update(owners)
            moved = [p for p, f in enumerate(st.fams)
                     if f is not None and f.name in owners and now.rewrites[p] is not None]
            st.fams[:] = [f if f is None else owners.get(f.name, f) for f in st.fams]
            for p in moved:  # read again as its owner's series (a histogram's `le` must be a float)
                self._reread(st, p, res)
        at = st.emitted()
        vals = self._values(st, at)
        if not values.all_valid(vals, self.stamped):  # other whitespace fools the split
            st.irregular = True
            for p, val in zip(at, vals):
                if not values.valid(val, self.stamped):
                    self._reread(st, p, res)
            at = st.emitted()
            vals = self._values(st, at)
        rws = [r for r in now.rewrites if r is not None]
        res.join_misses += sum(map(_MISSED, rws))
        res.label_conflicts += sum(map(_CONFLICTS, rws))
        res.dropped += list(map(_PIECE, rws)).count(None)
        # Two lines, one output series (upstream duplicates, or a hook or rule that removed the
        # labels that told them apart): keep the last, as Prometheus keeps one anyway.
        keys = list(zip(map(now.names.__getitem__, at), map(_PIECE, map(now.rewrites.__getitem__, at))))
        last = dict(zip(keys, range(len(keys))))
        if len(last) != len(keys):
            st.irregular = True
            res.dropped += len(keys) - len(last)
            for k, key in enumerate(keys):
                if last[key] != k:
                    now.heads[at[k]] = None  # look again: the twin may be gone next time
            kept = sorted(last.values())
            at, vals = [at[k] for k in kept], [vals[k] for k in kept]
        return at, vals

    def _reread(self, st: Scan, p: int, res: Result) -> None:
        """Read the line at position p again, precisely, as a series of its family (or count it
        bad and drop it). A split or predicted line is its head and its rest."""
        now = st.now
        line = st.precise[p] if p in st.precise else (now.heads[p] or b"") + st.rests[p]
        got = self._parse(line, st.fams[p], st, res)
        now.heads[p] = None
        now.rewrites[p] = got.rewrite if got is not None else None
        if got is not None:
            now.names[p], st.rests[p], st.fams[p] = got.name, got.rest, got.family

    def _values(self, st: Scan, at: list[int]) -> list[bytes]:
        """The emitted series' output values: what followed the head, without the timestamp
        unless timestamps are kept (a dropped timestamp is not validated)."""
        rests = list(map(st.rests.__getitem__, at))
        return rests if self.stamped else list(map(_FIRST, map(bytes.partition, rests, repeat(b" "))))


def _same_comments(lines: list[bytes], last: Positions) -> bool:
    """Whether the comment and blank lines stand where they stood last time, unchanged."""
    where = list(map(is_, last.names, repeat(None)))
    return list(compress(lines, where)) == list(compress(last.heads, where))


def header(head: bytes, fam: Family | None, st: Scan, res: Result) -> Family | None:
    """A comment line (without its '#'): HELP and TYPE name the family that follows. A TYPE
    that would change the type of a family in `st.settled` (it had a TYPE, or samples) is a bad
    line: the family keeps its type, and what follows stays where it was. (The text format
    allows one TYPE, before the samples; a family in two blocks repeats it unchanged.)"""
    fams, settled, openmetrics = st.families, st.settled, st.openmetrics
    try:
        comment = parse_comment(head, openmetrics)
    except ParseError as exc:
        res.bad(b"#" + head, str(exc))
        return fam
    if comment is None:
        return fam
    name = comment.name
    if openmetrics and fam is not None and fam.name == name + "_total":
        name = fam.name  # HELP after TYPE for an OpenMetrics counter
    cur = fams.get(name)
    if cur is None:
        owner = owner_of(name, fams)
        if owner is not None:  # `x_count` after summary `x`: one name, two TYPEs
            res.bad(b"#" + head, f"{comment.keyword} for {name}, a series of {owner.type} {owner.name}")
            return fam
        cur = fams[name] = Family(name)
    if comment.keyword == "TYPE":
        if name in settled and comment.text != cur.type:
            res.bad(b"#" + head, f"TYPE {comment.text} for {cur.type} {name}, after its samples or TYPE")
            return fam
        settled.add(name)
        cur.type = comment.text
    elif cur.help is None:
        cur.help = escape_help(comment.text)
    return cur


def owner_of(name: str, fams: dict[str, Family]) -> Family | None:
    """The histogram or summary family whose series `name` is (by its suffix), if any."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            fam = fams.get(name[:-len(suffix)])
            if fam is not None and fam.owns(name):
                return fam
    return None
