"""Reading untrusted JSON: a field of the wrong type reads as absent, never as an exception.

Upstream JSON (the kubelet's /pods and /stats/summary, API answers) is parsed by collectors
that index into it; these helpers make every such access total, so wrong types in one item
skip that item (counted by the caller) instead of failing the whole source as `internal`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from exporter.errors import ParseError


def loads(body: bytes | str, what: str) -> Any:
    """Parse an upstream JSON document: anything that is not JSON (invalid syntax or UTF-8, or
    nesting too deep for the parser: RecursionError) is a ParseError naming `what`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # (JSONDecodeError, UnicodeDecodeError)
        raise ParseError(f"{what}: not JSON ({str(exc)[:120]})") from None


def obj(value: Any) -> Mapping[str, Any]:
    """A JSON object, or {} for anything else."""
    return value if isinstance(value, Mapping) else {}


def text(value: Any, default: str = "") -> str:
    """A JSON string, or `default` for anything else."""
    return value if isinstance(value, str) else default


def objs(value: Any) -> tuple[list[Mapping[str, Any]], int]:
    """A JSON array's objects, and how many of its items were not objects (1 when the value is
    neither an array nor absent)."""
    if value is None:
        return [], 0
    if not isinstance(value, list):
        return [], 1
    items = [v for v in value if isinstance(v, Mapping)]
    return items, len(value) - len(items)
