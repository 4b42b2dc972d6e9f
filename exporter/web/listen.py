"""Serving the app: plain HTTP, or TLS with a context chosen per connection.

Contract: with TLS, each accepted connection is upgraded with `loop.start_tls` using the
context `WebConfigSource.context()` returns at that moment, so a renewed certificate (or a
changed client CA, client_auth_type, version range) applies to the next connection without a
restart. A failed handshake (plain HTTP, no client certificate under
RequireAndVerifyClientCert, a SAN not in `client_allowed_sans`) closes the connection before
the app sees it and is logged at debug level only (scanners are noise, not news).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from exporter.web.tls import WebConfigSource, peer_allowed

log = logging.getLogger("kubebridge.web")
_HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake


class _Pending(asyncio.Protocol):
    """Holds what arrives between the end of the handshake and the app protocol's start."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


class _Handshake(asyncio.Protocol):
    """Accepts a TCP connection, upgrades it to TLS, then hands it to the app's protocol."""

    def __init__(self, app_factory: Callable[[], asyncio.Protocol], source: WebConfigSource) -> None:
        self.app_factory = app_factory
        self.source = source
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits for start_tls
        self.task = asyncio.ensure_future(self._upgrade(transport))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        pending = _Pending()
        try:
            ctx = self.source.context()
            tls = await loop.start_tls(transport, pending, ctx, server_side=True,
                                       ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        except asyncio.CancelledError:
            transport.close()
            raise
        except Exception as exc:  # a failed handshake ends this connection only
            log.debug("TLS handshake from %s failed: %s", transport.get_extra_info("peername"),
                      exc.__class__.__name__)
            transport.close()
            return
        if tls is None:
            transport.close()
            return
        tlscfg = self.source.config.tls
        if tlscfg is not None and tlscfg.client_allowed_sans and not peer_allowed(
                tls.get_extra_info("peercert"), tlscfg.client_allowed_sans):
            log.debug("client certificate from %s has no allowed SAN", tls.get_extra_info("peername"))
            tls.abort()
            return
        app = self.app_factory()
        tls.set_protocol(app)
        app.connection_made(tls)
        for chunk in pending.data:
            app.data_received(chunk)
        if pending.eof:
            app.eof_received()
        if pending.lost is not None:
            app.connection_lost(pending.lost[0])


class TLSSite(web.TCPSite):
    """A TCPSite whose TLS context is chosen per connection by a WebConfigSource."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, source: WebConfigSource) -> None:
        super().__init__(runner, host, port)
        self.source = source

    @property
    def name(self) -> str:
        return "https://" + super().name.split("://", 1)[1]

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Handshake(server, self.source), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def site(runner: web.BaseRunner, host: str, port: int, source: WebConfigSource | None) -> web.TCPSite:
    """The site for the listen address: TLS when the web config has tls_server_config."""
    if source is not None and source.tls_enabled:
        return TLSSite(runner, host or None, port, source)
    return web.TCPSite(runner, host or None, port)


def url(host: str, port: int, source: WebConfigSource | None) -> str:
    """The base URL a listener on host:port serves."""
    scheme = "https" if source is not None and source.tls_enabled else "http"
    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    return f"{scheme}://{shown}:{port}"


async def serve_until_signal(app: web.Application, host: str, port: int,
                             source: WebConfigSource | None, starting: Callable[[str], None],
                             duration: float = 0.0) -> None:
    """Serve until SIGTERM/SIGINT (or `duration` seconds); shutdown stays well inside
    Kubernetes' 30 s grace period. `starting(url)` is called before anything else runs (the
    start line comes first in the log), and an address that cannot be bound follows it."""
    starting(url(host, port, source))
    runner = web.AppRunner(app, shutdown_timeout=5.0, access_log=None, handle_signals=False)
    await runner.setup()
    s = site(runner, host, port, source)
    try:
        await s.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), duration or None)
        except TimeoutError:
            pass
    finally:
        await runner.cleanup()
