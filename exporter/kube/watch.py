"""List+watch of one API collection with kubernetes-asyncio, as client-go's reflector does it.

- The list is chunked (`limit`/`continue`); its `metadata.resourceVersion` is where the watch
  starts, so nothing between the list and the watch is lost or seen twice.
- The watch asks for bookmarks, which move the resourceVersion forward even when nothing the
  watch selects changes, so a reconnect rarely falls outside the apiserver's history window.
- A watch that ends (server timeout, dropped connection) resumes from the last resourceVersion.
  Only 410 Gone (compacted history, or an expired continue token) forces a relist.
- Failures back off exponentially and are kept in `error` for the collector to report. A list
  that is not a list of objects, or whose items the handler cannot read (wrong JSON types), is
  a ParseError; a watch event of wrong types is skipped and counted in `malformed`.
The handler sees `replace(items, initial)` after each list and `apply(type, obj)` per event.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol
from collections.abc import Callable, Mapping

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from exporter.errors import NoDataError, ParseError, describe
from exporter.jsonshape import loads, obj, objs, text
from exporter.kube.client import translate

log = logging.getLogger("kubebridge.kubewatch")


class Handler(Protocol):
    def replace(self, items: list[dict], initial: bool) -> None: ...

    def apply(self, kind: str, obj: dict) -> None: ...


class Reflector:
    """Keeps `handler` in sync with one collection (`list_fn(*args)`, a kubernetes-asyncio
    list method such as `CoreV1Api.list_event_for_all_namespaces`)."""

    def __init__(self, list_fn: Callable[..., Any], *args: Any, handler: Handler, what: str,
                 page: int = 500, watch_timeout: float = 300.0,
                 backoff: tuple[float, float] = (1.0, 30.0), list_from_cache: bool = False) -> None:
        self.fn, self.args, self.handler, self.what = list_fn, args, handler, what
        self.page = page
        # list_from_cache: list with resourceVersion=0 (served from the apiserver's watch cache,
        # unpaginated, possibly slightly stale, as the kubelet lists its pods); for small
        # selected lists that are made often (one per node), not for whole collections.
        self.list_from_cache = list_from_cache
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.rv = ""
        self.synced = asyncio.Event()
        self.error: Exception | None = None  # the last failure, cleared by a success
        self.lists = self.expired = self.bookmarks = self.restarts = 0
        self.malformed = 0  # watch events skipped: not an object, or fields of wrong types

    async def run(self) -> None:
        """List, then watch forever; cancellation ends it."""
        delay = self.backoff[0]
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                started = time.monotonic()
                seen = await self._watch()
                self.error = None
                if seen or time.monotonic() - started > 1.0:
                    delay = self.backoff[0]
                    continue
                # An empty watch that ended at once: do not spin on a misbehaving server.
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s: %s; relisting", self.what, exc.reason)
                    self.expired += 1
                    need_list = True
                    continue
                self.error = translate(exc, self.what)
                log.warning("%s: HTTP %s (%s); retrying in %.1fs", self.what, exc.status, exc.reason, delay)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                if need_list:  # the list itself broke off: a failure like any other
                    self.error = exc
                    log.warning("%s: list cut off (%s); retrying in %.1fs", self.what,
                                type(exc).__name__, delay)
                else:
                    # A dropped watch stream (apiserver restart, idle load balancer) is
                    # routine: resume from the last resourceVersion, the source stays up.
                    self.restarts += 1
                    log.info("%s: watch dropped (%s); resuming", self.what, type(exc).__name__)
                    await asyncio.sleep(self.backoff[0])
                    continue
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                self.error = exc
                log.warning("%s: %s; retrying in %.1fs", self.what, describe(exc), delay)
            except Exception as exc:  # a bug or a surprising object: keep the loop alive, relist
                self.error = exc
                need_list = True
                log.exception("%s: unexpected failure; relisting in %.1fs", self.what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def raise_if_unhealthy(self) -> None:
        """For collect(): re-raise the last failure; NoDataError before the first list."""
        if self.error is not None:
            raise self.error
        if not self.synced.is_set():
            raise NoDataError(f"{self.what}: not listed yet")

    async def _list(self) -> None:
        items: list[dict] = []
        token, rv = "", ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.page, "_preload_content": False,
                                      "_request_timeout": (10, 60)}
            if token:
                kwargs["_continue"] = token
            elif self.list_from_cache:
                kwargs["resource_version"] = "0"
            resp = await self.fn(*self.args, **kwargs)
            try:
                doc = await _json(resp)
            except ApiException as exc:
                if exc.status == 410 and token:  # continue token expired: start over
                    items, token = [], ""
                    continue
                raise
            page, bad = objs(obj(doc).get("items"))
            if bad or not isinstance(doc, Mapping):
                raise ParseError(f"{self.what}: not a list of objects")
            items.extend(i for i in page if isinstance(i, dict))  # (json objects are dicts)
            meta = obj(doc.get("metadata"))
            rv = rv or text(meta.get("resourceVersion"))
            token = text(meta.get("continue"))
            if not token:
                break
        self.rv = rv
        try:
            self.handler.replace(items, self.lists == 0)
        except (AttributeError, TypeError, ValueError) as exc:  # fields of wrong JSON types
            raise ParseError(f"{self.what}: list items of wrong types ({exc})") from None
        self.lists += 1
        self.error = None
        self.synced.set()

    async def _open(self, *args: Any, **kwargs: Any) -> Any:
        """The watch request; an accepted one ends a failure streak (a quiet watch may deliver
        nothing for minutes, and the source must not read as down meanwhile)."""
        resp = await self.fn(*args, **kwargs)
        if resp.status == 200:
            self.error = None
        return resp

    async def _watch(self) -> int:
        seen = 0
        w = watch.Watch(return_type="object")  # keep dicts: no model deserialisation
        # sock_read above timeoutSeconds: a silent, half-open connection still ends.
        async with w.stream(self._open, *self.args, resource_version=self.rv, allow_watch_bookmarks=True,
                            timeout_seconds=int(self.watch_timeout),
                            _request_timeout=(10, self.watch_timeout + 30)) as stream:
            async for event in stream:
                seen += 1
                kind, item = event.get("type"), event.get("raw_object")
                if not isinstance(item, Mapping):
                    self.malformed += 1
                    continue
                if kind == "BOOKMARK":
                    self.bookmarks += 1
                else:
                    try:
                        self.handler.apply(str(kind), dict(item))
                    except (AttributeError, TypeError, ValueError) as exc:  # one odd object
                        self.malformed += 1
                        log.debug("%s: %s event skipped (%s)", self.what, kind, exc)
                rv = text(obj(item.get("metadata")).get("resourceVersion"))
                if rv:
                    self.rv = rv
        return seen


async def _json(resp: aiohttp.ClientResponse) -> dict:
    """A raw (`_preload_content=False`) response's JSON body; a Status error as ApiException."""
    try:
        body = await resp.read()
    finally:
        resp.release()
    if resp.status != 200:
        exc = ApiException(status=resp.status, reason=resp.reason)
        exc.body = body.decode("utf-8", "replace")  # type: ignore[assignment]  # (the client's own errors carry text)
        raise exc
    return loads(body, "list")  # (not JSON, or nested too deep: ParseError)
