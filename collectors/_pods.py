"""Helpers of the `pods` collector (not a collector): Kubernetes resource quantities
(`resource.Quantity` strings) as plain numbers, and resource names as kube-state-metrics labels them.

The grammar (k8s.io/apimachinery/pkg/api/resource/quantity.go):
  <quantity> ::= <signedNumber><suffix>
  <suffix>   ::= <binarySI> | <decimalExponent> | <decimalSI>
  <binarySI> ::= Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
  <decimalSI> ::= n | u | m | "" | k | M | G | T | P | E   (powers of 1000)
  <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
So "5m" CPU is 0.005 cores, "5M" memory 5,000,000 bytes, "64Mi" 67,108,864 bytes, "1e3" 1000 and
a bare "1E" one exa (an `E` followed by a number is an exponent, alone it is the suffix).
"""
from __future__ import annotations

import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)\Z")


def parse_quantity(text: str) -> float:
    """A quantity string -> its value in base units (cores, bytes, count); ValueError if invalid."""
    if not isinstance(text, str):
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return float(text)  # some clients serialise small integers as JSON numbers
        raise ValueError(f"not a quantity: {text!r}")
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, exponent, suffix = m.group(1), m.group(2), m.group(3) or ""
    if exponent:
        return float(number + exponent)
    if suffix in _BINARY:
        return float(number) * _BINARY[suffix]
    power = _DECIMAL[suffix]
    # Dividing keeps "5m" at exactly 0.005 (5 * 1e-3 is 0.005000000000000001).
    return float(number) * 10**power if power >= 0 else float(number) / 10**-power


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def resource_label(name: str) -> tuple[str, str]:
    """A resource name -> (resource label, unit label), as kube-state-metrics spells them."""
    if name == "cpu":
        unit = "core"
    elif name in ("memory", "ephemeral-storage", "storage") or name.startswith("hugepages-"):
        unit = "byte"
    else:
        unit = "integer"
    return _INVALID.sub("_", name), unit
