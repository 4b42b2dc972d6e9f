"""Encoded `/metrics` bodies shared by concurrent scrapes of the same state.

Contract: scrapes that collected the same outcomes of every source (they joined the same
single-flight runs: `runner.Outcome.seq`) and want the same format get the same bytes object,
merged and encoded once; gzip is computed once per distinct body, and waiters for it share
it. Only the `keep` most recent states are held, so memory is bounded by `keep` bodies and
their gzips, whatever the number of concurrent scrapes.
"""
from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_GZIP_INLINE = 64 << 10  # bytes: smaller bodies are compressed on the event loop


def gzip_body(body: bytes) -> bytes:
    """A gzip member of the body, at compression level 1 (far cheaper than the default level
    for somewhat larger bytes: figures in docs/performance.md)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(body) + z.flush()


@dataclass(frozen=True)
class BodyKey:
    """One state (the outcome of each source) in one format."""

    outcomes: tuple[int, ...]
    openmetrics: bool


@dataclass
class _Entry:
    body: bytes
    gzip: asyncio.Future[bytes] | None = None


class SharedBodies:
    """The recent encoded bodies (see the module's contract). `encodes` and `gzips` count the
    work actually done."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._entries: OrderedDict[BodyKey, _Entry] = OrderedDict()
        self.encodes = 0
        self.gzips = 0

    @staticmethod
    def key(outcome_seqs: Sequence[int], openmetrics: bool) -> BodyKey:
        """The key of a state."""
        return BodyKey(tuple(outcome_seqs), openmetrics)

    def body(self, key: BodyKey, build: Callable[[], bytes]) -> bytes:
        """The body of `key`, built by `build` (synchronously, so never twice) if not held."""
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(build())
            self.encodes += 1
            self._entries[key] = entry
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry.body

    async def gzipped(self, key: BodyKey, body: bytes) -> bytes:
        """The gzip of `body` (the body of `key`), computed once while the key is held; large
        bodies are compressed in a thread (zlib releases the GIL)."""
        entry = self._entries.get(key)
        if entry is None or entry.body is not body:  # evicted meanwhile: not shared
            self.gzips += 1
            return await _gzip(body)
        if entry.gzip is None:
            self.gzips += 1
            entry.gzip = asyncio.ensure_future(_gzip(body))
        # shield: a scrape whose client went away does not cancel the others' gzip.
        return await asyncio.shield(entry.gzip)


async def _gzip(body: bytes) -> bytes:
    if len(body) <= _GZIP_INLINE:
        return gzip_body(body)
    return await asyncio.to_thread(gzip_body, body)
