"""ReplayKubelet: an HTTPS kubelet on 127.0.0.1 serving real captured payloads.

It speaks the kubelet's secure-port protocol closely enough to test a real client: TLS
with the demo server certificate, a bearer token checked on every request (re-read from
a file, so rotation can be tested), the kubelet's content types and error bodies, gzip
on the metrics endpoints when the client accepts it (promhttp does), and pod churn
while running, reflected consistently in /pods, /metrics/cadvisor and /stats/summary.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import paths, protocol
from .encoding import go_json
from .node import SyntheticNode
from .resource import render_resource_metrics


class ReplayKubelet:
    """A fake kubelet over real captures; see `from_fixtures` for which capture is which.

    Endpoints (GET): /metrics/cadvisor, /metrics, /metrics/probes, /metrics/slis,
    /metrics/resource (derived), /stats/summary, /pods, /healthz[?verbose]; others 404.

    Test hooks (plain attributes, live while serving):
      requests          (path with query, headers) of every request received, 401s included
      healthz_failures  {check: reason}; a "ping"/"log"/"syncloop" entry makes /healthz 500
      forbidden_paths   exact paths answered 403 after authentication
      token_file        re-read on every request; rewrite it to rotate the token
    Churn: add_pod, remove_pod, set_pods, update_pod (status changes such as a crash loop).
    """

    def __init__(
        self,
        *,
        cadvisor: bytes,
        pods: dict,
        metrics: bytes | Callable[[], bytes],
        probes: bytes | Callable[[], bytes],
        stats_summary: dict,
        token_file: Path,
        node_name: str | None = None,
        slis: bytes | None = None,
        forbidden_paths: Iterable[str] = (),
        seed: int = 0,
        user: str = "system:serviceaccount:kubebridge:kubebridge",
    ) -> None:
        """`node_name` defaults to the capture's (stats summary nodeName); `seed` drives clones.

        `forbidden_paths`: exact request paths answered 403 after authentication, as the
        kubelet's authorizer would for a client lacking the nodes/<subresource> RBAC; the
        set is live (`self.forbidden_paths`), `user` only appears in the 403 body.
        """
        self._base = (cadvisor, pods, stats_summary)
        self._seed = seed
        self.node = SyntheticNode(cadvisor, pods, stats_summary, seed=seed, node_name=node_name)
        self.node_name = self.node.node_name or "replay-node"
        self.metrics = metrics
        self.probes = probes
        self.slis = slis
        # Applied to the cached /metrics/cadvisor body per request (the demo advances counters).
        self.cadvisor_filter: Callable[[bytes], bytes] | None = None
        self.token_file = Path(token_file)
        self.forbidden_paths: set[str] = set(forbidden_paths)
        self.user = user
        # check name -> reason; any entry makes /healthz answer 500 (test hook).
        self.healthz_failures: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._rendered: dict[str, bytes] = {}
        self._gzipped: dict[str, tuple[bytes, bytes]] = {}  # path -> (body, gzip of it)
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def from_fixtures(
        cls, fixtures_dir: Path, version: str = "1.35", *, token_file: Path, **kwargs: Any
    ) -> ReplayKubelet:
        """Load a capture set from `tests/fixtures` (`cadvisor/` and `kubelet/` subfolders; the
        captures the package ships are read from there, see `paths.fixture_path`).

        /metrics/cadvisor, /pods and /stats/summary are one real capture of Kubernetes
        `version` ("1.35", "1.24" or "1.16"; newrelic/nri-kubernetes datagen). No kubelet
        /metrics or /metrics/probes capture exists for those versions, so those two come
        from other, older clusters: `dd-kubelet-1.10-kubelet_metrics.txt` (v1.10, docker
        era) and `dd-kubelet-metrics-probes.txt` (GKE ~1.20/1.21, whose pod names/UIDs do
        not match the served /pods). /metrics/slis is `dd-agent-kubelet-metrics-slis.txt`.
        /metrics/resource is derived from the stats summary (see `resource`).
        """
        return cls._load(
            lambda folder, name: paths.fixture_path(fixtures_dir, folder, name).read_bytes(),
            version, token_file, **kwargs
        )

    @classmethod
    def from_package_data(cls, token_file: Path, **kwargs: Any) -> ReplayKubelet:
        """Same as `from_fixtures(..., "1.35")` but from the copies shipped in the package."""
        return cls._load(
            lambda _folder, name: paths.data_file(name).read_bytes(), "1.35", token_file, **kwargs
        )

    @classmethod
    def _load(
        cls, read: Callable[[str, str], bytes], version: str, token_file: Path, **kwargs: Any
    ) -> ReplayKubelet:
        return cls(
            cadvisor=read("cadvisor", paths.CADVISOR.format(version=version)),
            pods=json.loads(read("kubelet", paths.PODS.format(version=version))),
            stats_summary=json.loads(read("kubelet", paths.STATS_SUMMARY.format(version=version))),
            metrics=read("kubelet", paths.KUBELET_METRICS),
            probes=read("kubelet", paths.PROBES),
            slis=read("kubelet", paths.SLIS),
            token_file=token_file,
            **kwargs,
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM of the DEMO-ONLY CA that signed the server certificate."""
        return paths.cert_file("ca.crt")

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:`port` (0 = any free port); returns `https://127.0.0.1:PORT`."""
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application(middlewares=[self._gate])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner, self.base_url = await paths.serve_tls(app, port)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.base_url = None

    async def __aenter__(self) -> ReplayKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- churn --------------------------------------------------------------------------

    @property
    def podlist(self) -> dict:
        """The PodList currently served on /pods (live object: do not mutate)."""
        return self.node.podlist

    def add_pod(self, template: str | None = None) -> tuple[str, str]:
        """Clone a pod ("namespace/name" or unique "name"; default round-robin over the
        captured pods with series); returns the new (namespace, name)."""
        key = self.node.clone(self._resolve(template) if template else None)
        self._changed()
        return key

    def remove_pod(self, namespace: str, name: str) -> None:
        """Delete a pod from /pods, /metrics/cadvisor and /stats/summary; KeyError if absent."""
        if not self.node.remove((namespace, name)):
            raise KeyError(f"no pod {namespace}/{name}")
        self._changed()

    def update_pod(self, namespace: str, name: str, change: Callable[[dict], None]) -> None:
        """Apply `change` to the served PodList item of a pod (e.g. its status, as the kubelet's
        status manager would: see `podstatus`); /pods serves the result from the next request.
        KeyError if absent."""
        for item in self.node.podlist.get("items", []):
            meta = item.get("metadata", {})
            if (meta.get("namespace", ""), meta.get("name")) == (namespace, name):
                change(item)
                self._changed()
                return
        raise KeyError(f"no pod {namespace}/{name}")

    def set_pods(self, count: int, seed: int | None = None) -> list[tuple[str, str]]:
        """Reset to the capture scaled to `count` pods (as `synth.clone_node`); returns keys."""
        cadvisor, pods, summary = self._base
        self.node = SyntheticNode(
            cadvisor, pods, summary, seed=self._seed if seed is None else seed, node_name=self.node_name
        )
        self.node.scale(count)
        self._changed()
        return self.node.pod_keys()

    def _resolve(self, template: str) -> tuple[str, str]:
        if "/" in template:
            namespace, name = template.split("/", 1)
            return (namespace, name)
        matches = [k for k in dict.fromkeys(self.node.pod_keys() + self.node.templates) if k[1] == template]
        if len(matches) != 1:
            raise KeyError(f"template {template!r} matches {len(matches)} pods; use namespace/name")
        return matches[0]

    def _changed(self) -> None:
        self._rendered.clear()
        self._gzipped.clear()

    # -- HTTP ---------------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """Record, authenticate (401) and authorize (403) every request, like the kubelet's filter."""
        self.requests.append((request.path_qs, dict(request.headers)))
        if not protocol.token_matches(request, self.token_file):
            return protocol.unauthorized()
        if request.path in self.forbidden_paths:
            return protocol.forbidden(request.path, self.user, request.method)
        return await handler(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return protocol.text_response(405, "405: Method Not Allowed")
        path = request.path
        if path == "/healthz":
            return protocol.healthz(request, self.healthz_failures)
        if path in ("/pods", "/pods/"):
            return web.Response(body=self._body("/pods"), content_type=protocol.JSON_CONTENT_TYPE)
        if path == "/stats/summary":
            return web.Response(body=self._body(path), content_type=protocol.JSON_CONTENT_TYPE)
        if path in ("/metrics", "/metrics/cadvisor", "/metrics/probes", "/metrics/resource") or (
            path == "/metrics/slis" and self.slis is not None
        ):
            return await self._metrics_response(request, path)
        return protocol.not_found()

    def _body(self, path: str) -> bytes:
        """Render lazily and cache until the next churn: the 1.35x250 payload is ~19 MB."""
        if path not in self._rendered:
            render = {
                "/metrics/cadvisor": self.node.render_cadvisor,
                "/pods": self.node.render_pods,
                # go-restful pretty-prints with a one-space indent and no trailing newline.
                "/stats/summary": lambda: go_json(self.node.summary, indent=1),
                "/metrics/resource": lambda: render_resource_metrics(self.node.summary or {}),
                "/metrics": lambda: self._payload(self.metrics),
                "/metrics/probes": lambda: self._payload(self.probes),
                "/metrics/slis": lambda: self.slis or b"",
            }[path]
            live = path in ("/metrics", "/metrics/probes") and callable(self._live.get(path))
            if live:  # a live payload (the demo's derived kubelet metrics): rendered per request
                return render()
            self._rendered[path] = render()
        if path == "/metrics/cadvisor" and self.cadvisor_filter is not None:
            return self.cadvisor_filter(self._rendered[path])
        return self._rendered[path]

    @property
    def _live(self) -> dict[str, object]:
        return {"/metrics": self.metrics, "/metrics/probes": self.probes}

    @staticmethod
    def _payload(body: bytes | Callable[[], bytes]) -> bytes:
        return body() if callable(body) else body

    async def _metrics_response(self, request: web.Request, path: str) -> web.Response:
        body = self._body(path)
        headers = {"Content-Type": protocol.METRICS_CONTENT_TYPE}
        # promhttp compresses when the scraper offers gzip (aiohttp's client does by default).
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            cached = self._gzipped.get(path)
            if cached is None or cached[0] is not body:  # churn may have replaced the body
                # ~0.5 s for a 19 MB payload: off the event loop so other requests proceed.
                cached = (body, await asyncio.to_thread(gzip.compress, body, 6, mtime=0))
                self._gzipped[path] = cached
            headers["Content-Encoding"] = "gzip"
            body = cached[1]
        return web.Response(body=body, headers=headers)
