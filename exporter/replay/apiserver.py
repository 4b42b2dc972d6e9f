"""ReplayApiserver: an HTTPS kube-apiserver on 127.0.0.1 over real recorded objects.

Enough of the API for a list+watch client (kubernetes-asyncio, unmodified) and for the
apiserver's own health and metrics endpoints: bearer-token authentication (401, the token
file is re-read per request), an RBAC-like forbidden set (403), chunked lists with
`limit`/`continue`, `watch=true` streams with bookmarks, `timeoutSeconds` and 410 Expired
after compaction, Leases with optimistic concurrency (409) for leader election, and
/metrics, /healthz, /livez, /readyz, /version, /api/v1/componentstatuses.

What is recorded: /metrics (nri-kubernetes captures), the health check names (a 1.27.3
/metrics/slis capture), events, namespaces and nodes (DataDog/k9s captures) and the pods
(the 1.35 kubelet /pods capture, re-served as a PodList). Every object is re-stamped with
this server's resourceVersions on load. The ComponentStatusList is built in the API's shape
(no capture exists). See tests/fixtures/PROVENANCE.md and data/PROVENANCE.md.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import ssl
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from aiohttp import web

from exporter.replay import apiprotocol as proto
from exporter.replay import paths
from exporter.replay.apistore import DISCONNECT, KINDS, ApiError, ApiStore
from exporter.replay.encoding import go_json
from exporter.replay.protocol import token_matches

GROUP_RESOURCES = {"/api/v1/": {"pods", "events", "nodes", "namespaces"},
                   "/apis/coordination.k8s.io/v1/": {"leases"}}
WRITABLE = {"leases"}
SLIS = "dd-apiserver-1.27.3-metrics-slis.txt"


class ReplayApiserver:
    """A fake kube-apiserver. Test hooks (live while serving):

      add_event(obj) / add_pod(obj) / update_pod(obj) / delete_pod(ns, name)
      disconnect_watches()  drop every open watch connection mid-stream
      expire_history()      compaction: watching from any older resourceVersion is a 410
      send_bookmarks()      a BOOKMARK now to every watch that allows them
      forbid(path) / allow(path)   exact request paths answered 403 after authentication
      failing_checks        {check: reason}: failing livez/readyz/healthz checks (500)
      unhealthy_components  {component: message} for /api/v1/componentstatuses
      requests              every request's path and query, 401s included
    """

    def __init__(self, source: Path | None, token_file: Path, *, version: str = "1.35",
                 forbidden: Iterable[str] = (), user: str = "system:serviceaccount:kubebridge:kubebridge",
                 bookmark_interval: float | None = None, watch_timeout: float = 1800.0) -> None:
        """`source`: a tests/fixtures directory, or None for the package data (1.35 only)."""
        if source is None:
            read: Callable[[str, str], bytes] = lambda _dir, name: paths.data_file(name).read_bytes()
        else:
            read = lambda folder, name: (Path(source) / folder / name).read_bytes()  # noqa: E731
        self.token_file = Path(token_file)
        self.user = user
        self.forbidden: set[str] = set(forbidden)
        self.failing_checks: dict[str, str] = {}
        self.unhealthy_components: dict[str, str] = {}
        self.requests: list[str] = []
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.metrics = read("apiserver", f"nri-k8s-{version}-apiserver-metrics.txt")
        self.checks = proto.health_checks(read("apiserver", SLIS))
        self._gzipped: bytes | None = None
        self.store = ApiStore()
        self._load(read)
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self.base_url: str | None = None

    def _load(self, read: Callable[[str, str], bytes]) -> None:
        pods = json.loads(read("kubelet", paths.PODS.format(version="1.35")))["items"]
        events = json.loads(read("events", "dd-kubernetes-events.json"))["items"]
        events.append(json.loads(read("events", "k9s-event.json")))
        namespaces = json.loads(read("kube_system", "dd-kubernetes-namespaces.json"))["items"]
        nodes = json.loads(read("kube_system", "dd-kubernetes-filtered_node_list_1_4.json"))["items"]
        known = {n["metadata"]["name"] for n in namespaces}
        for obj in pods + events:  # a namespace every served object lives in
            ns = obj["metadata"].get("namespace", "default")
            if ns not in known:
                known.add(ns)
                namespaces.append({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]},
                                   "status": {"phase": "Active"}})
        for resource, items in (("namespaces", namespaces), ("nodes", nodes), ("pods", pods),
                                ("events", events)):
            for obj in items:
                self.store.put(resource, obj)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM of the DEMO-ONLY CA that signed the server certificate."""
        return paths.cert_file("ca.crt")

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:`port` (0: any free port); returns `https://127.0.0.1:PORT`."""
        if self._runner is not None:
            raise RuntimeError("already started")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(paths.cert_file("server.crt"), paths.cert_file("server.key"))
        app = web.Application(middlewares=[self._gate])
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=context).start()
        self.base_url = f"https://127.0.0.1:{self._runner.addresses[0][1]}"
        if self.bookmark_interval:
            self._ticker = asyncio.create_task(self._tick(self.bookmark_interval))
        return self.base_url

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.store.disconnect()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.base_url = None

    async def __aenter__(self) -> ReplayApiserver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kubeconfig_path(self, directory: Path) -> Path:
        """Write a kubeconfig (server URL, inline CA data, the current token) and return it."""
        if self.base_url is None:
            raise RuntimeError("start() first")
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "replay", "preferences": {},
            "clusters": [{"name": "replay", "cluster": {
                "server": self.base_url,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": "replay", "user": {"token": self.token_file.read_text().strip()}}],
            "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "replay",
                                                        "namespace": "default"}}],
        }
        path = Path(directory) / "kubeconfig"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- test hooks ---------------------------------------------------------------------

    def add_event(self, obj: dict) -> dict:
        """Create or update (same namespace/name) a core/v1 Event; returns it as stored."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", obj.get("involvedObject", {}).get("namespace") or "default")
        return self.store.put("events", obj)

    def add_pod(self, obj: dict) -> dict:
        return self.store.create("pods", obj)

    def update_pod(self, obj: dict) -> dict:
        meta = obj["metadata"]
        self.store.get("pods", meta.get("namespace", ""), meta["name"])  # 404 if absent
        return self.store.put("pods", obj)

    def delete_pod(self, namespace: str, name: str) -> dict:
        return self.store.delete("pods", namespace, name)

    def disconnect_watches(self) -> int:
        return self.store.disconnect()

    def expire_history(self) -> None:
        self.store.expire_history()

    def send_bookmarks(self) -> None:
        self.store.bookmark()

    def forbid(self, path: str) -> None:
        self.forbidden.add(path)

    def allow(self, path: str) -> None:
        self.forbidden.discard(path)

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.store.bookmark()

    # -- HTTP ---------------------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("/api/v1", "/apis/coordination.k8s.io/v1"):
            router.add_route("*", prefix + "/{resource}", self._collection)
            router.add_route("*", prefix + "/{resource}/{name}", self._item)
            router.add_route("*", prefix + "/namespaces/{namespace}/{resource}", self._collection)
            router.add_route("*", prefix + "/namespaces/{namespace}/{resource}/{name}", self._item)
        router.add_get("/metrics", self._metrics)
        for endpoint in ("healthz", "livez", "readyz"):
            router.add_get("/" + endpoint, self._health(endpoint))
        router.add_get("/version", lambda r: web.Response(body=proto.version(self.metrics),
                                                          content_type=proto.JSON_TYPE))

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """Authenticate (401), authorize (403), and turn ApiErrors into Status objects."""
        self.requests.append(request.path_qs)
        anonymous = "Authorization" not in request.headers and request.path in proto.PUBLIC_PATHS
        if not anonymous and not token_matches(request, self.token_file):
            return proto.unauthorized()
        if request.path in self.forbidden:
            return proto.forbidden(self.user, request.method, request.path, request.query)
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
        if request.match_info["resource"] == "componentstatuses" and request.path == "/api/v1/componentstatuses":
            return web.Response(body=proto.componentstatuses(self.unhealthy_components),
                                content_type=proto.JSON_TYPE,
                                headers={"Warning": '299 - "v1 ComponentStatus is deprecated in v1.19+"'})
        resource, namespace = self._resource(request)
        q = request.query
        if request.method == "POST" and resource in WRITABLE and namespace is not None:
            obj = await request.json()
            obj.setdefault("metadata", {})["namespace"] = namespace
            return _json(self.store.create(resource, obj), 201)
        if request.method != "GET":
            raise _not_allowed()
        if proto.truthy(q.get("watch")):
            return await self._watch(request, resource, namespace)
        limit = int(q.get("limit") or 0)
        return _json(self.store.list(resource, namespace, limit, q.get("continue", "")))

    async def _item(self, request: web.Request) -> web.StreamResponse:
        resource, namespace = self._resource(request)
        name = request.match_info["name"]
        if request.method == "GET":
            return _json(self.store.get(resource, namespace or "", name))
        if resource not in WRITABLE or namespace is None:
            raise _not_allowed()
        if request.method == "PUT":
            obj = await request.json()
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not "
                               f"match the name on the URL ({name})")
            meta.update(name=name, namespace=namespace)
            return _json(self.store.update(resource, obj))
        if request.method == "DELETE":
            self.store.delete(resource, namespace, name)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, "group": "coordination.k8s.io", "kind": resource}})
        raise _not_allowed()

    async def _watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        """A chunked stream of JSON lines; a too-old resourceVersion is an ERROR event (the
        HTTP status stays 200, as on the real apiserver)."""
        q = request.query
        resp = web.StreamResponse(headers={"Content-Type": proto.JSON_TYPE})
        resp.enable_chunked_encoding()
        try:
            watcher = self.store.watch(resource, namespace, q.get("resourceVersion", ""),
                                       proto.truthy(q.get("allowWatchBookmarks")))
        except ApiError as exc:
            await resp.prepare(request)
            status = json.loads(proto.status(exc.code, exc.reason, exc.message).body)
            await resp.write(go_json({"type": "ERROR", "object": status}, newline=True))
            await resp.write_eof()
            return resp
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(q.get("timeoutSeconds") or self.watch_timeout)
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
        finally:
            self.store.watchers.discard(watcher)
        await resp.write_eof()
        return resp

    async def _metrics(self, request: web.Request) -> web.Response:
        headers = {"Content-Type": proto.METRICS_TYPE}
        body = self.metrics
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            if self._gzipped is None:
                self._gzipped = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
            headers["Content-Encoding"] = "gzip"
            body = self._gzipped
        return web.Response(body=body, headers=headers)

    def _health(self, endpoint: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return proto.health(endpoint, self.checks.get(endpoint, []), self.failing_checks, request.query)
        return handler


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=go_json(obj, newline=True), content_type=proto.JSON_TYPE)


def _not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
