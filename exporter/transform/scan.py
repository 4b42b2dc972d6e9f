"""The scan: a payload read line by line into families, predicted by the last scan.

Each sample line is, in order of cost:
1. predicted: it starts with the head (`name{labels} `) the line at its position had last
   time, while the payload has the last scan's comment lines at the same positions; the
   rewrite is the one found then;
2. split: `name{text} rest` found with find/rfind, the text's rewrite looked up in the
   rewriter's cache (or made once: rewrite.LabelRewriter);
3. precise: anything else (other whitespace, escapes that fool the split, samples outside
   their family, renamed series) goes through the precise parser, uncached.
Values are validated in bulk at the end; a line whose value fails is parsed precisely once
more, then dropped and counted if it still fails. Duplicate output series keep the last.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import is_, is_not, itemgetter
from typing import NamedTuple

from exporter.errors import ParseError
from exporter.expfmt import METRIC_NAME, OM_TYPES, TYPES, Family, escape_help, parse_line
from exporter.transform import values
from exporter.transform.hooks import SeriesHook
from exporter.transform.plan import Counts, Plan, PlannedFamily
from exporter.transform.result import Result
from exporter.transform.rewrite import LabelRewriter, Lane, Rewrite

_FIRST = itemgetter(0)
_BLANKS = (b" ", b"\t", b"")


@dataclass
class Positions:
    """What a scan saw at each line position, for the next one to predict with: the head a
    sample line started with (None: look again), its output name and its rewrite (None for
    comments and blank lines)."""

    heads: list[bytes | None] = field(default_factory=list)
    names: list[bytes | None] = field(default_factory=list)
    rewrites: list[Rewrite | None] = field(default_factory=list)


class Precise(NamedTuple):
    """A sample line read by the precise parser: its family, output name, rewrite and rest."""

    family: Family
    name: bytes
    rewrite: Rewrite
    rest: bytes


@dataclass
class Scan:
    """One pass: per position (Positions plus what followed each head), per emitted series
    its position and family, and where each family block starts among the emitted."""

    now: Positions
    rests: list[bytes] = field(default_factory=list)
    at: list[int] = field(default_factory=list)           # emitted series -> position
    family: list[Family] = field(default_factory=list)    # emitted series -> family
    spans: list[tuple[Family, int]] = field(default_factory=list)
    families: dict[str, Family] = field(default_factory=dict)
    irregular: bool = False  # something a replay cannot repeat: no plan from this scan


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
        now = Positions()
        st = Scan(now)
        heads, names, rewrites, rests = now.heads, now.names, now.rewrites, st.rests
        at, fam_of, spans = st.at, st.family, st.spans
        predict = len(last.heads) == len(lines) and _same_comments(lines, last)
        cur: Family | None = None
        lane: dict[bytes, Rewrite] = {}
        key = Lane(None)
        owned: dict[bytes, bool] = {}
        by_name = rw.by_name
        for pos, line in enumerate(lines):
            if line[:1] in _BLANKS[:2] and line.lstrip(b" \t")[:1] in b"#":
                line = line.lstrip(b" \t")  # an indented comment, or a line of blanks
            if not line or line[0] == 35:  # blank, or a comment ('#')
                res.series_in -= 1
                if line:
                    fam = header(line[1:], cur, st.families, False, res)
                    if fam is not None:  # (a TYPE may change what the family owns)
                        cur, owned, key = fam, {}, self.lane_of(fam)
                        lane = rw.lane(key)
                heads.append(line)
                names.append(None)
                rewrites.append(None)
                rests.append(b"")
                continue
            if predict:
                head = last.heads[pos]
                if head is not None and line.startswith(head):
                    r = last.rewrites[pos]
                    heads.append(head)
                    names.append(last.names[pos])
                    rewrites.append(r)
                    rests.append(line[len(head):])
                    if r is not None and r.piece is not None:
                        at.append(pos)
                        fam_of.append(cur)  # type: ignore[arg-type]  # (a predicted line had one)
                        if not spans or spans[-1][0] is not cur:
                            spans.append((cur, len(at) - 1))  # type: ignore[arg-type]
                    continue
            i = line.find(b"{")
            if i > 0:  # `name{text} rest`
                k = line.rfind(b"} ") + 2
                split = k - 2 > i
                nm, text = line[:i], line[i + 1:k - 2]
            else:  # `name rest`
                k = line.find(b" ") + 1
                split = i < 0 and k > 1
                nm, text = line[:k - 1], b""
            ok = owned.get(nm)
            if ok is None and cur is not None:
                ok = owned[nm] = METRIC_NAME.match(nm.decode("latin-1")) is not None and cur.owns(nm.decode())
            r = None
            if split and ok and line[k:k + 1] not in _BLANKS:
                r = lane.get(nm + b"{" + text if by_name else text)
                if r is None:
                    try:
                        r = rw.text(key, nm, text)
                    except ParseError:
                        r = None
            if r is None or r.renamed is not None:
                self._precise(line, pos, cur, st, res)
                continue
            heads.append(line[:k])
            names.append(nm)
            rewrites.append(r)
            rests.append(line[k:])
            if r.piece is not None:
                at.append(pos)
                fam_of.append(cur)  # type: ignore[arg-type]  # (ok: owned by cur)
                if not spans or spans[-1][0] is not cur:
                    spans.append((cur, len(at) - 1))  # type: ignore[arg-type]
        return self._finish(lines, st, res)

    def openmetrics(self, lines: list[bytes], res: Result) -> None:
        """Scan an OpenMetrics payload (every line precisely; rare upstreams, not planned)."""
        end = len(lines)
        while end and not lines[end - 1]:
            end -= 1
        if not end or lines[end - 1].rstrip(b"\r") != b"# EOF":
            raise ParseError("OpenMetrics payload does not end with '# EOF' (truncated?)")
        st = Scan(Positions())
        cur: Family | None = None
        for pos, line in enumerate(lines[:end - 1]):
            if line.startswith(b"#"):
                res.series_in -= 1
                cur = header(line[1:], cur, st.families, True, res)
                st.now.heads.append(line)
                st.now.names.append(None)
                st.now.rewrites.append(None)
                st.rests.append(b"")
            else:
                self._precise(line, pos, cur, st, res, openmetrics=True)
        res.series_in -= len(lines) - end + 1
        st.irregular = True
        self._finish(lines, st, res)

    def _precise(self, line: bytes, pos: int, cur: Family | None, st: Scan, res: Result,
                 openmetrics: bool = False) -> None:
        """Record a line read by the precise parser at its position (or count it bad)."""
        st.irregular = True
        got = self._parse(line, cur, st.families, res, openmetrics)
        st.now.heads.append(None)
        st.now.names.append(got.name if got else None)
        st.now.rewrites.append(got.rewrite if got else None)
        st.rests.append(got.rest if got else b"")
        if got is not None and got.rewrite.piece is not None:
            st.at.append(pos)
            st.family.append(got.family)
            if not st.spans or st.spans[-1][0] is not got.family:
                st.spans.append((got.family, len(st.at) - 1))

    def _parse(self, line: bytes, cur: Family | None, fams: dict[str, Family], res: Result,
               openmetrics: bool) -> Precise | None:
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
        """Validate values, drop duplicates, fill the families; the plan if the scan is clean."""
        now, at = st.now, st.at
        self._adopt(st)
        vals = self._values(st)
        if not values.all_valid(vals, self.stamped):
            self._mend(lines, st, vals, res)
            vals = self._values(st)
        rws = [r for r in now.rewrites if r is not None]  # (a malformed line's is gone)
        res.join_misses += sum(1 for r in rws if r.missed)
        res.label_conflicts += sum(r.conflicts for r in rws)
        res.dropped += sum(1 for r in rws if r.piece is None)
        names = list(map(now.names.__getitem__, at))
        pieces = [now.rewrites[p].piece for p in at]  # type: ignore[union-attr]
        keys = list(zip(names, pieces))
        if len(set(keys)) != len(keys):
            self._dedupe(st, keys, res)
            vals = self._values(st)
            names = list(map(now.names.__getitem__, at))
            pieces = [now.rewrites[p].piece for p in at]  # type: ignore[union-attr]
        template = [b"\n"] * (4 * len(at))
        template[0::4], template[1::4], template[2::4] = names, pieces, vals  # type: ignore[assignment]
        cuts = [(4 * a, 4 * b - 1) for (_, a), (_, b) in zip(st.spans, [*st.spans[1:], (None, len(at))])]
        blocks: dict[str, list[int]] = {}
        for n, ((fam, _), (a, b)) in enumerate(zip(st.spans, cuts)):
            fam.lines.append(b"".join(template[a:b]))
            fam.stamped = self.stamped
            blocks.setdefault(fam.name, []).append(n)
        res.families = list({id(f): f for f in st.families.values() if f.lines}.values())
        res.series_out = len(at)
        self.last = now
        if st.irregular or None in now.heads:
            return None
        emitted = [False] * len(lines)
        for p in at:
            emitted[p] = True
        heads: list[bytes] = now.heads  # type: ignore[assignment]  # (no None: checked above)
        return Plan(heads, sum(map(len, heads)), list(map(is_, now.names, repeat(None))), emitted,
                    template, cuts, [PlannedFamily(f.name, f.type, f.help, blocks[f.name])
                                     for f in res.families], vals, self.stamped,
                    Counts(res.series_in, res.series_out, res.dropped, res.join_misses, res.label_conflicts))

    @staticmethod
    def _adopt(st: Scan) -> None:
        """Series of a histogram or summary that came outside its block (before its TYPE, or
        under another family) join its family: one name, one TYPE in the output."""
        owners = {f.name: o for f in st.families.values()
                  if (o := owner_of(f.name, st.families)) is not None and o is not f}
        if not owners:
            return
        st.irregular = True
        for name, owner in owners.items():
            st.families[name] = owner
        st.family[:] = [st.families[f.name] for f in st.family]
        Scanner._keep(st, [True] * len(st.family))

    def _values(self, st: Scan) -> list[bytes]:
        """The emitted series' output values: what followed the head, without the timestamp
        unless timestamps are kept (a dropped timestamp is not validated)."""
        rests = list(map(st.rests.__getitem__, st.at))
        return rests if self.stamped else list(map(_FIRST, map(bytes.partition, rests, repeat(b" "))))

    def _mend(self, lines: list[bytes], st: Scan, vals: list[bytes], res: Result) -> None:
        """Some values failed the bulk check: read those lines precisely (other whitespace
        fools the split), and drop what still fails."""
        st.irregular = True
        gone = set()
        for k, val in enumerate(vals):
            if values.valid(val, self.stamped):
                continue
            pos = st.at[k]
            got = self._parse(lines[pos], st.family[k], st.families, res, False)
            st.now.heads[pos] = None
            st.now.rewrites[pos] = got.rewrite if got is not None else None
            if got is None or got.rewrite.piece is None:
                gone.add(k)
                continue
            st.now.names[pos], st.rests[pos] = got.name, got.rest
            st.family[k] = got.family
        self._keep(st, [k not in gone for k in range(len(st.at))])

    def _dedupe(self, st: Scan, keys: list[tuple[bytes | None, bytes | None]], res: Result) -> None:
        """Two lines, one output series (upstream duplicates, or a hook or rule that removed
        the labels that told them apart): keep the last, as Prometheus keeps one anyway."""
        last = {key: k for k, key in enumerate(keys)}
        keep = [last[key] == k for k, key in enumerate(keys)]
        res.dropped += keep.count(False)
        for k in compress(count(), map(is_not, keep, repeat(True))):
            st.now.heads[st.at[k]] = None  # look again: the twin may be gone next time
        st.irregular = True
        self._keep(st, keep)

    @staticmethod
    def _keep(st: Scan, keep: list[bool]) -> None:
        """Keep the emitted series where `keep` is true; spans follow."""
        st.at[:] = compress(st.at, keep)
        st.family[:] = compress(st.family, keep)
        st.spans[:] = []
        for k, fam in enumerate(st.family):
            if not st.spans or st.spans[-1][0] is not fam:
                st.spans.append((fam, k))


def _same_comments(lines: list[bytes], last: Positions) -> bool:
    """Whether the comment and blank lines stand where they stood last time, unchanged."""
    where = list(map(is_, last.names, repeat(None)))
    return list(compress(lines, where)) == list(compress(last.heads, where))


def header(head: bytes, fam: Family | None, fams: dict[str, Family], openmetrics: bool,
           res: Result) -> Family | None:
    """A comment line (without its '#'): HELP and TYPE name the family that follows."""
    parts = _BLANK_RUN.split(head.decode("utf-8", "replace").lstrip(" \t"), 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return fam  # a plain comment, or OpenMetrics' UNIT
    name, rest = parts[1], (parts[2] if len(parts) > 2 else "")
    if not METRIC_NAME.match(name):
        res.bad(b"#" + head, "bad metric name in HELP/TYPE")
        return fam
    kind = None
    if parts[0] == "TYPE":
        kind = OM_TYPES.get(rest) if openmetrics else (rest if rest in TYPES else None)
        if kind is None:
            res.bad(b"#" + head, f"unknown type {rest!r}")
            return fam
        if openmetrics and rest == "counter":
            name += "_total"  # OpenMetrics names the family without the sample suffix
    if openmetrics and fam is not None and fam.name == name + "_total":
        name = fam.name  # HELP after TYPE for an OpenMetrics counter
    cur = fams.get(name)
    if cur is None:
        owner = owner_of(name, fams)
        if owner is not None:  # `x_count` after summary `x`: one name, two TYPEs
            res.bad(b"#" + head, f"{parts[0]} for {name}, a series of {owner.type} {owner.name}")
            return fam
        cur = fams[name] = Family(name)
    if kind is not None:
        cur.type = kind
    elif cur.help is None:
        cur.help = escape_help(_unescape_help(rest, openmetrics))
    return cur


_BLANK_RUN = re.compile(r"[ \t]+")


def owner_of(name: str, fams: dict[str, Family]) -> Family | None:
    """The histogram or summary family whose series `name` is (by its suffix), if any."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            fam = fams.get(name[:-len(suffix)])
            if fam is not None and fam.owns(name):
                return fam
    return None


_HELP_ESCAPES = {"\\\\": "\\", "\\n": "\n"}
_OM_HELP_ESCAPES = {**_HELP_ESCAPES, '\\"': '"'}


def _unescape_help(text: str, openmetrics: bool) -> str:
    """HELP text as written, unescaped: 0.0.4 escapes backslash and newline (any other
    backslash stands for itself), OpenMetrics also the double quote."""
    if "\\" not in text:
        return text
    table = _OM_HELP_ESCAPES if openmetrics else _HELP_ESCAPES
    return re.sub(r"\\.?", lambda m: table.get(m.group(0), m.group(0)), text, flags=re.S)
