"""The replay apiserver's object store: resourceVersions, chunked lists and watch history.

It reproduces the storage semantics a list+watch client depends on, not etcd itself:
- one cluster-wide, strictly increasing resourceVersion stamped on every write;
- lists served as consistent snapshots, in pages (`limit`) resumed with an opaque
  `continue` token that carries the snapshot's resourceVersion and the next key;
- a bounded change history: a watch from resourceVersion N replays every change after N,
  unless N is older than the retained window (compaction), which is a 410 Expired;
- bookmarks carrying the current resourceVersion to watchers that asked for them.
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import json
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from collections.abc import Callable

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
# A consistent list, sorted by "namespace/name": what a paginated list's pages are cut from.
# (A module-level name: inside ApiStore, `list` is the method.)
Snapshot = list[tuple[str, dict]]
# resource -> (kind, apiVersion, namespaced)
KINDS = {
    "pods": ("Pod", "v1", True),
    "events": ("Event", "v1", True),
    "nodes": ("Node", "v1", False),
    "namespaces": ("Namespace", "v1", False),
    "leases": ("Lease", "coordination.k8s.io/v1", True),
}
GROUPS = {"leases": "coordination.k8s.io"}
DISCONNECT = object()  # queued to a watcher: drop the connection


class ApiError(Exception):
    """An apiserver error, rendered as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def _qualified(resource: str) -> str:
    group = GROUPS.get(resource)
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(resource)} "{name}" not found',
                    {"name": name, "group": GROUPS.get(resource), "kind": resource})


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)  # hashed by identity: kept in a set
class Watcher:
    """One open watch: what it selects and its outgoing queue."""

    resource: str
    namespace: str | None
    bookmarks: bool
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    select: Callable[[dict], bool] | None = None  # a field selector (exporter/replay/fields.py)

    def matches(self, resource: str, namespace: str) -> bool:
        return resource == self.resource and self.namespace in (None, namespace)

    def event(self, kind: str, obj: dict, old: dict | None) -> dict | None:
        """The event this watcher sees for a change, as the apiserver filters by field: an
        object that starts matching is ADDED, one that stops matching is DELETED."""
        if self.select is None:
            return {"type": kind, "object": obj}
        now = self.select(obj)
        before = old is not None and self.select(old)
        if kind == "MODIFIED" and now != before:
            kind = "ADDED" if now else "DELETED"
        elif not now:
            return None
        return {"type": kind, "object": obj}


