"""Encoded `/metrics` bodies shared by concurrent scrapes.

Contract: a scrape is answered with a body built from outcomes at least as recent, source by
source, as the ones it collected itself (`runner.Outcome.seq` grows with every run). So one
build can serve every scrape waiting for it. Per lane (format x gzip):
- at most one body is being built, off the event loop, and at most one more is queued;
- a scrape whose outcomes the running build already covers waits for it; any other scrape
  joins the queued build, which starts when the running one ends and takes, per source, the
  most recent outcome among its scrapes;
- the last gzipped body is kept for later scrapes that it covers (an uncompressed one is not
  kept once served: clients that refuse gzip are rare, and its text is the largest thing here).

So the bodies in memory are bounded by the lanes, whatever the number of concurrent scrapes or
the rate at which sources change; a scrape waits at most for the running build and its own.
A gzip body is compressed while it is encoded, family by family: its text never exists whole.
"""
from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from exporter import malloc
from exporter.expfmt import Family, encode_openmetrics, encode_text, openmetrics_chunks, text_chunks
from exporter.runner import Outcome

Seqs = Mapping[str, int]  # source name -> the seq of its outcome


def encode_body(families: Sequence[Family], openmetrics: bool, compress: bool) -> bytes:
    """The exposition of `families`, gzipped if `compress` (level 1: far cheaper than the
    default for somewhat larger bytes, figures in docs/performance.md)."""
    if not compress:
        return encode_openmetrics(families) if openmetrics else encode_text(families)
    chunks = openmetrics_chunks(families) if openmetrics else text_chunks(families)
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(chunk) for chunk in chunks]
    out.append(z.flush())
    return b"".join(out)


@dataclass(frozen=True)
class Lane:
    """What a scrape asked for: the format and whether gzipped."""

    openmetrics: bool
    gzip: bool


@dataclass
class _Build:
    """One body: the outcomes it is built from (until it starts; then only their seqs) and the
    future its scrapes wait on."""

    body: asyncio.Future[bytes]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def absorb(self, outcomes: Sequence[Outcome]) -> None:
        """Take each source's outcome if it is more recent than the one held."""
        for o in outcomes:
            have = self.seqs.get(o.name)
            if have is None or o.seq > have:
                self.outcomes[o.name] = o
                self.seqs[o.name] = o.seq


@dataclass
class _LaneState:
    running: _Build | None = None
    queued: _Build | None = None
    kept: tuple[dict[str, int], bytes] | None = None  # the last gzipped body and its seqs


def _covers(built: Seqs, wanted: Seqs) -> bool:
    return all(built.get(name, -1) >= seq for name, seq in wanted.items())


FamiliesOf = Callable[[Sequence[Outcome]], list[Family]]
Encoder = Callable[[Sequence[Family], bool, bool], bytes]


class SharedBodies:
    """The bodies being built and the last ones (see the module's contract). `families` merges
    outcomes into the families of a body, on the event loop; `encode` runs in a worker thread.
    `encodes` and `gzips` count the builds actually done."""

    def __init__(self, families: FamiliesOf, encode: Encoder = encode_body) -> None:
        self._families = families
        self._encode = encode
        self._lanes: dict[Lane, _LaneState] = {}
        self.encodes = 0
        self.gzips = 0

    async def get(self, outcomes: Sequence[Outcome], openmetrics: bool, compress: bool) -> bytes:
        """A body for a scrape that collected `outcomes`."""
        lane = Lane(openmetrics, compress)
        state = self._lanes.setdefault(lane, _LaneState())
        wanted = {o.name: o.seq for o in outcomes}
        if state.kept is not None and _covers(state.kept[0], wanted):
            return state.kept[1]
        build = state.running
        if build is None or not _covers(build.seqs, wanted):
            if state.running is None:
                build = state.running = _Build(asyncio.get_running_loop().create_future())
                build.absorb(outcomes)
                self._start(lane, state)
            else:
                build = state.queued = state.queued or _Build(asyncio.get_running_loop().create_future())
                build.absorb(outcomes)
        del outcomes  # (a queued build holds the ones it needs)
        # shield: a scrape whose client went away does not cancel the others' body.
        return await asyncio.shield(build.body)

    def _start(self, lane: Lane, state: _LaneState) -> None:
        build = state.running
        assert build is not None
        outcomes, build.outcomes = list(build.outcomes.values()), {}
        self.encodes += 1
        self.gzips += lane.gzip
        try:
            families = self._families(outcomes)
        except Exception as exc:  # (a bug: every waiting scrape gets the error, not a hang)
            self._finished(lane, state, build, None, exc)
            return
        del outcomes
        task = asyncio.ensure_future(asyncio.to_thread(self._encode, families, lane.openmetrics, lane.gzip))
        task.add_done_callback(functools.partial(self._encoded, lane, state, build))

    def _encoded(self, lane: Lane, state: _LaneState, build: _Build, task: asyncio.Future[bytes]) -> None:
        if task.cancelled():  # (the loop is shutting down)
            build.body.cancel()
            self._finished(lane, state, build, None, None)
        elif (exc := task.exception()) is not None:
            self._finished(lane, state, build, None, exc)
        else:
            self._finished(lane, state, build, task.result(), None)

    def _finished(self, lane: Lane, state: _LaneState, build: _Build, body: bytes | None,
                  exc: BaseException | None) -> None:
        if body is not None:
            build.body.set_result(body)
            if lane.gzip:
                state.kept = (build.seqs, body)
        elif exc is not None:
            build.body.set_exception(exc)
            build.body.add_done_callback(_retrieve)
        state.running, state.queued = state.queued, None
        if state.running is not None:
            self._start(lane, state)
        else:  # (the families of the scrape just served are gone: their memory back to the system)
            asyncio.get_running_loop().run_in_executor(None, malloc.trim)


def _retrieve(done: asyncio.Future[bytes]) -> None:
    done.exception()  # (seen: the scrapes that waited reported it; none may be left)
