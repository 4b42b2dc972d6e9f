"""Upstreams cannot redirect us (issue 13): a 3xx is refused unless the endpoint sets
`follow_redirects`, and even then never to another scheme, host or port."""
from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from exporter import config as config_mod
from exporter.config import Endpoint
from exporter.errors import ConfigError
from exporter.failures import classify
from exporter.kube.client import KubeTarget
from exporter.upstream import TokenSource, Upstream, UpstreamError


class Recorder:
    """An aiohttp app answering `routes` (path -> handler), recording (path, Authorization)."""

    def __init__(self, routes: dict) -> None:
        self.requests: list[tuple[str, str]] = []
        self.app = web.Application()
        self.routes = routes
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Authorization", "")))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)


def redirect(location):
    async def handle(request: web.Request) -> web.StreamResponse:
        target = location(request) if callable(location) else location
        return web.Response(status=302, headers={"Location": target})
    return handle


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="up 1\n", content_type="text/plain")


@pytest.fixture
async def elsewhere(aiohttp_server):
    rec = Recorder({"/metrics": ok})
    rec.server = await aiohttp_server(rec.app)
    return rec


async def upstream_for(aiohttp_server, routes, tmp_path, follow: bool):
    rec = Recorder(routes)
    server = await aiohttp_server(rec.app)
    token = tmp_path / "token"
    token.write_text("secret-token")
    session = aiohttp.ClientSession()
    up = Upstream(session, str(server.make_url("")), token=TokenSource(token), follow_redirects=follow)
    return rec, up, session


@pytest.mark.parametrize("follow", [False, True])
async def test_a_redirect_to_another_host_is_refused(aiohttp_server, elsewhere, tmp_path, follow):
    target = str(elsewhere.server.make_url("/metrics"))
    rec, up, session = await upstream_for(aiohttp_server, {"/metrics": redirect(target)}, tmp_path, follow)
    async with session:
        with pytest.raises(UpstreamError) as err:
            await up.request("/metrics")
    assert err.value.status == 302 and classify(err.value) == "http_status"
    assert "redirect refused" in str(err.value)
    assert elsewhere.requests == []  # neither the request nor the token went there


async def test_redirects_are_refused_by_default_even_on_the_same_host(aiohttp_server, tmp_path):
    rec, up, session = await upstream_for(aiohttp_server, {"/old": redirect("/metrics"), "/metrics": ok},
                                          tmp_path, follow=False)
    async with session:
        with pytest.raises(UpstreamError, match="follow_redirects is off"):
            await up.request("/old")
    assert [p for p, _ in rec.requests] == ["/old"]


async def test_a_same_origin_redirect_is_followed_when_configured(aiohttp_server, tmp_path):
    rec, up, session = await upstream_for(aiohttp_server, {"/old": redirect("/metrics"), "/metrics": ok},
                                          tmp_path, follow=True)
    async with session:
        resp = await up.request("/old")
    assert resp.body == b"up 1\n"
    assert rec.requests == [("/old", "Bearer secret-token"), ("/metrics", "Bearer secret-token")]


async def test_a_scheme_change_is_refused_even_when_following(aiohttp_server, tmp_path):
    """Same host and port, http instead of https (or back): refused."""
    def downgrade(request):
        return str(request.url.with_scheme("https"))  # (served over http: any other scheme)
    rec, up, session = await upstream_for(aiohttp_server, {"/metrics": redirect(downgrade)}, tmp_path,
                                          follow=True)
    async with session:
        with pytest.raises(UpstreamError, match="another scheme or host"):
            await up.request("/metrics")
    assert len(rec.requests) == 1


async def test_a_redirect_loop_ends(aiohttp_server, tmp_path):
    rec, up, session = await upstream_for(aiohttp_server, {"/a": redirect("/b"), "/b": redirect("/a")},
                                          tmp_path, follow=True)
    async with session:
        with pytest.raises(UpstreamError, match="more than 5 redirects"):
            await up.request("/a")
    assert len(rec.requests) == 6


def test_follow_redirects_is_an_endpoint_option():
    cfg = config_mod.parse({"kubelet": {"url": "https://10.0.0.1:10250", "follow_redirects": True},
                            "collectors": {"apiserver": {"endpoint": {"url": "https://k8s:443"}}}}, env={})
    assert cfg.kubelet.follow_redirects is True
    assert cfg.collectors["apiserver"].options["endpoint"].follow_redirects is False
    with pytest.raises(ConfigError, match="kubelet.follow_redirects: must be true or false"):
        config_mod.parse({"kubelet": {"follow_redirects": "yes"}}, env={})


@pytest.mark.parametrize("follow", [False, True])
async def test_the_kubernetes_client_refuses_redirects_too(aiohttp_server, elsewhere, follow):
    """Lists and watches (kubernetes-asyncio) are guarded like raw requests: a redirect to
    another host is not followed (the client sees the 302); a same-origin one only if asked."""
    from kubernetes_asyncio import client

    namespaces = {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": []}

    async def listing(request):
        return web.json_response(namespaces)
    far = str(elsewhere.server.make_url("/api/v1/namespaces"))
    rec = Recorder({"/api/v1/namespaces": redirect("/moved"), "/moved": listing,
                    "/api/v1/pods": redirect(far)})
    server = await aiohttp_server(rec.app)
    target = KubeTarget(Endpoint(str(server.make_url("")).rstrip("/"), follow_redirects=follow))
    async with target.client() as api:
        v1 = client.CoreV1Api(api)
        same = await v1.list_namespace(_preload_content=False)
        far_resp = await v1.list_pod_for_all_namespaces(_preload_content=False)
        assert far_resp.status == 302
        assert same.status == (200 if follow else 302)
    assert elsewhere.requests == []


async def test_an_etcd_member_cannot_redirect_us(aiohttp_server, aiohttp_client, elsewhere):
    """Through the whole exporter: a member's /metrics redirecting elsewhere reads as that
    source's http_status failure, and nothing reaches the other host."""
    from exporter.server import build_app
    target = str(elsewhere.server.make_url("/metrics"))
    member = Recorder({"/metrics": redirect(target), "/health": redirect(target)})
    member.server = await aiohttp_server(member.app)
    cfg = config_mod.parse({"collectors": {"etcd": {"enabled": True, "members": [
        {"url": str(member.server.make_url(""))}]}}}, env={}, overrides={"disable_defaults": True})
    client = await aiohttp_client(build_app(cfg))
    text = await (await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"})).text()
    assert 'kubebridge_up{collector="etcd"} 0' in text
    assert [ln for ln in text.splitlines() if ln.startswith('kubebridge_scrape_errors_total{collector="etcd"')
            and 'reason="http_status"' in ln], text
    assert member.requests and elsewhere.requests == []
