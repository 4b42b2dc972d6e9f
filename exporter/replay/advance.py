"""Make a captured exposition move: its cumulative values grow with time, at the capture's pace.

A capture is one instant, so `rate()` over a replayed payload is 0 and every latency quantile
is NaN. `Advance` serves the capture as if the totals had built up over `horizon` seconds before
the demo started: every counter sample, histogram `_bucket`/`_sum`/`_count` and summary
`_sum`/`_count` is multiplied by `1 + elapsed / horizon`. One factor for the whole payload keeps
it consistent (buckets stay cumulative, `_count` equals the `+Inf` bucket, a ratio of two
counters stays the capture's ratio), and each rate is the sample's lifetime average. Gauges,
summary quantiles and timestamps are served as captured.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

CUMULATIVE: dict[str, tuple[str, ...]] = {
    "counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@dataclass(frozen=True)
class Template:
    """A payload split around its cumulative values: pieces[i] value[i] pieces[i+1] ..."""
    pieces: list[bytes]
    values: list[float]


def template(body: bytes) -> Template:
    """Find the cumulative sample values of an exposition (text format 0.0.4 or OpenMetrics)."""
    pieces: list[bytes] = []
    values: list[float] = []
    family = b""
    suffixes: tuple[str, ...] = ()
    pos = 0  # start of the text not yet in `pieces`
    offset = 0
    for line in body.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        if line.startswith(b"# TYPE "):
            parts = line.split()
            family = parts[2] if len(parts) > 2 else b""
            suffixes = CUMULATIVE.get(parts[3].decode(errors="replace"), ()) if len(parts) > 3 else ()
            continue
        if not suffixes or line.startswith(b"#") or not line.strip():
            continue
        brace = line.find(b"{")
        space = line.find(b" ")
        name_end = brace if brace != -1 and (space == -1 or brace < space) else space
        name = line[:name_end]
        if not any(name == family + s.encode() for s in suffixes):
            continue
        value_start = (line.rindex(b"}") + 1) if name_end == brace else name_end
        while value_start < len(line) and line[value_start:value_start + 1] == b" ":
            value_start += 1
        value_end = value_start
        while value_end < len(line) and line[value_end:value_end + 1] not in (b" ", b"\n", b"\r"):
            value_end += 1
        try:
            value = float(line[value_start:value_end])
        except ValueError:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            continue
        pieces.append(body[pos:start + value_start])
        values.append(value)
        pos = start + value_end
    pieces.append(body[pos:])
    return Template(pieces, values)


def render(t: Template, factor: float) -> bytes:
    """The payload with every cumulative value multiplied by `factor`."""
    out = [t.pieces[0]]
    for value, piece in zip(t.values, t.pieces[1:]):
        v = value * factor
        out.append((b"%d" % v) if v.is_integer() and abs(v) < 2**53 else repr(v).encode())
        out.append(piece)
    return b"".join(out)


class Advance:
    """`advance(body)`: `body` advanced by the time since `started` (see the module docstring).
    The template is rebuilt when the body changes (pod churn), the output at most once a second."""

    def __init__(self, started: float, horizon: float = 3600.0) -> None:
        self.started, self.horizon = started, horizon
        self._body: bytes | None = None
        self._template: Template | None = None
        self._out: tuple[int, bytes] | None = None

    def __call__(self, body: bytes) -> bytes:
        if body is not self._body or self._template is None:
            self._body, self._template, self._out = body, template(body), None
        second = int(time.monotonic() - self.started)
        if self._out is None or self._out[0] != second:
            self._out = (second, render(self._template, 1 + max(second, 0) / self.horizon))
        return self._out[1]
