"""Talking to the Kubernetes API server: client construction shared by the cluster collectors.

One `KubeTarget` per collector, from its `endpoint` section (in-cluster default: the
service-account token and CA) or, when set, its `kubeconfig` file (running outside the
cluster; parsed by kubernetes-asyncio's own loader: contexts, inline or file CA and client
certificates, tokens). It gives
- `client()`: a kubernetes-asyncio `ApiClient` (lists, watches, leases);
- `upstream(deps)`: an `Upstream` on the shared session for raw paths (/metrics, /livez).
The in-cluster token is re-read when its file changes (bound tokens rotate about hourly,
kubernetes/kubernetes#68164); kubernetes-asyncio's own refresh only covers its loader.
Neither follows a redirect unless the endpoint sets `follow_redirects`, and then only to the
same scheme, host and port (`RedirectGuard`, `upstream.redirect_target`).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from exporter.config import Endpoint
from exporter.deps import Deps
from exporter.errors import NoDataError, NotPermittedError
from exporter.registry import Option
from exporter.upstream import (MAX_REDIRECTS, REDIRECTS, TLS, RedirectRefused, TokenSource, Upstream,
                               UpstreamError, redirect_target)

if TYPE_CHECKING:  # imported where a client is built: see exporter/kube/__init__.py
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

IN_CLUSTER = Endpoint("https://kubernetes.default.svc")


def options(**extra: Option) -> dict[str, Option]:
    """The `endpoint` and `kubeconfig` options every apiserver-facing collector accepts."""
    return {
        "endpoint": Option(IN_CLUSTER, kind="endpoint",
                           help="The API server (default: the in-cluster service with the "
                                "service-account token and CA)."),
        "kubeconfig": Option("", help="A kubeconfig file; when set it replaces `endpoint` "
                                      "(for running outside the cluster)."),
        **extra,
    }


class _HeaderToken(TokenSource):
    """The Authorization header a kubeconfig yielded (tokens there are static)."""

    def __init__(self, conf: client.Configuration) -> None:
        super().__init__("")  # no file: invalidate() and re-reads are no-ops
        self.conf = conf

    def token(self) -> str:
        return str(self.conf.api_key.get("BearerToken", "")).removeprefix("Bearer ")


class KubeTarget:
    """Where one collector's API server is, and how to authenticate to it."""

    def __init__(self, endpoint: Endpoint, kubeconfig: str = "") -> None:
        self.endpoint = endpoint
        self.kubeconfig = kubeconfig
        self._conf: client.Configuration | None = None
        self._token = TokenSource(endpoint.token_file) if endpoint.token_file and not kubeconfig else None

    @classmethod
    def from_options(cls, opts: Any) -> KubeTarget:
        return cls(opts["endpoint"], opts.get("kubeconfig", ""))

    async def configuration(self) -> client.Configuration:
        """A kubernetes-asyncio Configuration (kubeconfig parsed once)."""
        from kubernetes_asyncio import client, config as kconfig

        if self._conf is None:
            conf = client.Configuration()
            if self.kubeconfig:
                await kconfig.load_kube_config(config_file=self.kubeconfig, client_configuration=conf,
                                               persist_config=False)
            else:
                ep = self.endpoint
                conf.host = ep.url
                conf.ssl_ca_cert = ep.ca_file or None
                conf.cert_file = ep.cert_file or None
                conf.key_file = ep.key_file or None
                conf.tls_server_name = ep.server_name or None
                conf.verify_ssl = not ep.insecure_skip_verify
                if self._token is not None:
                    conf.api_key["BearerToken"] = ""
                    conf.refresh_api_key_hook = self._refresh
            self._conf = conf
        return self._conf

    def _refresh(self, conf: client.Configuration) -> None:
        assert self._token is not None
        conf.api_key["BearerToken"] = "Bearer " + self._token.token()

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[client.ApiClient]:
        """An ApiClient (its own connection pool), closed on exit."""
        from kubernetes_asyncio import client

        conf = await self.configuration()
        api = client.ApiClient(conf)
        rest = api.rest_client
        rest.pool_manager = RedirectGuard(rest.pool_manager, URL(conf.host or ""),  # type: ignore[assignment]
                                          self.endpoint.follow_redirects)
        try:
            yield api
        finally:
            await api.close()

    async def upstream(self, deps: Deps, max_bytes: int = 256 << 20) -> Upstream:
        """Raw HTTP(S) to the API server on the shared session."""
        if not self.kubeconfig:
            return deps.upstream(self.endpoint, max_bytes)
        if deps.session is None:
            raise RuntimeError("offline: no upstream access")
        conf = await self.configuration()
        tls = TLS(conf.ssl_ca_cert or "", conf.cert_file or "", conf.key_file or "",
                  conf.tls_server_name or "", not conf.verify_ssl)
        return Upstream(deps.session, conf.host or "", tls=tls, token=_HeaderToken(conf), max_bytes=max_bytes,
                        follow_redirects=self.endpoint.follow_redirects)


class RedirectGuard:
    """Stands in for kubernetes-asyncio's session (`RESTClientObject.pool_manager`, used for
    `request` and `close` only): requests never follow redirects on their own. A redirect that
    may be followed (same origin, `follow`) is; any other 3xx answer is returned as it is, and
    the client reports it as the HTTP error it is (`translate`: http_status)."""

    def __init__(self, session: aiohttp.ClientSession, origin: URL, follow: bool) -> None:
        self.session = session
        self.origin = origin
        self.follow = follow

    async def request(self, method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        for _ in range(MAX_REDIRECTS):
            resp = await self.session.request(method, url, allow_redirects=False, **kwargs)
            if resp.status not in REDIRECTS:
                return resp
            try:
                target = redirect_target(url, resp.status, resp.headers.get("Location"), self.origin,
                                         self.follow)
            except RedirectRefused:
                return resp
            resp.release()
            if resp.status in (301, 302, 303) and method != "GET":
                method = "GET"
                kwargs.pop("data", None)
            url = str(target)
        return await self.session.request(method, url, allow_redirects=False, **kwargs)

    async def close(self) -> None:
        await self.session.close()


def translate(exc: ApiException, what: str) -> Exception:
    """An ApiException as the framework's error types (401/403 not permitted, 404 no data)."""
    if exc.status in (401, 403):
        return NotPermittedError(f"{what}: HTTP {exc.status} {exc.reason}")
    if exc.status == 404:
        return NoDataError(f"{what}: 404")
    return UpstreamError(what, exc.status or 0)
