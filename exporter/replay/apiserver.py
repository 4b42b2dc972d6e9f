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
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from aiohttp import web

from exporter.replay import apiprotocol as proto
from exporter.replay import paths
from exporter.replay.apihttp import ApiHttp
from exporter.replay.apistore import ApiStore


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
      put_node(obj)         create or replace a Node (its labels: region, zone, roles)
      proxy_node(name, url, ca_file)  /api/v1/nodes/<name>/proxy/... reaches that kubelet
      proxied_bytes         response bytes relayed by the node proxy (as sent: gzip stays gzip)
    """

    def __init__(self, source: Path | None, token_file: Path, *, version: str = "1.35",
                 forbidden: Iterable[str] = (), user: str = "system:serviceaccount:kubebridge:kubebridge",
                 bookmark_interval: float | None = None, watch_timeout: float = 1800.0) -> None:
        """`source`: a tests/fixtures directory, or None for the package data (1.35 only)."""
        read = _reader(source)
        self.token_file = Path(token_file)
        self.user = user
        self.forbidden: set[str] = set(forbidden)
        self.failing_checks: dict[str, str] = {}
        self.unhealthy_components: dict[str, str] = {}
        self.requests: list[str] = []
        self.node_proxies: dict[str, tuple[str, Path]] = {}
        self.proxied_bytes = 0
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.metrics = read("apiserver", f"nri-k8s-{version}-apiserver-metrics.txt")
        # What /metrics serves, given the recorded body (the demo advances its counters).
        self.metrics_filter: Callable[[bytes], bytes] | None = None
        self.checks = proto.health_checks(read("apiserver", paths.APISERVER_SLIS))
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
        self._runner, self.base_url = await paths.serve_tls(ApiHttp(self).app(), port, shutdown_timeout=1.0)
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

    def metrics_body(self) -> bytes:
        """The /metrics body: the recorded one, through `metrics_filter` when set."""
        return self.metrics_filter(self.metrics) if self.metrics_filter else self.metrics

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

    def put_node(self, obj: dict) -> dict:
        return self.store.put("nodes", obj)

    def proxy_node(self, name: str, url: str, ca_file: Path) -> None:
        self.node_proxies[name] = (url.rstrip("/"), Path(ca_file))

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


def _reader(source: Path | None) -> Callable[[str, str], bytes]:
    """(fixture folder, file name) -> bytes, from tests/fixtures or the flat package data."""
    if source is None:
        return lambda _folder, name: paths.data_file(name).read_bytes()
    return lambda folder, name: paths.fixture_path(source, folder, name).read_bytes()
