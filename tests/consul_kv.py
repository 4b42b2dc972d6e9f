"""A Consul KV HTTP API stand-in for the autodiscovery tests (no Consul server can be installed
here: Debian does not package it and nothing can be downloaded).

It speaks the wire format of Consul's `/v1/kv/` endpoint as documented and as the agent
implements it (agent/kvs_endpoint.go, agent/consul/state/kvs.go):
- `PUT /v1/kv/<key>` stores the raw body and answers `true`; `DELETE /v1/kv/<key>[?recurse]`.
- `GET /v1/kv/<key>[?recurse]` answers a JSON list of entries `{LockIndex, Key, Flags, Value
  (base64, or null for an empty value), CreateIndex, ModifyIndex}`, or 404 with an empty body
  when nothing matches; every answer carries `X-Consul-Index`, `X-Consul-KnownLeader` and
  `X-Consul-LastContact`.
- The index of a listing is the highest ModifyIndex under the prefix, or the index of the last
  delete under it (Consul's tombstones), else the whole KV table's index; never below 1.
- Blocking queries: `?index=N&wait=D` holds the request until the listing's index exceeds N or
  `wait` (default 5m, at most 10m; `ms`, `s`, `m`, `h` units) elapses, then answers as usual.
  (Consul adds up to wait/16 of random jitter; this stand-in does not.)

Test hooks: `requests` (path and query of every request), `fail` (answer 500 while set).
"""
from __future__ import annotations

import asyncio
import base64
import json
import re

from aiohttp import web

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?", text)
    if m is None:
        raise web.HTTPBadRequest(text=f"Invalid wait time: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class ConsulKV:
    """The KV store plus its HTTP app."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}
        self.tombstones: dict[str, int] = {}
        self.index = 0  # the raft index of the last write
        self.requests: list[str] = []
        self.fail = False
        self._changed = asyncio.Condition()

    # -- the store ------------------------------------------------------------------------

    async def put(self, key: str, value: bytes | str) -> None:
        raw = value.encode() if isinstance(value, str) else value
        self.index += 1
        old = self.entries.get(key)
        self.entries[key] = {"LockIndex": 0, "Key": key, "Flags": 0,
                             "Value": base64.b64encode(raw).decode() if raw else None,
                             "CreateIndex": old["CreateIndex"] if old else self.index,
                             "ModifyIndex": self.index}
        await self._notify()

    async def delete(self, key: str, recurse: bool = False) -> None:
        gone = [k for k in self.entries if k == key or (recurse and k.startswith(key))]
        self.index += 1
        for k in gone:
            del self.entries[k]
            self.tombstones[k] = self.index
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def listing(self, key: str, recurse: bool) -> tuple[int, list[dict]]:
        def under(k: str) -> bool:
            return k == key or (recurse and k.startswith(key))
        match = [e for k, e in sorted(self.entries.items()) if under(k)]
        idx = max([e["ModifyIndex"] for e in match] + [i for k, i in self.tombstones.items() if under(k)],
                  default=0)
        return max(idx or self.index, 1), match

    # -- HTTP -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v1/kv/{key:.*}", self._kv)
        return app

    def _headers(self, index: int) -> dict[str, str]:
        return {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
                "Content-Type": "application/json"}

    async def _kv(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if self.fail:
            return web.Response(status=500, text="rpc error: No cluster leader")
        key = request.match_info["key"]
        recurse = "recurse" in request.query
        if request.method == "PUT":
            await self.put(key, await request.read())
            return web.Response(text="true", headers=self._headers(self.index))
        if request.method == "DELETE":
            await self.delete(key, recurse)
            return web.Response(text="true", headers=self._headers(self.index))
        if request.method != "GET":
            return web.Response(status=405)
        if "index" in request.query:
            wait = min(_duration(request.query.get("wait", "5m")), 600.0)
            await self._block(key, recurse, int(request.query["index"]), wait)
        index, match = self.listing(key, recurse)
        if not match:
            return web.Response(status=404, headers=self._headers(index))
        return web.Response(text=json.dumps(match), headers=self._headers(index))

    async def _block(self, key: str, recurse: bool, min_index: int, wait: float) -> None:
        async def changed() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.listing(key, recurse)[0] > min_index)
        try:
            await asyncio.wait_for(changed(), wait)
        except TimeoutError:
            pass
