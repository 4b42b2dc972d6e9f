"""Encoded `/metrics` bodies shared by concurrent scrapes of the same state.

Contract: scrapes that collected the same outcomes of every source (they joined the same
single-flight runs: `runner.Outcome.seq`) and want the same format get the same bytes: merged
and encoded once, and gzipped once. Only the `keep` most recent states are held (a gzipped
state drops its uncompressed body), so what the cache holds is bounded by a few bodies,
whatever the number of concurrent scrapes.
"""
from __future__ import annotations

import asyncio
import functools
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
    body: bytes | None  # None once gzipped (rebuilt if asked for again uncompressed)
    gzip: asyncio.Future[bytes] | None = None


class SharedBodies:
    """The recent encoded bodies (see the module's contract). `encodes` and `gzips` count the
    work actually done."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._entries: OrderedDict[BodyKey, _Entry] = OrderedDict()
        self.encodes = 0
        self.gzips = 0

    @staticmethod
    def key(outcome_seqs: Sequence[int], openmetrics: bool) -> BodyKey:
        """The key of a state."""
        return BodyKey(tuple(outcome_seqs), openmetrics)

    async def get(self, key: BodyKey, build: Callable[[], bytes], compress: bool) -> bytes:
        """The body of `key` (gzipped if `compress`), built by `build` if not held. The build
        is synchronous, so a state is never built twice at once; its gzip runs once, shared."""
        entry = self._entry(key, build, compress)
        if not compress:
            assert entry.body is not None
            return entry.body
        if entry.gzip is None:
            assert entry.body is not None
            self.gzips += 1
            entry.gzip = asyncio.ensure_future(_gzip(entry.body))
            entry.gzip.add_done_callback(functools.partial(_drop_body, entry))
        # shield: a scrape whose client went away does not cancel the others' gzip.
        return await asyncio.shield(entry.gzip)

    def _entry(self, key: BodyKey, build: Callable[[], bytes], compress: bool) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(build())
            self.encodes += 1
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)
        elif entry.body is None and (not compress or entry.gzip is None):
            entry.body = build()  # (uncompressed again, after its gzip dropped it)
            self.encodes += 1
        self._entries.move_to_end(key)
        return entry


def _drop_body(entry: _Entry, _: asyncio.Future[bytes]) -> None:
    entry.body = None


async def _gzip(body: bytes) -> bytes:
    if len(body) <= _GZIP_INLINE:
        return gzip_body(body)
    return await asyncio.to_thread(gzip_body, body)
