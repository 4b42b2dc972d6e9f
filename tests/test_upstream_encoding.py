"""The node-local kubelet is asked for identity encoding (gunzipping every scrape costs the
agent more than reading it uncompressed); other upstreams may send gzip."""
from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from exporter.upstream import Upstream


@pytest.mark.parametrize("compressed, expected", [(False, "identity"), (True, "gzip")])
async def test_accept_encoding(aiohttp_server, compressed: bool, expected: str):
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        resp = web.Response(body=b"m 1\n" * 1000, content_type="text/plain")
        resp.enable_compression()  # only when the request allows gzip
        return resp

    app = web.Application()
    app.router.add_get("/metrics", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        got = await Upstream(session, str(server.make_url("")), compressed=compressed).request("/metrics")
    assert got.body == b"m 1\n" * 1000
    assert expected in seen[0] and (compressed or "gzip" not in seen[0])
