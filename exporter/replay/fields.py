"""Field selectors (`fieldSelector=spec.nodeName=node-1,status.phase!=Succeeded`) for the replay
apiserver: the subset of fields the real apiserver supports that kubebridge's clients use.

Every resource supports `metadata.name` and `metadata.namespace`; pods also `spec.nodeName`
and `status.phase` (as the apiserver's pod field set). Operators `=`, `==`, `!=`; terms are
ANDed. An unsupported field is a 400, with the apiserver's message.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.replay.apistore import ApiError

Match = Callable[[dict], bool]
FIELDS: dict[str, tuple[str, ...]] = {
    "*": ("metadata.name", "metadata.namespace"),
    "pods": ("spec.nodeName", "status.phase"),
}


def _value(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur if isinstance(cur, str) else ""


def parse(resource: str, selector: str) -> Match | None:
    """A predicate over objects of `resource`, or None for an empty selector."""
    terms: list[tuple[str, bool, str]] = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        op = next((o for o in ("!=", "==", "=") if o in raw), "")
        if not op:
            raise ApiError(400, "BadRequest", f"invalid selector: {selector!r}")
        field, value = (s.strip() for s in raw.split(op, 1))
        equal = op != "!="
        if field not in FIELDS["*"] + FIELDS.get(resource, ()):
            raise ApiError(400, "BadRequest", f"field label not supported: {field}")
        terms.append((field, equal, value))
    if not terms:
        return None
    return lambda obj: all((_value(obj, f) == v) == eq for f, eq, v in terms)