class ApiStore:
    """Objects by resource, a change log and the open watches."""

    def __init__(self, history_limit: int = 10_000, snapshots: int = 16) -> None:
        self.rv = 0
        self.compacted = 0  # changes with rv <= compacted are gone from the history
        self.objects: dict[str, dict[Key, dict]] = {r: {} for r in KINDS}
        self.history: deque[tuple[int, str, str, str, dict]] = deque()
        self.history_limit = history_limit
        self.watchers: set[Watcher] = set()
        self._snapshots: OrderedDict[tuple, Snapshot] = OrderedDict()
        self._snapshot_limit = snapshots

    # -- writes -------------------------------------------------------------------------

    def key(self, resource: str, obj: dict) -> Key:
        meta = obj.setdefault("metadata", {})
        return (meta.get("namespace", "") if KINDS[resource][2] else "", meta.get("name", ""))

    def put(self, resource: str, obj: dict) -> dict:
        """Create or replace unconditionally (test hooks, fixture loading)."""
        key = self.key(resource, obj)
        return self._write(resource, key, obj, "MODIFIED" if key in self.objects[resource] else "ADDED")

    def create(self, resource: str, obj: dict) -> dict:
        key = self.key(resource, obj)
        if key in self.objects[resource]:
            raise ApiError(409, "AlreadyExists", f'{_qualified(resource)} "{key[1]}" already exists',
                           {"name": key[1], "group": GROUPS.get(resource), "kind": resource})
        return self._write(resource, key, obj, "ADDED")

    def update(self, resource: str, obj: dict) -> dict:
        """Replace with optimistic concurrency: a stale metadata.resourceVersion is a 409."""
        key = self.key(resource, obj)
        current = self.objects[resource].get(key)
        if current is None:
            raise not_found(resource, key[1])
        sent = obj["metadata"].get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {_qualified(resource)} "{key[1]}": '
                           "the object has been modified; please apply your changes to the latest "
                           "version and try again",
                           {"name": key[1], "group": GROUPS.get(resource), "kind": resource})
        for keep in ("uid", "creationTimestamp"):
            obj["metadata"][keep] = current["metadata"].get(keep)
        return self._write(resource, key, obj, "MODIFIED")

    def delete(self, resource: str, namespace: str, name: str) -> dict:
        key = (namespace if KINDS[resource][2] else "", name)
        obj = self.objects[resource].pop(key, None)
        if obj is None:
            raise not_found(resource, name)
        obj = copy.deepcopy(obj)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._record(resource, key[0], "DELETED", obj)
        return obj

    def _write(self, resource: str, key: Key, obj: dict, kind: str) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        obj.setdefault("kind", KINDS[resource][0])
        obj.setdefault("apiVersion", KINDS[resource][1])
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        old = self.objects[resource].get(key)
        self.objects[resource][key] = obj
        self._record(resource, key[0], kind, obj, old)
        return obj

    def _record(self, resource: str, namespace: str, kind: str, obj: dict, old: dict | None = None) -> None:
        self.history.append((self.rv, resource, namespace, kind, obj))
        while len(self.history) > self.history_limit:
            self.compacted = self.history.popleft()[0]
        for w in self.watchers:
            if w.matches(resource, namespace) and (ev := w.event(kind, obj, old)) is not None:
                w.queue.put_nowait(ev)

    # -- reads --------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> dict:
        obj = self.objects[resource].get((namespace if KINDS[resource][2] else "", name))
        if obj is None:
            raise not_found(resource, name)
        return obj

    def list(self, resource: str, namespace: str | None, limit: int = 0,
             token: str = "", select: Callable[[dict], bool] | None = None, selector: str = "") -> dict:
        """A List object; with `limit`, one page of a consistent snapshot. `select`: only the
        objects a field selector (`selector`, its text) matches."""
        if token:
            rv, start = _decode(token)
            snap = self._snapshots.get((resource, namespace, rv, selector))
            if snap is None or rv < self.compacted:
                raise expired("The provided continue parameter is too old to display a consistent "
                              "list result. You can start a new list without the continue parameter.")
        else:
            rv, start = self.rv, ""
            snap = sorted((((f"{k[0]}/{k[1]}" if k[0] else k[1]), o)
                           for k, o in self.objects[resource].items()
                           if (namespace is None or k[0] == namespace)
                           and (select is None or select(o))), key=lambda e: e[0])
            if limit:
                self._remember((resource, namespace, rv, selector), snap)
        first = bisect.bisect_left(snap, start, key=lambda e: e[0])
        page = snap[first:first + limit] if limit else snap[first:]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        rest = len(snap) - first - len(page)
        if limit and rest > 0:
            meta["continue"] = _encode(rv, page[-1][0] + "\x00")
            meta["remainingItemCount"] = rest
        kind, api_version, _ = KINDS[resource]
        return {"kind": kind + "List", "apiVersion": api_version, "metadata": meta,
                "items": [o for _, o in page]}

    def _remember(self, key: tuple, snap: Snapshot) -> None:
        self._snapshots[key] = snap
        while len(self._snapshots) > self._snapshot_limit:
            self._snapshots.popitem(last=False)

    # -- watches ------------------------------------------------------------------------

    def watch(self, resource: str, namespace: str | None, since: str, bookmarks: bool,
              select: Callable[[dict], bool] | None = None) -> Watcher:
        """Register a watcher, its queue pre-filled with what it missed since `since`.

        "" or "0" means "from now, starting with the current state" (synthetic ADDED events),
        as the apiserver does; an RV older than the retained history is a 410. `select`: a
        field selector (history replays the changes whose new state matches)."""
        w = Watcher(resource, namespace, bookmarks, select=select)
        if since in ("", "0"):
            for (ns, _), obj in sorted(self.objects[resource].items()):
                if namespace in (None, ns) and (select is None or select(obj)):
                    w.queue.put_nowait({"type": "ADDED", "object": obj})
        else:
            rv = int(since)
            if rv < self.compacted:
                raise expired(f"too old resource version: {rv} ({self.compacted})")
            for crv, res, ns, kind, obj in self.history:
                if crv > rv and w.matches(res, ns) and (ev := w.event(kind, obj, None)) is not None:
                    w.queue.put_nowait(ev)
        self.watchers.add(w)
        return w

    def bookmark(self) -> None:
        """A BOOKMARK with the current resourceVersion to every watcher that allows them."""
        for w in self.watchers:
            if w.bookmarks:
                kind, api_version, _ = KINDS[w.resource]
                w.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(self.rv), "creationTimestamp": None}}})

    def disconnect(self) -> int:
        """Drop every open watch connection; returns how many."""
        for w in self.watchers:
            w.queue.put_nowait(DISCONNECT)
        return len(self.watchers)

    def expire_history(self) -> None:
        """Compaction: every resourceVersion before now becomes too old to watch from."""
        self.history.clear()
        self.compacted = self.rv
        self._snapshots.clear()


def _encode(rv: int, start: str) -> str:
    # The apiserver's token is base64 JSON of this shape (k8s.io/apiserver storage/etcd3).
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str) -> tuple[int, str]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "BadRequest", "continue key is not valid: invalid continue token") from None
