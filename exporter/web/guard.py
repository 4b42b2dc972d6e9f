"""Per-request part of the web config: rate limit, basic auth (bcrypt), response headers.

Contract: the web config is consulted per request (changes apply without restart). Every path
needs the credentials except the probe paths (`/healthz`, `/readyz`: kubelet probes cannot send
them and they reveal nothing). A wrong or missing password is 401 with `WWW-Authenticate:
Basic`; an unknown user costs the same bcrypt comparison as a known one. bcrypt runs off the
event loop, one comparison at a time (a flood of guesses cannot take every core), and its
verdicts are cached per (user, hash, password) digest so a scraping Prometheus pays it once.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.web.config import RateLimit
from exporter.web.tls import WebConfigSource

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# A valid hash of no password anyone knows: unknown users are compared against it.
_DUMMY = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_CACHE_MAX = 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def basic_credentials(header: str) -> tuple[str, str] | None:
    """`Basic base64(user:password)` -> (user, password); None if absent or malformed."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class BasicAuth:
    """bcrypt verification with a bounded verdict cache."""

    def __init__(self) -> None:
        self._cache: dict[bytes, bool] = {}
        self._lock = asyncio.Lock()
        self.comparisons = 0

    async def check(self, header: str, users: Mapping[str, bytes]) -> bool:
        """Whether the Authorization header names a configured user with its password."""
        creds = basic_credentials(header)
        if creds is None:
            return False
        user, password = creds
        hashed = users.get(user)
        known = hashed is not None
        hashed = hashed if hashed is not None else _DUMMY
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        ok = self._cache.get(key)
        if ok is None:
            async with self._lock:
                self.comparisons += 1
                ok = await asyncio.to_thread(_checkpw, password.encode(), hashed)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = ok
        return ok and known


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # (validated at load; a hash bcrypt still refuses never matches)
        return False


class TokenBucket:
    """exporter-toolkit's `rate_limit`: one token per `interval`, at most `burst` saved."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = time.monotonic()

    def allow(self) -> bool:
        """Take a token if there is one."""
        now = time.monotonic()
        self._tokens = min(float(self.limit.burst), self._tokens + (now - self._at) / self.limit.interval)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def middleware(source: WebConfigSource) -> Middleware:
    """The aiohttp middleware enforcing `source`'s current web config."""
    auth = BasicAuth()
    bucket: list[TokenBucket] = []  # rebuilt when rate_limit changes

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = source.current()
        if cfg.rate_limit.interval > 0:
            if not bucket or bucket[0].limit != cfg.rate_limit:
                bucket[:] = [TokenBucket(cfg.rate_limit)]
            if not bucket[0].allow():
                return _with(web.Response(status=429, text="Too Many Requests\n"), cfg.headers)
        elif bucket:
            bucket.clear()
        if cfg.users and request.path not in PROBE_PATHS and not await auth.check(
                request.headers.get("Authorization", ""), cfg.users):
            resp = web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": "Basic"})
            return _with(resp, cfg.headers)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(cfg.headers)
            raise
        return _with(response, cfg.headers)

    return guard


def _with(resp: web.StreamResponse, headers: Mapping[str, str]) -> web.StreamResponse:
    if not resp.prepared:
        resp.headers.update(headers)
    return resp
