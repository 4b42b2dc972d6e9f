"""The replay apiserver's HTTP layer: routing, authentication, authorization, lists,
watch streams, leases and the non-resource endpoints, over an `ApiStore`.

Resource URLs are the real ones: /api/v1/{pods,events,nodes,namespaces}, namespaced
/api/v1/namespaces/{ns}/{pods,events}[/{name}] and
/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}] (GET, POST, PUT, DELETE), and
/api/v1/nodes/{node}/proxy/{path} to a kubelet registered with `proxy_node`.
"""
from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from exporter.replay import apiprotocol as proto
from exporter.replay import fields
from exporter.replay.apistore import DISCONNECT, KINDS, ApiError
from exporter.replay.encoding import go_json
from exporter.replay.protocol import token_matches

if TYPE_CHECKING:
    from exporter.replay.apiserver import ReplayApiserver

GROUP_RESOURCES = {"/api/v1/": {"pods", "events", "nodes", "namespaces"},
                   "/apis/coordination.k8s.io/v1/": {"leases"}}
WRITABLE = {"leases"}


class ApiHttp:
    """The aiohttp application of one ReplayApiserver (reads its live test-hook state)."""

    def __init__(self, srv: ReplayApiserver) -> None:
        self.srv = srv
        self._gzipped: tuple[bytes, bytes] | None = None  # (body, its gzip)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        self._routes(app.router)
        return app

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/api/v1/nodes/{name}/proxy/{tail:.*}", self._node_proxy)
        for prefix in ("/api/v1", "/apis/coordination.k8s.io/v1"):
            router.add_route("*", prefix + "/{resource}", self._collection)
            router.add_route("*", prefix + "/{resource}/{name}", self._item)
            router.add_route("*", prefix + "/namespaces/{namespace}/{resource}", self._collection)
            router.add_route("*", prefix + "/namespaces/{namespace}/{resource}/{name}", self._item)
        router.add_get("/metrics", self._metrics)
        for endpoint in ("healthz", "livez", "readyz"):
            router.add_get("/" + endpoint, self._health(endpoint))
        router.add_get("/version", self._version)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """Authenticate (401), authorize (403), and turn ApiErrors into Status objects."""
        self.srv.requests.append(request.path_qs)
        anonymous = "Authorization" not in request.headers and request.path in proto.PUBLIC_PATHS
        if not anonymous and not token_matches(request, self.srv.token_file):
            return proto.unauthorized()
        if request.path in self.srv.forbidden:
            return proto.forbidden(self.srv.user, request.method, request.path, request.query)
        try:
            return await handler(request)
        except ApiError as exc:
            return proto.status(exc.code, exc.reason, exc.message, exc.details)

    def _resource(self, request: web.Request) -> tuple[str, str | None]:
        resource = request.match_info["resource"]
        allowed = next(v for k, v in GROUP_RESOURCES.items() if request.path.startswith(k))
        if resource not in allowed:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        namespace = request.match_info.get("namespace")
        if namespace is not None and not KINDS[resource][2]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return resource, namespace

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/api/v1/componentstatuses":
            return web.Response(body=proto.componentstatuses(self.srv.unhealthy_components),
                                content_type=proto.JSON_TYPE,
                                headers={"Warning": '299 - "v1 ComponentStatus is deprecated in v1.19+"'})
        resource, namespace = self._resource(request)
        q = request.query
        if request.method == "POST" and resource in WRITABLE and namespace is not None:
            obj = await request.json()
            obj.setdefault("metadata", {})["namespace"] = namespace
            return _json(self.srv.store.create(resource, obj), 201)
        if request.method != "GET":
            raise _not_allowed()
        if proto.truthy(q.get("watch")):
            return await self._watch(request, resource, namespace)
        limit = int(q.get("limit") or 0)
        selector = q.get("fieldSelector", "")
        return _json(self.srv.store.list(resource, namespace, limit, q.get("continue", ""),
                                         fields.parse(resource, selector), selector))

    async def _item(self, request: web.Request) -> web.StreamResponse:
        resource, namespace = self._resource(request)
        name = request.match_info["name"]
        if request.method == "GET":
            return _json(self.srv.store.get(resource, namespace or "", name))
        if resource not in WRITABLE or namespace is None:
            raise _not_allowed()
        if request.method == "PUT":
            obj = await request.json()
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not "
                               f"match the name on the URL ({name})")
            meta.update(name=name, namespace=namespace)
            return _json(self.srv.store.update(resource, obj))
        if request.method == "DELETE":
            self.srv.store.delete(resource, namespace, name)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, "group": "coordination.k8s.io", "kind": resource}})
        raise _not_allowed()

    async def _watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        """A chunked stream of JSON lines; a too-old resourceVersion is an ERROR event (the
        HTTP status stays 200, as on the real apiserver)."""
        q = request.query
        select = fields.parse(resource, q.get("fieldSelector", ""))  # (a bad one: 400, not a stream)
        resp = web.StreamResponse(headers={"Content-Type": proto.JSON_TYPE})
        resp.enable_chunked_encoding()
        try:
            watcher = self.srv.store.watch(resource, namespace, q.get("resourceVersion", ""),
                                           proto.truthy(q.get("allowWatchBookmarks")), select)
        except ApiError as exc:
            await resp.prepare(request)
            status = proto.status_object(exc.code, exc.reason, exc.message)
            await resp.write(go_json({"type": "ERROR", "object": status}, newline=True))
            await resp.write_eof()
            return resp
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(q.get("timeoutSeconds") or self.srv.watch_timeout)
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is DISCONNECT:
                    # Abrupt, as when an apiserver dies: no terminating chunk.
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                await resp.write(go_json(item, newline=True))
            await resp.write_eof()
        except ConnectionError:  # the client went away
            pass
        finally:
            self.srv.store.watchers.discard(watcher)
        return resp

    async def _node_proxy(self, request: web.Request) -> web.Response:
        """/api/v1/nodes/{name}/proxy/{path}: the node's kubelet, as the API server proxies it
        (GET only; the kubelet sees the API server's credentials, here the shared token)."""
        name = request.match_info["name"]
        target = self.srv.node_proxies.get(name)
        if target is None:
            self.srv.store.get("nodes", "", name)  # 404 NotFound for an unknown node
            raise ApiError(503, "ServiceUnavailable", f"no kubelet known for node {name!r}")
        if request.method != "GET":
            raise _not_allowed()
        base, ca = target
        url = f"{base}/{request.match_info['tail']}"
        headers = {k: v for k, v in request.headers.items()
                   if k in ("Accept", "Accept-Encoding")}
        headers["Authorization"] = "Bearer " + self.srv.token_file.read_text().strip()
        ctx = ssl.create_default_context(cafile=str(ca))
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(url, params=request.query, headers=headers, ssl=ctx) as resp:
                body = await resp.read()
                self.srv.proxied_bytes += len(body)
                out = {k: v for k, v in resp.headers.items() if k in ("Content-Type", "Content-Encoding")}
                return web.Response(status=resp.status, body=body, headers=out)

    async def _metrics(self, request: web.Request) -> web.Response:
        headers = {"Content-Type": proto.METRICS_TYPE}
        body = self.srv.metrics_body()
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            if self._gzipped is None or self._gzipped[0] is not body:  # a live body changes
                self._gzipped = (body, await asyncio.to_thread(gzip.compress, body, 6, mtime=0))
            headers["Content-Encoding"] = "gzip"
            body = self._gzipped[1]
        return web.Response(body=body, headers=headers)

    async def _version(self, request: web.Request) -> web.Response:
        return web.Response(body=proto.version(self.srv.metrics), content_type=proto.JSON_TYPE)

    def _health(self, endpoint: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            checks = self.srv.checks.get(endpoint, [])
            return proto.health(endpoint, checks, self.srv.failing_checks, request.query)
        return handler


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=go_json(obj, newline=True), content_type=proto.JSON_TYPE)


def _not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})
