"""HTTP(S) access to upstreams: TLS contexts, rotating bearer tokens, status mapping.

Tokens are re-read when their file changes (projected service-account tokens rotate about
hourly) and the last good token is kept if a read fails. A token is only ever sent to the
upstream it was configured for; it is never logged.

Redirects are refused: a 3xx answer is an `http_status` failure, unless the endpoint sets
`follow_redirects`, and even then only to the same scheme, host and port (at most
`MAX_REDIRECTS` hops). So a compromised or misconfigured upstream cannot point us, and our
token, at another host, nor downgrade HTTPS to HTTP.
"""
from __future__ import annotations

import contextvars
import io
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import aiohttp
from yarl import URL

from exporter.errors import NoDataError, NotPermittedError

log = logging.getLogger("kubebridge.upstream")
METRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
                  "text/plain;version=0.0.4;q=1,*/*;q=0.1")


class UpstreamError(Exception):
    """The upstream answered, but not with success."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url}: HTTP {status}")
        self.status = status


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class RedirectRefused(UpstreamError):
    """The upstream answered 3xx and the redirect may not be followed (`status` is the 3xx)."""

    def __init__(self, url: str, status: int, why: str) -> None:
        Exception.__init__(self, f"{url}: HTTP {status}, redirect refused ({why})")
        self.status = status


def redirect_target(url: str, status: int, location: str | None, origin: URL, follow: bool) -> URL:
    """Where a 3xx answer to `url` may be followed: the Location resolved against `url`, on the
    same scheme, host and port as `origin`. Raises RedirectRefused otherwise."""
    if not follow:
        raise RedirectRefused(url, status, "follow_redirects is off")
    if not location:
        raise RedirectRefused(url, status, "no Location")
    try:
        target = URL(url).join(URL(location))
    except ValueError:
        raise RedirectRefused(url, status, "invalid Location") from None
    if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
        raise RedirectRefused(url, status, f"to another scheme or host: {target.origin()}")
    return target


class BodyTooLarge(UpstreamError):
    """The body is over the source's cap: refused from its Content-Length before reading, or
    as soon as the (decompressed) bytes read pass the cap."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(url, 413)
        self.args = (f"{url}: body over the {limit}-byte cap",)
        self.limit = limit


DEFAULT_MAX_BODY = 24 << 20  # bytes; docs/performance.md says how this fits the memory limit
JSON_MAX_BODY = 8 << 20  # bytes: the default cap a JSON source declares (register(max_body=))
# The cap of the source being collected: the runner sets it in each source's task, so a shared
# upstream (the kubelet serves several sources) applies each source's own cap.
BODY_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("body_limit", default=None)


class TokenSource:
    """A bearer token file, re-read on change (checked at most every `recheck` seconds)."""

    def __init__(self, path: str | Path, recheck: float = 10.0) -> None:
        self.path = Path(path)
        self.recheck = recheck
        self._token = ""
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.reads = 0

    def token(self) -> str:
        """The current token ('' if none could ever be read)."""
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self.recheck:
            return self._token
        self._checked = now
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                token = self.path.read_text().strip()
                if token:
                    self._token, self._stamp = token, stamp
                    self.reads += 1
        except OSError as exc:
            log.warning("cannot read token file %s (%s); keeping the last good token",
                        self.path, exc.strerror)
        return self._token

    def invalidate(self) -> None:
        """Force a re-read on next use (the upstream refused the token: it may have rotated)."""
        self._stamp, self._checked = None, 0.0

    def headers(self) -> dict[str, str]:
        """The Authorization header, or nothing."""
        tok = self.token()
        return {"Authorization": f"Bearer {tok}"} if tok else {}


@dataclass(frozen=True)
class TLS:
    """TLS settings for one upstream."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False

    def context(self) -> ssl.SSLContext:
        """A client context: verification on unless explicitly skipped."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclass
class Response:
    """A successful upstream answer."""

    body: bytes
    content_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)  # X-Etcd-Index, X-Consul-Index, ...
    # request(split=True): the body as its lines (`body.split(b"\n")`), split while it streams
    # in so the whole bytes never exist; `body` is then b"". `size` and `blank` describe it.
    lines: list[bytes] | None = None
    size: int = 0
    blank: bool = False


class SplitBody(NamedTuple):
    """A body read as its lines (`body.split(b"\n")`), its size, and whether it was empty or
    only whitespace."""

    lines: list[bytes]
    size: int
    blank: bool


