"""Exposition format primitives: the `Family` model, precise line parsing, label text, encoders.

Internally every family is kept in text-format 0.0.4 form: a name, a type, HELP text (0.0.4
escaping) and the sample lines as bytes, without newline. Upstream bytes that did not change are
never re-encoded; the engine's replay (`transform/plan.py`) relies on that. OpenMetrics is converted at the
edges: on input (counter `_total` families, `_created` series, seconds timestamps, exemplars) and
on output (`encode_openmetrics`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from collections.abc import Set as AbstractSet
from collections.abc import Sequence
from typing import NamedTuple

from exporter.errors import ParseError

TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
# OpenMetrics types and how they map onto 0.0.4 (info/stateset are gauges; gaugehistogram has
# `_gcount`/`_gsum` series that a 0.0.4 histogram cannot hold, so it goes out untyped).
OM_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
            "unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": "untyped"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Go's strconv.ParseFloat, as Prometheus parses values (not hex floats: no exporter writes
# them), and a millisecond timestamp. A sign goes with a number or Inf, not with NaN. Digits
# appear only in runs of [0-9], so mapping every digit to 0 keeps whether a text matches
# (pipeline._valid checks a batch's few distinct such skeletons).
_VALUE = (rb"(?:[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
          rb"|[Ii][Nn][Ff](?:[Ii][Nn][Ii][Tt][Yy])?)|[Nn][Aa][Nn])")
VALUE = re.compile(_VALUE + rb"\Z")
# A value and its timestamp, if any (a real scrape refuses a negative one).
VALUE_TS = re.compile(_VALUE + rb"(?: [0-9]+)?\Z")
_LABELS_BODY = rb'(?:[^"}]|"(?:[^"\\]|\\.)*")*'
_LINE = re.compile(
    rb"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{(" + _LABELS_BODY + rb")\})?[ \t]*[ \t]([^ \t#]+)"
    rb"(?:[ \t]+([^ \t#]+))?[ \t]*(?:(#)(.*))?\Z", re.S)
_PAIR = re.compile(rb'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\]*(?:\\.[^"\\]*)*)"[ \t]*(,|\Z)',
                   re.S)
LABEL_NAME_BYTES = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TS_MS = re.compile(rb"[0-9]+\Z")
_TS_S = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_UNESCAPE = re.compile(r"\\(.)", re.S)
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass(slots=True)
class Family:
    """One metric family: the unit of merge and encode.

    `lines` holds its sample lines as output bytes, without newlines between them; an element
    may be a block of several lines already joined by newlines (the transformer's fast path
    builds whole blocks at C speed). `samples()` and `count()` see single lines.

    `stamped`: its lines may carry (millisecond) timestamps, so the OpenMetrics encoder must
    convert them; the lines of other families are copied as they are."""

    name: str
    type: str = "untyped"
    help: str | None = None
    lines: list[bytes] = field(default_factory=list)
    stamped: bool = False  # its lines may carry timestamps (milliseconds)

    def samples(self) -> Iterator[bytes]:
        """Each sample line on its own."""
        for line in self.lines:
            if b"\n" in line:
                yield from line.split(b"\n")
            else:
                yield line

    def count(self) -> int:
        """How many sample lines the family holds."""
        return len(self.lines) + sum(line.count(b"\n") for line in self.lines)

    def owns(self, sample_name: str) -> bool:
        """Whether a sample of this name belongs to the family (histogram/summary suffixes)."""
        if sample_name == self.name:
            return self.type != "histogram"
        return any(sample_name == self.name + s for s in SUFFIXES.get(self.type, ()))


@dataclass(frozen=True, slots=True)
class Sample:
    """One precisely parsed sample line."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: bytes
    timestamp_ms: bytes | None


def unescape(value: str) -> str:
    """Undo label-value escaping the way Prometheus does (unknown escapes stay literal)."""
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(0)), value)


