"""The StatsD line protocol with the DogStatsD extensions, parsed strictly, one line at a time.

A metric line is `name:value[:value...]|type[|@rate][|#tag:value,flag][|c:container-id][|T<ts>]`.
A line is either wholly valid or rejected with one reason (`LineError.reason`): nothing of a
rejected line is applied. The part after the values (`meta`) is the same on every call of a
given call site, so callers cache `parse_meta` per meta bytes; values are parsed every time.

Also parsed: DogStatsD events (`_e{title_len,text_len}:title|text|...`) and service checks
(`_sc|name|status|...`), which the collector counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

TYPES = frozenset({"c", "g", "ms", "h", "d", "s"})
Tags = tuple[tuple[str, str], ...]
ENTITY_TAG = "dd.internal.entity_id"
MAX_LINE = 8192  # bytes: a longer line is refused (no client writes one; UDP payloads are smaller)
_SC_STATUS = {"0": "ok", "1": "warning", "2": "critical", "3": "unknown"}


class LineError(ValueError):
    """A malformed line; `reason` is the counted reason (a short snake_case word)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refusal(LineError):
    """A well-formed line over a bound (tags per line, label value length): refused whole."""


@dataclass(frozen=True, slots=True)
class Meta:
    """What follows a metric line's values: its type and DogStatsD fields."""

    type: str
    rate: float = 1.0
    tags: Tags = ()
    container_id: str = ""   # `|c:` (a `ci-` prefix removed)
    entity_id: str = ""      # the `dd.internal.entity_id` tag: a pod UID, set through the downward API


@dataclass(frozen=True, slots=True)
class Event:
    """A DogStatsD event, as much of it as is counted (never its title or text)."""

    alert_type: str
    priority: str
    source_type: str
    tags: Tags
    container_id: str
    entity_id: str


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """A DogStatsD service check."""

    name: str
    status: str
    tags: Tags
    container_id: str
    entity_id: str


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LineError("not_utf8") from None


def parse_tags(text: str) -> tuple[Tags, str]:
    """`k:v,flag` -> ((k, v), (flag, "")) without the entity tag, and the entity id."""
    tags: list[tuple[str, str]] = []
    entity = ""
    for tag in text.split(","):
        key, _, value = tag.partition(":")
        if not key:
            raise LineError("bad_tag")
        if key == ENTITY_TAG:
            entity = value
        else:
            tags.append((key, value))
    return tuple(tags), entity


def _container(field: str) -> str:
    cid = field[2:]
    return cid[3:] if cid.startswith("ci-") else ("" if cid.startswith("in-") else cid)


def parse_meta(meta: bytes) -> Meta:
    """`type[|@rate][|#tags][|c:id][|T<ts>]` (the bytes after the first `|`)."""
    fields = _text(meta).split("|")
    kind = fields[0]
    if kind not in TYPES:
        raise LineError("unknown_type" if kind else "no_type")
    tags: Tags = ()
    rate, container, entity = 1.0, "", ""
    seen: set[str] = set()
    for f in fields[1:]:
        head = f[:1]
        if head in seen:
            raise LineError("repeated_field")
        seen.add(head)
        if head == "@":
            try:
                rate = float(f[1:])
            except ValueError:
                raise LineError("bad_rate") from None
            if not 0.0 < rate <= 1.0:
                raise LineError("bad_rate")
        elif head == "#":
            tags, entity = parse_tags(f[1:])
        elif f.startswith("c:"):
            container = _container(f)
        elif head in ("T", "e"):   # DogStatsD timestamp and external data: accepted, unused
            continue
        else:
            raise LineError("unknown_field")
    return Meta(kind, rate, tags, container, entity)


def parse_value(raw: bytes) -> float:
    """One value: a finite decimal float (Go's ParseFloat without Inf/NaN/underscores)."""
    if not raw or b"_" in raw or raw[-1:] in b" \t" or raw[:1] in b" \t":
        raise LineError("bad_value")
    try:
        value = float(raw)
    except ValueError:
        raise LineError("bad_value") from None
    if not math.isfinite(value):
        raise LineError("bad_value")
    return value


def split_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """A metric line -> (name, values, meta); raises LineError when the shape is wrong."""
    if len(line) > MAX_LINE:
        raise LineError("line_too_long")
    name, colon, rest = line.partition(b":")
    if not colon:
        raise LineError("no_value")
    if not name:
        raise LineError("empty_name")
    values, bar, meta = rest.partition(b"|")
    if not bar:
        raise LineError("no_type")
    if not values:
        raise LineError("no_value")
    return name, values, meta


def _fields(rest: str) -> tuple[dict[str, str], Tags, str, str]:
    opts: dict[str, str] = {}
    tags: Tags = ()
    entity = container = ""
    for f in rest.split("|") if rest else ():
        if f.startswith("#"):
            tags, entity = parse_tags(f[1:])
        elif f.startswith("c:"):
            container = _container(f)
        elif len(f) >= 2 and f[1] == ":":
            opts[f[0]] = f[2:]
        else:
            raise LineError("unknown_field")
    return opts, tags, container, entity


def parse_event(line: bytes) -> Event:
    """`_e{<title length>,<text length>}:<title>|<text>[|d:ts|h:host|k:key|p:prio|s:src|t:type|#tags]`;
    lengths count UTF-8 bytes, as the DogStatsD clients write them."""
    head, colon, body = line.partition(b":")
    try:
        tl, _, xl = head[3:-1].partition(b",")
        title_len, text_len = int(tl), int(xl)
    except ValueError:
        raise LineError("bad_event") from None
    if not colon or not head.endswith(b"}") or title_len < 1 or text_len < 0 \
            or len(body) < title_len + 1 + text_len or body[title_len:title_len + 1] != b"|":
        raise LineError("bad_event")
    _text(body[:title_len + 1 + text_len])
    rest = body[title_len + 1 + text_len:]
    if rest and not rest.startswith(b"|"):
        raise LineError("bad_event")
    opts, tags, container, entity = _fields(_text(rest[1:]))
    alert = opts.get("t", "info")
    prio = opts.get("p", "normal")
    if alert not in ("error", "warning", "info", "success") or prio not in ("normal", "low"):
        raise LineError("bad_event")
    return Event(alert, prio, opts.get("s", ""), tags, container, entity)


def parse_service_check(line: bytes) -> ServiceCheck:
    """`_sc|<name>|<status 0-3>[|d:ts|h:host|#tags|m:message]` (the message comes last)."""
    text = _text(line)
    parts = text.split("|", 3)
    if len(parts) < 3 or not parts[1] or parts[2] not in _SC_STATUS:
        raise LineError("bad_service_check")
    rest = parts[3] if len(parts) > 3 else ""
    msg = rest.find("m:") if rest.startswith("m:") else rest.find("|m:")
    if msg >= 0:
        rest = rest[:msg]
    _, tags, container, entity = _fields(rest)
    return ServiceCheck(parts[1], _SC_STATUS[parts[2]], tags, container, entity)