class Upstream:
    """One upstream base URL with its credentials."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *,
                 tls: TLS | None = None, token: TokenSource | None = None,
                 max_bytes: int = DEFAULT_MAX_BODY, compressed: bool = True,
                 follow_redirects: bool = False) -> None:
        self.session = session
        self.follow_redirects = follow_redirects
        # False: ask for identity encoding (a node-local kubelet: gunzipping 8 MB per scrape
        # costs this process more than reading it uncompressed over loopback or the node).
        self.compressed = compressed
        self.base_url = base_url.rstrip("/")
        self.origin = URL(self.base_url)
        self.tls = tls or TLS()
        self.token = token
        self.max_bytes = max_bytes
        self._ssl: ssl.SSLContext | None = None
        if self.base_url.startswith("https://"):
            self._ssl = self.tls.context()
            if self.tls.insecure_skip_verify:
                log.warning("TLS verification is OFF for %s (insecure_skip_verify)", self.base_url)

    def url(self, path: str) -> str:
        """Absolute URL of `path`."""
        return self.base_url + path

    async def request(self, path: str, *, method: str = "GET", accept: str = METRICS_ACCEPT,
                      json: object = None, ok_statuses: tuple[int, ...] = (),
                      split: bool = False) -> Response:
        """Fetch `path`. 404 -> NoDataError, 401/403 -> NotPermittedError, other non-2xx ->
        UpstreamError, unless listed in `ok_statuses` (then returned as is). `split`: the body
        comes as its lines (Response.lines)."""
        sent = self.token.token() if self.token is not None else ""
        try:
            return await self._request(path, method, accept, json, ok_statuses, sent, split)
        except NotPermittedError:
            if self.token is None:
                raise
            # A rotated token can be refused before our periodic re-read sees the new file:
            # re-read now, and retry once only if the token actually changed. Compare with the
            # token THIS request sent: concurrent requests are refused together, and the first
            # to get here has already re-read the file for the others.
            self.token.invalidate()
            fresh = self.token.token()
            if fresh == sent:
                raise
            return await self._request(path, method, accept, json, ok_statuses, fresh, split)

    async def _request(self, path: str, method: str, accept: str, json: object,
                       ok_statuses: tuple[int, ...], token: str, split: bool = False) -> Response:
        url = self.url(path)
        headers = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}
        if not self.compressed:
            headers["Accept-Encoding"] = "identity"
        kwargs: dict = {"headers": headers}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if self.tls.server_name:
            kwargs["server_hostname"] = self.tls.server_name
        if json is not None:
            kwargs["json"] = json
        status = 0
        for _ in range(MAX_REDIRECTS + 1):
            async with self.session.request(method, url, allow_redirects=False, **kwargs) as resp:
                status = resp.status
                if status in REDIRECTS and status not in ok_statuses:
                    target = redirect_target(url, resp.status, resp.headers.get("Location"),
                                             self.origin, self.follow_redirects)
                    if resp.status in (301, 302, 303) and method != "GET":
                        method = "GET"  # as every HTTP client does; 307/308 keep method and body
                        kwargs.pop("json", None)
                    url = str(target)
                    continue
                ok = resp.status in ok_statuses or 200 <= resp.status < 300
                if ok and split:
                    read = await self._read_lines(resp, url)
                    return Response(b"", resp.headers.get("Content-Type", ""), resp.status,
                                    resp.headers.copy(), read.lines, read.size, read.blank)
                body = await self._read(resp, url)
                if ok:
                    return Response(body, resp.headers.get("Content-Type", ""), resp.status,
                                    resp.headers.copy(), size=len(body))
                if resp.status == 404:
                    raise NoDataError(f"{url}: 404")
                if resp.status in (401, 403):
                    raise NotPermittedError(f"{url}: HTTP {resp.status}")
                raise UpstreamError(url, resp.status)
        raise RedirectRefused(url, status, f"more than {MAX_REDIRECTS} redirects")

    async def _chunks(self, resp: aiohttp.ClientResponse, url: str) -> AsyncIterator[bytes]:
        """The body's chunks, never more than the cap in all. A Content-Length over the cap is
        refused before reading (the connection is not reused). aiohttp inflates gzip in bounded
        steps as it is read, so the count is of decompressed bytes and a gzip bomb stops at the
        cap."""
        limit = self.limit()
        if resp.content_length is not None and resp.content_length > limit:
            resp.close()
            raise BodyTooLarge(url, limit)
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                resp.close()
                raise BodyTooLarge(url, limit)
            yield chunk

    async def _read(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        """The body (BytesIO grows in place and hands its buffer over without a copy)."""
        buf = io.BytesIO()
        async for chunk in self._chunks(resp, url):
            buf.write(chunk)
        return buf.getvalue()

    async def _read_lines(self, resp: aiohttp.ClientResponse, url: str) -> SplitBody:
        """The body split on newlines chunk by chunk: what is held at once is the lines so far
        and one chunk, never the body and its lines together."""
        lines: list[bytes] = []
        carry, size, blank = b"", 0, True
        async for chunk in self._chunks(resp, url):
            size += len(chunk)
            blank = blank and chunk.isspace()
            parts = (carry + chunk).split(b"\n")
            carry = parts.pop()
            lines.extend(parts)
        lines.append(carry)
        return SplitBody(lines, size, blank)

    def limit(self) -> int:
        """The body cap in force: the collecting source's, else this upstream's."""
        got = BODY_LIMIT.get()
        return self.max_bytes if got is None else got


def is_openmetrics(content_type: str) -> bool:
    """Whether a response's Content-Type is OpenMetrics."""
    return content_type.split(";", 1)[0].strip().lower() == "application/openmetrics-text"
