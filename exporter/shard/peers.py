"""The collector's own replicas, for `membership: ready_pods`: a watch on the pods of its
namespace that match `cluster_collector.peer_selector`, read as the set of Ready ones.

A pod counts when its `Ready` condition is `True` and it has no `deletionTimestamp` (a pod
being deleted hands its nodes over at once, before it stops). `on_change()` is called when
the set changes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def is_ready(obj: Any) -> bool:
    """A Pod object (untrusted) that is Ready and not terminating."""
    if not isinstance(obj, dict):
        return False
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if not isinstance(meta, dict) or not isinstance(status, dict) or meta.get("deletionTimestamp"):
        return False
    conditions = status.get("conditions") or []
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in conditions if isinstance(conditions, list))


class PeerSet:
    """Ready peer pods by name (an `exporter.kube.watch.Handler`)."""

    def __init__(self, on_change: Callable[[frozenset[str]], None]) -> None:
        self.on_change = on_change
        self.ready: frozenset[str] = frozenset()

    def replace(self, items: list[dict], initial: bool) -> None:
        self._set(frozenset(n for obj in items if is_ready(obj) and (n := _name(obj))))

    def apply(self, kind: str, obj: dict) -> None:
        name = _name(obj)
        if not name:
            return
        now = set(self.ready)
        if kind != "DELETED" and is_ready(obj):
            now.add(name)
        else:
            now.discard(name)
        self._set(frozenset(now))

    def _set(self, ready: frozenset[str]) -> None:
        if ready != self.ready:
            self.ready = ready
            self.on_change(ready)


def _name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""