def escape(value: str) -> str:
    """Label-value escaping shared by 0.0.4 and OpenMetrics."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def parse_labels(text: bytes) -> tuple[tuple[str, str], ...]:
    """`a="1",b="x\\"y"` -> pairs. Raises ParseError on bad syntax or a repeated name."""
    simple = _simple_labels(text)
    if simple is not None:
        return simple
    pairs = []
    pos, end = 0, len(text)
    if not text.strip(b" \t"):
        return ()
    while pos < end:
        m = _PAIR.match(text, pos)
        if m is None:
            raise ParseError(f"bad label set near {text[pos:pos + 40]!r}")
        try:
            value = m.group(2).decode()
        except UnicodeDecodeError:
            raise ParseError("label value is not valid UTF-8") from None
        pairs.append((m.group(1).decode(), unescape(value)))
        pos = m.end()
        if m.group(3) == b",":
            if not text[pos:].strip(b" \t"):
                break
        elif pos < end:
            raise ParseError("expected ',' between labels")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ParseError("duplicate label name")
    return tuple(pairs)


def label_dict(text: bytes) -> dict[str, str] | None:
    """A label text's common case as names -> values, or None when anything is unusual (the
    precise parser, parse_labels, decides then; label names are not checked here). Without
    escapes and blanks every '"' is a delimiter, so the text splits on '",' exactly (each part
    then holds exactly two quotes: the count proves it). Written for speed: C-level splits and
    one dict."""
    if b"\\" in text or not text.endswith(b'"'):
        return None
    try:
        body = text[:-1].decode()
    except UnicodeDecodeError:
        return None
    parts = body.count('",') + 1
    if body.count('"') != 2 * parts - 1:  # the closing quote was cut off
        return None
    # No value holds a quote, so the text alternates names and values between `="` and `",`
    # (str.split per part, with its arguments, cost three times more).
    tokens = body.replace('",', '="').split('="')
    if len(tokens) != 2 * parts:  # a part without `="`, or with two
        return None
    labels = dict(zip(tokens[0::2], tokens[1::2]))
    return labels if len(labels) == parts else None  # (a repeated name: the parser says so)


_GOOD_NAMES: set[str] = set()


def _simple_labels(text: bytes) -> tuple[tuple[str, str], ...] | None:
    """parse_labels' common case (label_dict, with the names checked). Runs once per new
    label set."""
    labels = label_dict(text)
    if labels is None:
        return None
    if not labels.keys() <= _GOOD_NAMES:
        if not all(map(LABEL_NAME.match, labels)):
            return None
        if len(_GOOD_NAMES) < 10000:
            _GOOD_NAMES.update(labels)
    return tuple(labels.items())


def format_labels(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Pairs -> `a="1",b="2"` (0.0.4 and OpenMetrics spell label sets the same way)."""
    pairs = list(pairs)
    raw = "".join([v for _, v in pairs])
    if "\\" in raw or '"' in raw or "\n" in raw:
        return ",".join([f'{n}="{escape(v)}"' for n, v in pairs]).encode()
    return ",".join([f'{n}="{v}"' for n, v in pairs]).encode()


def parse_line(line: bytes, openmetrics: bool = False) -> Sample:
    """Parse one sample line precisely (the slow path). Exemplars are dropped; OpenMetrics
    timestamps (seconds) are converted to 0.0.4 milliseconds."""
    m = _LINE.match(line)
    if m is None:
        raise ParseError(f"malformed sample {line[:80]!r}")
    name, labels, value, ts, hash_, _ = m.groups()
    if hash_ and not openmetrics:
        raise ParseError("unexpected '#' after the value")
    if not VALUE.match(value):
        raise ParseError(f"bad value {value[:40]!r}")
    if ts is not None:
        if openmetrics:
            if not _TS_S.match(ts):
                raise ParseError(f"bad timestamp {ts[:40]!r}")
            ts = b"%d" % round(float(ts) * 1000)
        elif not _TS_MS.match(ts):
            raise ParseError(f"bad timestamp {ts[:40]!r}")
    return Sample(name.decode(), parse_labels(labels) if labels else (), value, ts)


class Comment(NamedTuple):
    """A HELP or TYPE line: the family it names, and its HELP text (unescaped) or type."""

    keyword: str
    name: str
    text: str


_BLANK_RUN = re.compile(r"[ \t]+")
_HELP_ESCAPES = {"\\\\": "\\", "\\n": "\n"}
_OM_HELP_ESCAPES = {**_HELP_ESCAPES, '\\"': '"'}


