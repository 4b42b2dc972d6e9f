"""Sample values and timestamps as Prometheus accepts them, checked in bulk.

A value is Go's strconv.ParseFloat syntax (no hex, no underscores), in float64 range; a
timestamp a non-negative int64 of milliseconds (a real scrape refuses a negative one). With
every digit made 0, a batch's texts come in a few
distinct shapes (`0.00000e+00 0000000000000`): each shape is matched once, at C speed. Only
shapes that can overflow (`_risky`) are then checked text by text.
"""
from __future__ import annotations

import math

from exporter.expfmt import VALUE, VALUE_TS

_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
_INT64 = 1 << 63


def _risky(shape: bytes) -> bool:
    """Whether texts of this shape may overflow: a timestamp of 19 digits or more, an exponent
    of 3 digits or more, or over 200 digits (with an exponent of at most 99, a value needs
    more than 209 digits to pass float64's 1.8e308)."""
    value, _, ts = shape.partition(b" ")
    exp = max(value.rfind(b"e"), value.rfind(b"E"))
    return (len(ts.lstrip(b"-")) >= 19 or (exp >= 0 and len(value[exp + 1:].lstrip(b"+-")) > 2)
            or value.count(b"0") > 200)


def in_range(text: bytes) -> bool:
    """A syntactically valid `value [timestamp]` that also fits float64 and int64."""
    value, _, ts = text.partition(b" ")
    if math.isinf(float(value)) and b"n" not in value.lower():  # overflow, not a spelled Inf
        return False
    return not ts or -_INT64 <= int(ts) < _INT64


def all_valid(texts: list[bytes], timestamps: bool = True) -> bool:
    """Whether every text is a valid value (followed by a timestamp, when `timestamps`)."""
    if not texts:
        return True
    match = (VALUE_TS if timestamps else VALUE).match
    shapes = set(b"\n".join(texts).translate(_DIGITS_TO_0).split(b"\n"))
    if not all(map(match, shapes)):
        return False
    risky = {s for s in shapes if _risky(s)}
    if not risky:
        return True
    return all(in_range(t) for t in texts if t.translate(_DIGITS_TO_0) in risky)


def valid(text: bytes, timestamps: bool = True) -> bool:
    """One text (see all_valid)."""
    return all_valid([text], timestamps)
