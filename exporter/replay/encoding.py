"""Byte-exact Go encodings the kubelet uses, so replayed bodies look like the real wire.

The kubelet is a Go program: its JSON comes from `encoding/json` and its metric values
from `strconv.AppendFloat(f, 'g', -1, 64)` (prometheus/common expfmt). Python's defaults
differ in small ways (HTML escaping, exponent thresholds), and a client under test must
see exactly what a kubelet would send, so these helpers reproduce the Go output.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

# Go's encoding/json escapes these even inside strings (HTML-safe output); they can only
# occur inside JSON strings, so a plain replace on the serialised text is safe.
_GO_JSON_ESCAPES = {
    "&": "\\u0026",
    "<": "\\u003c",
    ">": "\\u003e",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(obj: Any, *, indent: int | None = None, newline: bool = False) -> bytes:
    """Serialise like Go: compact `json.Marshal` (indent=None) or go-restful's 1-space indent.

    Round-trips the captured kubelet bodies byte for byte: `/pods` is compact with a
    trailing newline (json.Encoder), `/stats/summary` is indented by one space with none.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators)
    for raw, escaped in _GO_JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    if newline:
        text += "\n"
    return text.encode("utf-8")


def go_float(value: float) -> str:
    """Format a sample value like expfmt: `strconv.FormatFloat(v, 'g', -1, 64)`.

    Shortest round-trip digits; exponent form when the decimal exponent is < -4 or >= 6
    (Go's 'g' uses precision 6 for that decision when formatting shortest), which is why
    real cAdvisor output has `479232` but `2.687844352e+09`. Python's repr switches at 16.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits_list = list(digits)
    while len(digits_list) > 1 and digits_list[-1] == 0:  # repr may keep a trailing zero
        digits_list.pop()
        exponent += 1
    ndigits = len(digits_list)
    point = ndigits + exponent  # position of the decimal point relative to the digits
    exp10 = point - 1
    text_digits = "".join(str(d) for d in digits_list)
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text_digits[0] + ("." + text_digits[1:] if ndigits > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text_digits}"
    if point >= ndigits:
        return f"{prefix}{text_digits}{'0' * (point - ndigits)}"
    return f"{prefix}{text_digits[:point]}.{text_digits[point:]}"