def parse_comment(line: bytes, openmetrics: bool = False) -> Comment | None:
    """A comment line without its '#': HELP or TYPE, else None (plain comments, OpenMetrics'
    UNIT). ParseError for a bad metric name or type. An OpenMetrics counter's TYPE names the
    family with its `_total`, as 0.0.4 does."""
    parts = _BLANK_RUN.split(line.decode("utf-8", "replace").lstrip(" \t"), 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return None
    keyword, name, rest = parts[0], parts[1], (parts[2] if len(parts) > 2 else "")
    if not METRIC_NAME.match(name):
        raise ParseError("bad metric name in HELP/TYPE")
    if keyword == "HELP":
        return Comment(keyword, name, _unescape_help(rest, openmetrics))
    kind = OM_TYPES.get(rest) if openmetrics else (rest if rest in TYPES else None)
    if kind is None:
        raise ParseError(f"unknown type {rest!r}")
    return Comment(keyword, name + "_total" if openmetrics and rest == "counter" else name, kind)


def _unescape_help(text: str, openmetrics: bool) -> str:
    """HELP text as written, unescaped: 0.0.4 escapes backslash and newline (any other
    backslash stands for itself), OpenMetrics also the double quote."""
    if "\\" not in text:
        return text
    table = _OM_HELP_ESCAPES if openmetrics else _HELP_ESCAPES
    return re.sub(r"\\.?", lambda m: table.get(m.group(0), m.group(0)), text, flags=re.S)


def escape_help(text: str) -> str:
    """0.0.4 HELP escaping (backslash and newline only)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _help_to_openmetrics(text: str) -> str:
    # 0.0.4 HELP escapes only backslash and newline; OpenMetrics also requires `\"`.
    return escape(unescape(text.replace('\\"', '\\\\"')))


def encode_text(families: Iterable[Family]) -> bytes:
    """Text format 0.0.4 (one join: the blocks are copied once)."""
    out: list[bytes] = []
    for fam in families:
        out.extend(_text_parts(fam))
    out.append(b"")
    return b"\n".join(out)


def text_chunks(families: Iterable[Family]) -> Iterator[bytes]:
    """Text format 0.0.4, one chunk per family (each ends with a newline): what a streaming
    encoder (bodies.encode_body) compresses without holding the whole text."""
    for fam in families:
        if fam.lines:
            yield b"\n".join([*_text_parts(fam), b""])


def _text_parts(fam: Family) -> list[bytes]:
    """A family's HELP, TYPE and sample lines (nothing for a family without samples)."""
    if not fam.lines:
        return []
    head = [f"# TYPE {fam.name} {fam.type}".encode()]
    if fam.help is not None:
        head.insert(0, f"# HELP {fam.name} {fam.help}".encode())
    return head + fam.lines


def _om_taken(families: Sequence[Family]) -> set[str]:
    """Every name an OpenMetrics family of this output holds: the families' own names and the
    suffixed series of histograms and summaries."""
    taken = {fam.name for fam in families}
    for fam in families:
        taken.update([fam.name + s for s in SUFFIXES.get(fam.type, ())])
    return taken


def _om_family(fam: Family, taken: AbstractSet[str] = frozenset()) -> tuple[str, str]:
    """OpenMetrics name and type for a 0.0.4 family; anything OpenMetrics would reject in the
    family's shape goes out as `unknown` under its full name rather than renamed: a counter
    without `_total`, or one whose OpenMetrics name `n` (or its `n_created` series) is a name
    another family of the output holds (`taken`), e.g. the gauge `go_memstats_alloc_bytes`
    next to the counter `go_memstats_alloc_bytes_total`."""
    if fam.type == "counter":
        # (A counter family holds only samples of its own name: Family.owns, and the
        # Builder's counters have no suffixes. So no sample needs to be read here.)
        base = fam.name[:-6]
        if fam.name.endswith("_total") and base not in taken and base + "_created" not in taken:
            return base, "counter"
        return fam.name, "unknown"
    return fam.name, {"untyped": "unknown"}.get(fam.type, fam.type)


_INT64 = range(-(1 << 63), 1 << 63)
_SIGNED_TS = re.compile(rb"-?[0-9]+\Z")  # (the engine passes on none below 0; the encoder copes)


def _om_line(line: bytes) -> bytes:
    """A sample line with its millisecond timestamp, if any, in seconds (OpenMetrics). A
    timestamp that is not an int64 is left out: the sample goes out untimed."""
    head, sep, tail = line.rpartition(b" ")
    if sep and b"{" not in tail and b"}" not in tail and b" " in head[head.rfind(b"}") + 1:]:
        ms = int(tail) if len(tail) <= 20 and _SIGNED_TS.match(tail) else None
        if ms is None or ms not in _INT64:
            return head
        return head + (b" %d.%03d" % divmod(ms, 1000) if ms >= 0 else b" -%d.%03d" % divmod(-ms, 1000))
    return line


def encode_openmetrics(families: Iterable[Family]) -> bytes:
    """OpenMetrics 1.0.0 text, ending with `# EOF` (one join)."""
    out = [line for part in _om_parts(families) for line in part]
    out.append(b"# EOF\n")
    return b"\n".join(out)


def openmetrics_chunks(families: Iterable[Family]) -> Iterator[bytes]:
    """OpenMetrics 1.0.0, one chunk per family, then `# EOF`."""
    for part in _om_parts(families):
        yield b"\n".join([*part, b""])
    yield b"# EOF\n"


def _om_parts(families: Iterable[Family]) -> Iterator[list[bytes]]:
    """Each family's HELP, TYPE and sample lines in OpenMetrics. Only stamped families' lines
    are rewritten (millisecond timestamps to seconds); the others' blocks are copied as they are."""
    fams = [fam for fam in families if fam.lines]
    taken = _om_taken(fams) if any(fam.type == "counter" for fam in fams) else frozenset()
    for fam in fams:
        name, kind = _om_family(fam, taken)
        head = [f"# TYPE {name} {kind}".encode()]
        if fam.help is not None:
            head.insert(0, f"# HELP {name} {_help_to_openmetrics(fam.help)}".encode())
        yield head + (list(map(_om_line, fam.samples())) if fam.stamped else fam.lines)


OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus' own scrape Accept header drives it."""
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if media == "application/openmetrics-text":
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                if float(q) > 0:
                    return True
            except ValueError:
                continue
    return False
