"""Hypothesis strategies for text-format 0.0.4 expositions, a strict parser of canonical output, and
"Prometheus rejects" judges built on promtool.

The grammar generated here is what Prometheus 2.42's scrape parser (model/textparse/promlex.l)
accepts, checked against a real Prometheus:
- a sample line starts with its name (a leading blank is read as part of the name: rejected);
  blanks and tabs may follow the name, surround `{`, label names, `=`, values, `,` and `}`; a
  trailing comma is allowed; one or more blanks go before the value, the timestamp and the end;
- a label value is any UTF-8 except a raw newline; `\\\\`, `\\"` and `\\n` are escapes, any other
  backslash pair is kept literally (an "unknown escape");
- a value is what Go's strconv.ParseFloat accepts, minus hex floats and `_`, minus out-of-range
  values (1e309 is an error, not +Inf); a sign goes with a number or Inf, not with NaN;
- a timestamp is digits only (no sign), at most int64;
- `# HELP` / `# TYPE`: `#`, blanks, the keyword, blanks, the name, then exactly one blank or tab;
  a TYPE's type must follow with nothing after it; any other `#` line is a comment.
Not generated although Prometheus accepts them: label pairs without a comma between them and no
blank between `}` and the value (the lexer allows both; promtool's parser refuses the first), and
NUL in comments (2.42's lexer takes a NUL in a comment for the end of the payload and silently
ignores the rest).
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hypothesis import assume
from hypothesis import strategies as st

INT64_MAX = 2**63 - 1
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}

# ---------------------------------------------------------------------------------------------
# Records: the oracle.


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]  # unescaped values, in the order written
    value: str  # the spelling written (Go accepts it)
    ts: int | None = None


@dataclass(frozen=True)
class Fam:
    name: str
    type: str | None  # None: no TYPE line
    help: str | None  # unescaped HELP text; None: no HELP line
    samples: tuple[Sample, ...]


def sample_names(fam: Fam) -> tuple[str, ...]:
    kind = fam.type or "untyped"
    return tuple(fam.name + s for s in SUFFIXES.get(kind, ("",)))


def value_key(text: str) -> str:
    """A float compared exactly (every NaN alike, -0 apart from 0)."""
    x = float(text)
    return "NaN" if math.isnan(x) else x.hex()


def expected_samples(
    fams: Iterable[Fam], added: Sequence[tuple[str, str]], keep_timestamps: bool
) -> list[tuple]:
    """(family, name, label set, value, timestamp) the output must hold, one per input sample."""
    out = []
    for fam in fams:
        for s in fam.samples:
            labels = frozenset([(k, v) for k, v in s.labels if v != ""] + list(added))
            out.append((fam.name, s.name, labels, value_key(s.value), s.ts if keep_timestamps else None))
    return out


# ---------------------------------------------------------------------------------------------
# Value spellings.

_SPECIAL = {
    "+inf": ["+Inf", "+inf", "+INF", "+Infinity", "+infinity", "Inf", "inf", "Infinity", "INF", "iNfInItY"],
    "-inf": ["-Inf", "-inf", "-INF", "-Infinity", "-infinity"],
    "nan": ["NaN", "nan", "NAN", "nAn"],
}


def _spell_finite(x: float, style: int) -> str:
    r = repr(x)
    if style == 0:
        return r
    if style == 1:
        return f"{x:e}" if float(f"{x:e}") == x else r
    if style == 2:
        s = f"{x:.17E}"
        return s if float(s) == x else r
    if style == 3 and x == int(x) and abs(x) < 1e15:
        return f"{int(x)}."  # "5."
    if style == 4 and 0 < abs(x) < 1 and r.lstrip("-").startswith("0."):
        return r.replace("0.", ".", 1)  # ".5"
    if style == 5 and not r.startswith("-"):
        return "+" + r
    if style == 6 and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    if style == 7 and x == int(x) and 0 <= x < 1e15:
        return "00" + str(int(x))  # leading zeros
    return r


@st.composite
def values(draw) -> str:
    kind = draw(st.sampled_from(["float", "float", "float", "int", "int", "special", "literal"]))
    if kind == "special":
        return draw(st.sampled_from([v for vs in _SPECIAL.values() for v in vs]))
    if kind == "literal":
        return draw(
            st.sampled_from(
                [
                    "1",
                    "-1.5",
                    ".5",
                    "5.",
                    "1e3",
                    "1E-3",
                    "0",
                    "-0",
                    "1e-400",
                    "1.7976931348623157e308",
                    "-1.7976931348623157E+308",
                    "5.e3",
                    "4.9e-324",
                    "12345678901234567890",
                    "0.0000001",
                ]
            )
        )
    if kind == "int":
        x = float(draw(st.integers(-(10**6), 10**16)))
    else:
        x = draw(st.floats(allow_nan=False, allow_infinity=False))
    return _spell_finite(x, draw(st.integers(0, 7)))


# ---------------------------------------------------------------------------------------------
# Names and label values.

_RESERVED_LABELS = {"collector", "cluster", "le", "quantile"}
metric_stems = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,14}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: not n.startswith("__") and n not in _RESERVED_LABELS and not n.startswith("exported_")
)
_TRICKY = list(" \"\\{}=,#\t'") + [
    "\\n",
    "\\q",
    "\\",
    "\n",
    "é",
    "日本",
    "\u2028",
    "\x85",
    "\x0b",
    "\x0c",
    "😀",
    "\r",
    "\x00",
    "} 1",
    '"} 2',
]
label_values = st.one_of(
    st.just(""),
    st.text(st.sampled_from(list("abcxyz019-_./:")), min_size=1, max_size=8),
    st.lists(
        st.one_of(st.sampled_from(_TRICKY), st.characters(codec="utf-8", exclude_categories=("Cs",))),
        max_size=8,
    ).map("".join),
)
help_texts = st.text(
    st.one_of(
        st.sampled_from(list("abc xyz.,:;{}\"'#=") + ["\\", "\n", "é", "日", "\t"]),
        st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00\r"),
    ),
    max_size=20,
).map(lambda t: t.strip(" \t"))


def _label_sets(extra: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    return st.lists(st.tuples(label_names, label_values), max_size=extra, unique_by=lambda p: p[0])


def _series_key(s: Sample) -> tuple:
    return s.name, frozenset((k, v) for k, v in s.labels if v != "")


_LES = ["0.005", "0.1", "0.25", "1", "2.5", "10", "1e3", "+Inf"]
_QUANTILES = ["0", "0.5", "0.9", "0.99", "1"]


@st.composite
def families(draw, index: int) -> Fam:
    kind = draw(st.sampled_from(TYPES + (None,)))
    name = draw(metric_stems)
    if draw(st.booleans()):
        name += f"_{index}"
    if draw(st.booleans()):
        name += draw(st.sampled_from(["_total", "_seconds", "_bytes", "_info", "_created", "_x"]))
    help_ = draw(st.none() | help_texts)
    ts = st.none() | st.integers(0, INT64_MAX)
    samples: list[Sample] = []
    if kind in ("histogram", "summary"):
        for base in draw(
            st.lists(
                _label_sets(2),
                min_size=1,
                max_size=2,
                unique_by=lambda ls: frozenset((k, v) for k, v in ls if v),
            )
        ):
            if kind == "histogram":
                les = sorted(draw(st.sets(st.sampled_from(_LES[:-1]), max_size=4)), key=float) + ["+Inf"]
                samples += [
                    Sample(name + "_bucket", tuple(base) + (("le", le),), draw(values()), draw(ts))
                    for le in les
                ]
            else:
                qs = sorted(draw(st.sets(st.sampled_from(_QUANTILES), max_size=3)), key=float)
                samples += [
                    Sample(name, tuple(base) + (("quantile", q),), draw(values()), draw(ts)) for q in qs
                ]
            samples += [
                Sample(name + "_sum", tuple(base), draw(values()), draw(ts)),
                Sample(name + "_count", tuple(base), draw(values()), draw(ts)),
            ]
    else:
        for labels in draw(
            st.lists(_label_sets(3), max_size=4, unique_by=lambda ls: frozenset((k, v) for k, v in ls if v))
        ):
            samples.append(Sample(name, tuple(labels), draw(values()), draw(ts)))
    return Fam(name, kind, help_, tuple(samples))


@st.composite
def expositions(draw, min_families: int = 0, max_families: int = 4) -> tuple[Fam, ...]:
    n = draw(st.integers(min_families, max_families))
    fams = tuple(draw(families(i)) for i in range(n))
    # No family may own a name another family owns (`a` histogram vs an `a_bucket` gauge).
    owned = [n for f in fams for n in {f.name, *sample_names(f)}]
    assume(len(owned) == len(set(owned)))
    return fams


# ---------------------------------------------------------------------------------------------
# Rendering with random spelling.

_OPT = st.sampled_from(["", "", "", "", " ", "\t", "  ", " \t "])
_REQ = st.sampled_from([" ", " ", " ", "\t", "  ", " \t"])


def escape_value(v: str, raw_unknown: bool) -> str:
    """Label-value escaping; with raw_unknown a backslash that does not start `\\\\`, `\\"` or
    `\\n` is written alone (Prometheus keeps such an unknown escape literally)."""
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\":
            nxt = v[i + 1] if i + 1 < len(v) else ""
            out.append("\\" if raw_unknown and nxt and nxt not in '\\"n\n' else "\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@dataclass(frozen=True)
class Spell:
    """How one sample line is written, apart from its contents."""

    braces: bool  # `{}` even without labels
    pre_brace: str
    pairs: tuple[
        tuple[str, str, str, str, str], ...
    ]  # before name, after name, after '=', after value, after ','
    trailing_comma: bool
    raw_unknown: bool
    before_value: str
    before_ts: str
    trailing: str


PLAIN = ("",) * 5


@st.composite
def spells(draw, n_labels: int, plain: bool = False) -> Spell:
    """A random spelling, or with `plain` the one exporters write (`a{b="c"} 1`)."""
    if plain:
        return Spell(False, "", (PLAIN,) * n_labels, False, False, " ", " ", "")
    return Spell(
        draw(st.booleans()),
        draw(_OPT),
        tuple(tuple(draw(_OPT) for _ in range(5)) for _ in range(n_labels)),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(_REQ),
        draw(_REQ),
        draw(st.sampled_from(["", "", "", " ", "\t", " \t "])),
    )


def render_sample(s: Sample, sp: Spell) -> bytes:
    out = [s.name]
    pairs = s.labels
    if pairs or sp.braces:
        out += [sp.pre_brace, "{"]
        for i, (k, v) in enumerate(pairs):
            ws = sp.pairs[i] if i < len(sp.pairs) else ("",) * 5
            out += [ws[0], k, ws[1], "=", ws[2], '"', escape_value(v, sp.raw_unknown), '"', ws[3]]
            if i < len(pairs) - 1 or sp.trailing_comma:
                out += [",", ws[4]]
        out.append("}")
    out += [sp.before_value, s.value]
    if s.ts is not None:
        out += [sp.before_ts, str(s.ts)]
    out.append(sp.trailing)
    return "".join(out).encode()


@dataclass(frozen=True)
class Line:
    """One payload line: a sample with its spelling, or the bytes of any other line."""

    text: bytes
    sample: Sample | None = None
    spell: Spell | None = None

    def with_sample(self, s: Sample) -> Line:
        assert self.spell is not None, "only a sample line takes another sample"
        return Line(render_sample(s, self.spell), s, self.spell)


_COMMENT_TEXT = st.binary(max_size=20).filter(
    lambda b: b"\n" not in b and b"\x00" not in b and not re.match(rb"[ \t]*(HELP|TYPE)[ \t]", b)
)


@st.composite
def noise_lines(draw) -> bytes:
    return draw(
        st.sampled_from(
            [
                st.just(b""),
                st.just(b"#"),
                st.just(b"   "),
                st.just(b"\t"),
                st.just(b"# EOF"),
                _COMMENT_TEXT.map(lambda b: b"# " + b),
                _COMMENT_TEXT.map(lambda b: b"#" + b.lstrip(b" \t")),
                st.just(b"# HELPx not metadata"),
            ]
        ).flatmap(lambda s: s)
    )


def _meta(keyword: str, name: str, text: str, draw, plain: bool) -> bytes:
    if plain:
        return f"# {keyword} {name} {text}".encode()
    lead = draw(st.sampled_from(["", "", "", " ", "\t"]))
    return (
        f"{lead}#{draw(_REQ)}{keyword}{draw(_REQ)}{name}{draw(st.sampled_from([' ', chr(9)]))}{text}"
    ).encode()


@st.composite
def rendered(draw, fams: Sequence[Fam], plain: bool | None = False) -> list[Line]:
    """The lines of a payload holding `fams`, spelled at random; with `plain`, spelled as
    exporters write (HELP, TYPE, `a{b="c"} 1`, no other comments); None: either, drawn."""
    if plain is None:
        plain = draw(st.booleans())
    noise = not plain
    lines: list[Line] = []

    def maybe_noise() -> None:
        if noise:
            lines.extend(
                Line(t) for t in draw(st.lists(noise_lines(), max_size=1 if draw(st.booleans()) else 0))
            )

    for fam in fams:
        maybe_noise()
        meta = []
        if fam.help is not None:
            meta.append(_meta("HELP", fam.name, escape_help(fam.help), draw, plain))
        if fam.type is not None:
            meta.append(_meta("TYPE", fam.name, fam.type, draw, plain))
        for m in draw(st.permutations(meta)) if meta and not plain else meta:
            lines.append(Line(m))
            maybe_noise()
        for s in fam.samples:
            sp = draw(spells(len(s.labels), plain))
            lines.append(Line(render_sample(s, sp), s, sp))
            maybe_noise()
    return lines


def join_lines(lines: Sequence[Line], final_newline: bool = True) -> bytes:
    body = b"\n".join(ln.text for ln in lines)
    return body + b"\n" if final_newline and lines else body


# ---------------------------------------------------------------------------------------------
# Mutations (for "arbitrary bytes never make a rejected output").

INTERESTING = [
    b"{",
    b"}",
    b'"',
    b"\\",
    b"\n",
    b"#",
    b" ",
    b"\t",
    b",",
    b"=",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\r",
    b"e309",
    b"_total",
    b"_bucket",
    b"_created",
    b"_sum",
    b"# TYPE x counter\n",
    b"# TYPE x gauge\n",
    b"# TYPE x histogram\n",
    b"# HELP x \xff\n",
    b"# EOF\n",
    b"NaN",
    b"+Inf",
    b"-",
    b"0x1p3",
    b"1_0",
    b"__name__",
    b"collector",
    b"exported_collector",
    b'le="',
    b"1e400",
    b" 99999999999999999999",
    b" -5",
    b"\xe2\x80\xa8",
    b'{a="1",a="2"}',
    b"# UNIT x seconds\n",
    b' # {t="1"} 1',
]


@st.composite
def mutations(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "insert", "delete", "lines", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            lines = bytes(data).split(b"\n")
            rnd = random.Random(draw(st.integers(0, 2**32)))
            if op == "lines":
                rnd.shuffle(lines)
            elif lines:
                i = rnd.randrange(len(lines))
                lines.insert(rnd.randrange(len(lines) + 1), lines[i])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# A strict parser of our (canonical) text output.

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
    r"|[nN][aA][nN]\Z"
)
_HELP = re.compile(rf"# HELP ({_NAME}) ((?:[^\\\n]|\\[\\n])*)\Z")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)\Z")
_SAMPLE = re.compile(
    rf'({_NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",)*'
    rf'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")\}})? (\S+)(?: ([0-9]+))?\Z'
)
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)')
_UNESC = re.compile(r"\\(.)")


def go_float_ok(text: str) -> bool:
    """Whether Prometheus (Go's ParseFloat without hex) reads this value."""
    if not GO_FLOAT.fullmatch(text):
        return False
    return not (math.isinf(float(text)) and not re.search("[iI]", text))  # 1e309: out of range


class NotCanonical(AssertionError):
    pass


@dataclass
class Parsed:
    families: list[tuple[str, str, str | None]]  # name, type, help (unescaped)
    samples: list[tuple]  # (family, name, label set, value key, ts)


def parse_canonical(body: bytes) -> Parsed:
    """Parse our text output strictly: HELP, then TYPE, then the family's samples, each family
    once; no blank or comment lines; single blanks; minimal escapes; Go floats; valid UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotCanonical(f"output is not UTF-8: {exc}") from None
    if text and not text.endswith("\n"):
        raise NotCanonical("output does not end with a newline")
    out = Parsed([], [])
    seen: set[str] = set()
    fam: str | None = None
    kind = ""
    pending_help: tuple[str, str] | None = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}: {line!r}"
        if line.startswith("# HELP "):
            m = _HELP.match(line)
            if not m or pending_help:
                raise NotCanonical(f"{where}: bad or repeated HELP")
            pending_help = (
                m.group(1),
                _UNESC.sub(lambda e: {"n": "\n", "\\": "\\"}.get(e.group(1), e.group(0)), m.group(2)),
            )
            continue
        if line.startswith("# TYPE "):
            m = _TYPE.match(line)
            if not m:
                raise NotCanonical(f"{where}: bad TYPE")
            fam, kind = m.group(1), m.group(2)
            if fam in seen:
                raise NotCanonical(f"{where}: second TYPE for {fam}")
            seen.add(fam)
            if pending_help and pending_help[0] != fam:
                raise NotCanonical(f"{where}: HELP for {pending_help[0]} followed by TYPE {fam}")
            out.families.append((fam, kind, pending_help[1] if pending_help else None))
            pending_help = None
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise NotCanonical(f"{where}: not a canonical sample line")
        if fam is None or pending_help:
            raise NotCanonical(f"{where}: sample outside a TYPEd family")
        name, labels, value, ts = m.groups()
        if name not in (fam + s for s in SUFFIXES.get(kind, ("",))):
            raise NotCanonical(f"{where}: sample {name} in family {fam} ({kind})")
        pairs = [
            (k, _UNESC.sub(lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), v))
            for k, v in _PAIR.findall(labels or "")
        ]
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names) or "__name__" in names:
            raise NotCanonical(f"{where}: repeated or reserved label name")
        if any(v == "" for _, v in pairs):
            raise NotCanonical(f"{where}: empty label value (should be omitted)")
        if not go_float_ok(value):
            raise NotCanonical(f"{where}: value {value!r} is not one Prometheus reads")
        if ts is not None and int(ts) > INT64_MAX:
            raise NotCanonical(f"{where}: timestamp beyond int64")
        out.samples.append((fam, name, frozenset(pairs), value_key(value), int(ts) if ts else None))
    if pending_help:
        raise NotCanonical("HELP without TYPE at the end")
    return out


# ---------------------------------------------------------------------------------------------
# "Prometheus rejects": promtool, plus the few rules of the scrape parser promtool lacks.
#
# `promtool check metrics` parses with prometheus/common's expfmt text parser: exit 1 and
# "error while linting: text format parsing error ..." on stderr when it cannot parse, exit 3
# for lint problems only (missing HELP, counter naming...), exit 0 when clean. That parser is
# stricter than the scraper's (a second TYPE/HELP for a name, `\q`, non-float `le`), except for
# what the scraper alone checks; those are below (each seen failing a real 2.42 scrape while
# promtool exits 0 or 3).
#
# For OpenMetrics, `promtool tsdb create-blocks-from openmetrics FILE DIR` runs the scraper's own
# OpenMetrics parser and the TSDB appender (it rejects `__name__` labels as a scrape does); it
# needs a timestamp on every sample, so one is appended where a line has none.

PROMTOOL = shutil.which("promtool")
_LEX = re.compile(
    rb'([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?[ \t]*'
    rb"([^{ \t\n]+)(?:[ \t]+([^ \t]+))?[ \t]*\Z",
    re.DOTALL,
)


def split_sample(line: bytes) -> tuple[bytes, bytes | None, bytes, bytes | None] | None:
    """A sample line's name, label text, value and timestamp as the scraper's lexer sees them."""
    m = _LEX.match(line)
    return None if m is None else m.groups()  # type: ignore[return-value]


def scraper_only_rejection(body: bytes) -> str | None:
    """What Prometheus' scrape parser rejects and promtool's parser lets through."""
    for n, line in enumerate(body.split(b"\n"), 1):
        if line.startswith(b"#"):
            if re.match(rb"#[ \t]+HELP[ \t]", line):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {n}: help text is not valid UTF-8"
            elif re.match(rb"#[ \t]+TYPE[ \t]", line) and not re.match(
                rb"#[ \t]+TYPE[ \t]+[a-zA-Z_:][a-zA-Z0-9_:]*[ \t](counter|gauge|histogram|summary|untyped)\Z",
                line,
            ):
                return f"line {n}: TYPE line the scraper rejects: {line!r}"
            continue
        if not line.strip(b" \t"):
            continue
        if line[:1] in (b" ", b"\t"):
            return f"line {n}: a sample line starting with a blank (read as part of the name)"
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return f"line {n}: invalid UTF-8 in a sample line"
        parts = split_sample(line)
        if parts and parts[3] is not None and not parts[3].isdigit():
            return f"line {n}: timestamp {parts[3]!r} is not digits"
    return None


# promtool parse errors that a real 2.42 scrape was seen to accept.
_SCRAPER_TOLERATES = (
    "second TYPE line",
    "second HELP line",
    "invalid escape sequence",
    "expected float as value for 'le' label",
    "expected float as value for 'quantile' label",
    "contains unescaped new-line",
)


def _run_loops(script: str, paths: list[str]) -> list[int]:
    """Run `script` over the paths in two parallel shell loops; the exit status of each."""
    chunks = [paths[0::2], paths[1::2]]
    procs = [subprocess.Popen(["sh", "-c", script, "sh", *c], stdout=subprocess.PIPE) for c in chunks if c]
    results = [p.communicate()[0].split() for p in procs]
    codes: list[int] = [0] * len(paths)
    for k, res in enumerate(results):
        assert len(res) == len(chunks[k]), "promtool loop did not report every file"
        codes[k::2] = [int(x) for x in res]
    return codes


def text_rejections(bodies: Iterable[bytes]) -> dict[bytes, str]:
    """Each distinct text body Prometheus rejects -> why."""
    assert PROMTOOL is not None
    distinct = list(dict.fromkeys(bodies))
    bad: dict[bytes, str] = {}
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, b in enumerate(distinct):
            p = os.path.join(d, f"{i}.prom")
            with open(p, "wb") as f:
                f.write(b)
            paths.append(p)
        script = f'for f; do "{PROMTOOL}" check metrics < "$f" > /dev/null 2> "$f.err"; echo $?; done'
        for i, (b, rc) in enumerate(zip(distinct, _run_loops(script, paths))):
            with open(paths[i] + ".err", "rb") as f:
                err = f.read().decode("utf-8", "replace").strip()
            if rc == 1:
                lenient = any(p in err for p in _SCRAPER_TOLERATES)
                bad[b] = (
                    "promtool: "
                    + err
                    + (
                        " [Prometheus 2.42's scrape parser lets this through; promtool and "
                        "prometheus/common's parser (client_golang, federation readers) do "
                        "not]"
                        if lenient
                        else ""
                    )
                )
            elif rc not in (0, 3):
                raise AssertionError(f"promtool check metrics exited {rc}: {err}")
    for b in distinct:
        if b not in bad and (why := scraper_only_rejection(b)):
            bad[b] = "scraper rule: " + why
    return bad


def _om_with_timestamps(body: bytes, ts: int) -> tuple[bytes, str | None]:
    """The body with every sample at `ts` (create-blocks needs a timestamp on each, and walks
    every 2 h between the smallest and the largest: a far timestamp would take forever). A
    timestamp already there is checked as the parser would (a finite Go float) and replaced."""
    out = []
    for n, line in enumerate(body.split(b"\n"), 1):
        if line and not line.startswith(b"#"):
            m = _LEX.match(line)
            if m is not None and m.group(4) is not None:
                tok = m.group(4).decode("utf-8", "replace")
                if not go_float_ok(tok) or not math.isfinite(float(tok)):
                    return body, f"line {n}: timestamp {tok!r} is not a finite float"
                line = line[: m.start(4)] + b"%d" % ts + line[m.end(4) :]
            else:
                line += b" %d" % ts
        out.append(line)
    return b"\n".join(out), None


def _create_blocks(payload: bytes) -> str | None:
    assert PROMTOOL is not None
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.om")
        with open(src, "wb") as f:
            f.write(payload)
        p = subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", src, os.path.join(d, "out")],
            capture_output=True,
            check=False,
        )
    if p.returncode == 0:
        return None
    return (p.stderr or p.stdout).decode("utf-8", "replace").strip() or f"exit {p.returncode}"


def om_rejections(bodies: Iterable[bytes]) -> dict[bytes, str]:
    """Each distinct OpenMetrics body Prometheus' OpenMetrics parser rejects -> why. Bodies
    are checked together (the parser keeps no state across families: a clean batch means each
    is clean), and a failing batch is split until the culprits are found."""
    assert PROMTOOL is not None
    bad: dict[bytes, str] = {}
    prepared: dict[bytes, bytes] = {}
    for b in dict.fromkeys(bodies):
        prepared[b], why = _om_with_timestamps(b, 1_700_000_000)
        if why:
            bad[b] = "OpenMetrics parser rule: " + why
    distinct = [b for b in prepared if b not in bad]

    def check(group: list[bytes]) -> None:
        if len(group) == 1:
            why = _create_blocks(prepared[group[0]])
            if why:
                bad[group[0]] = "OpenMetrics parser: " + why
            return
        eof = b"# EOF\n"
        if (
            all(prepared[b].endswith(eof) for b in group)
            and _create_blocks(b"".join(prepared[b][: -len(eof)] for b in group) + eof) is None
        ):
            return
        half = len(group) // 2
        check(group[:half])
        check(group[half:])

    for k in range(0, len(distinct), 400):
        if distinct[k : k + 400]:
            check(distinct[k : k + 400])
    return bad


def rejections(text_bodies: Iterable[bytes], om_bodies: Iterable[bytes]) -> list[tuple[str, bytes, str]]:
    """(encoding, body, why) for every distinct body Prometheus rejects."""
    return [("text", b, why) for b, why in text_rejections(text_bodies).items()] + [
        ("OpenMetrics", b, why) for b, why in om_rejections(om_bodies).items()
    ]


def describe(rejected: Sequence[tuple[str, bytes, str]], inputs: dict[bytes, str], limit: int = 4) -> str:
    """A readable account of rejections; `inputs` names the input each body came from."""
    parts = [f"{len(rejected)} rejected output(s)"]
    for kind, body, why in rejected[:limit]:
        parts.append(f"--- {kind} output of {inputs.get(body, '?')}\n{why[:600]}\n{body[:1200]!r}")
    return "\n".join(parts)
