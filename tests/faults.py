"""A misbehaving upstream for the fault matrix (tests/test_faults.py).

`FaultyUpstream` is a raw HTTP/1.1 server over TLS on 127.0.0.1 (written on asyncio streams,
not aiohttp, so that it can send what no well-behaved server library would: a body cut off by
a reset, broken chunked framing, a body that never ends). It serves `pages` (path -> body and
content type), checks a bearer token (`token`: the only one accepted; change it to rotate), and
answers the paths listed in `faults` (path -> mode)
with that mode instead. One request per connection (`Connection: close`).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import zlib
from dataclasses import dataclass, field

from exporter.replay.paths import cert_file

CA_FILE = cert_file("ca.crt")  # the replay cluster's throw-away CA, made at first use

MODES = ("empty", "garbage", "huge", "hang", "hang_body", "drip", "reset", "chunked_error",
         "gzip_bomb", "wrong_content_type", "wrong_json_types", "redirect", "unauthorized_rotated",
         "forbidden", "error_500", "tls")
HTML_PAGE = b"<!doctype html><html><body><form action=/login>Sign in</form></body></html>\n"
# Wrong JSON types, by path (other paths: a JSON document where an exposition belongs).
WRONG_JSON = {
    "/stats/summary": b'{"node": "n1", "pods": [1, "x", {"podRef": 5}, {"podRef": {"name": 7}}]}',
    "/pods": b'{"kind": "PodList", "apiVersion": "v1", "items": "x"}',
}
WRONG_JSON_DEFAULT = b'{"items": [1, "a", null, {"metadata": []}]}'


@dataclass
class Page:
    """A good answer."""

    body: bytes
    content_type: str


@functools.cache
def gzip_bomb(size: int = 64 << 20) -> bytes:
    """A gzip member of `size` zero bytes (64 MiB is 65 KB on the wire)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join([*(z.compress(chunk) for _ in range(size >> 20)), z.flush()])


def garbage(size: int = 4096) -> bytes:
    """Binary noise (fixed seed: the same bytes every run)."""
    return random.Random(13).randbytes(size)


@dataclass
class FaultyUpstream:
    """See the module docstring. `tls_broken`: present a certificate the client cannot accept
    (the demo client certificate: clientAuth only, no SAN), on every path."""

    pages: dict[str, Page]
    token: str = ""  # the bearer token required on every path ('' = none)
    redirect_to: str = ""  # where `redirect` points (base URL)
    huge: int = 16 << 20  # bytes a `huge` answer streams (without Content-Length)
    drip_every: float = 0.05  # seconds between bytes of a `drip` answer
    tls_broken: bool = False
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def start(self) -> FaultyUpstream:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        name = "client" if self.tls_broken else "server"
        ctx.load_cert_chain(cert_file(f"{name}.crt"), cert_file(f"{name}.key"))
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=ctx)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            target = line.split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
            path = target.split("?", 1)[0]
            self.requests.append(path)
            await self._answer(writer, path, headers.get("authorization", ""))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError,
                IndexError):
            pass  # the client went away (or sent nonsense)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, w: asyncio.StreamWriter, path: str, auth: str) -> None:
        mode = self.faults.get(path)
        page = self.pages.get(path)
        if page is None:
            return _head(w, 404, "text/plain", b"404 page not found\n")
        if self.token and auth != f"Bearer {self.token}":  # (rotation: the test changes it)
            return _head(w, 401, "text/plain", b"Unauthorized\n")
        body, ctype = page.body, page.content_type
        if mode in (None, "tls", "unauthorized_rotated"):
            return _head(w, 200, ctype, body)
        if mode == "empty":
            return _head(w, 200, ctype, b"")
        if mode == "garbage":
            return _head(w, 200, ctype, garbage())
        if mode == "wrong_content_type":
            return _head(w, 200, "text/html; charset=utf-8", HTML_PAGE)
        if mode == "wrong_json_types":
            return _head(w, 200, "application/json", WRONG_JSON.get(path, WRONG_JSON_DEFAULT))
        if mode == "redirect":
            return _head(w, 302, "text/html", b"", [("Location", self.redirect_to + path)])
        if mode == "forbidden":
            return _head(w, 403, "text/plain", b"Forbidden (user=system:anonymous)\n")
        if mode == "error_500":
            return _head(w, 500, "text/plain", b"Internal Server Error\n")
        if mode == "gzip_bomb":
            bomb = gzip_bomb()
            return _head(w, 200, ctype, bomb, [("Content-Encoding", "gzip")])
        if mode == "hang":
            await asyncio.Event().wait()
        if mode == "hang_body":
            _head(w, 200, ctype, body[: len(body) // 2], length=len(body))
            await w.drain()
            await asyncio.Event().wait()
        if mode == "drip":
            _head(w, 200, ctype, b"", length=len(body))
            for i in range(len(body)):
                w.write(body[i:i + 1])
                await w.drain()
                await asyncio.sleep(self.drip_every)
            return None
        if mode == "reset":
            _head(w, 200, ctype, body[: len(body) // 2], length=len(body))
            await w.drain()
            w.transport.abort()
            return None
        if mode == "chunked_error":
            _head(w, 200, ctype, b"", [("Transfer-Encoding", "chunked")], length=None)
            w.write(b"%x\r\n%s\r\nzz-not-hex\r\nbroken\r\n" % (min(len(body), 100), body[:100]))
            return None
        if mode == "huge":  # a body that goes on past any cap, with no Content-Length
            _head(w, 200, ctype, b"", length=None)
            line = b'huge_series{label="%s"} 1\n' % (b"x" * 100)
            block = line * ((64 << 10) // len(line))
            for _ in range(self.huge // len(block)):
                w.write(block)
                await w.drain()
            return None
        raise AssertionError(f"unknown mode {mode}")


def _head(w: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
          extra: list[tuple[str, str]] | None = None, length: int | None | bool = True) -> None:
    """Write a status line, headers and `body`. `length`: True for len(body), an int to promise
    more than is written, None for none (chunked, or delimited by closing)."""
    headers = [("Content-Type", ctype), ("Connection", "close"), *(extra or [])]
    if length is True:
        headers.append(("Content-Length", str(len(body))))
    elif isinstance(length, int) and length is not False:
        headers.append(("Content-Length", str(length)))
    reason = {200: "OK", 302: "Found", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              500: "Internal Server Error"}.get(status, "X")
    w.write(f"HTTP/1.1 {status} {reason}\r\n".encode()
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + body)
