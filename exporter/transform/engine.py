"""Transformer: one upstream's payloads -> joined, relabeled families, scrape after scrape.

A transform is: the hook's `prepare` and the pod index's changes evict stale rewrites; a
payload shaped like the last clean scan is replayed (plan.replay); otherwise it is scanned
(scan.Scanner), which leaves a plan when it met nothing irregular. Its parts:
- LabelRewriter (rewrite.py): one label set's rewrite, cached per label text;
- Scanner (scan.py): lines -> families, predicted by position from the last scan;
- Plan (plan.py): the replay.

A Transformer is not thread-safe and refuses to run twice at once (RuntimeError): its owner
serialises transforms (see exporter.passthrough).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from exporter import relabel
from exporter.podindex import PodIndex
from exporter.transform import plan as replay
from exporter.transform.hooks import NoHook, SeriesHook
from exporter.labels import CommonLabels
from exporter.transform.result import Result
from exporter.transform.rewrite import LabelRewriter
from exporter.transform.scan import Scanner

_CACHE_SLACK = 1024  # rewrites cached beyond twice the payload's lines mean series churn: clear


@dataclass(frozen=True)
class Options:
    """What a transformer adds and keeps."""

    collector: str
    cluster: str = ""
    rules: tuple[relabel.Rule, ...] = ()
    keep_timestamps: bool = False
    pod_labels: bool = True  # False: the upstream's series are not pod-scoped (etcd, apiserver)
    node: str = ""           # this node's name, for series that name no pod (node agent)

    @property
    def labels(self) -> CommonLabels:
        """The common labels and rules every series of this transformer gets."""
        return CommonLabels(self.collector, self.cluster, self.node, self.rules)


class Payload:
    """An upstream body handed to one transform, which takes it: from then on the transform
    holds the only reference. Given as bytes, or as the lines an upstream split it into while
    it streamed in (upstream.Response.lines), so that the bytes and their lines, each about the
    body's size, are never held together."""

    def __init__(self, body: bytes = b"", lines: list[bytes] | None = None, size: int | None = None) -> None:
        self._body, self._lines = body, lines
        self.size = len(body) if size is None else size

    def take(self) -> list[bytes]:
        """The body's lines (`body.split(b"\n")`), once."""
        body, lines = self._body, self._lines
        self._body, self._lines = b"", None
        return lines if lines is not None else body.split(b"\n")


class Transformer:
    """Turns one upstream's payloads into families, keeping its caches between scrapes."""

    def __init__(self, options: Options, index: PodIndex | None = None,
                 hook: SeriesHook | None = None) -> None:
        self.options = options
        self.index = index if options.pod_labels else None
        self.hook: SeriesHook = hook or NoHook()
        self.rewriter = LabelRewriter(options.labels, self.index, self.hook, options.pod_labels)
        self.scanner = Scanner(self.rewriter, self.hook, options.keep_timestamps)
        self.plan: replay.Plan | None = None
        self._generation = self.index.generation if self.index is not None else 0
        self._busy = threading.Lock()

    def transform(self, payload: bytes | Payload, openmetrics: bool = False) -> Result:
        """Parse and rewrite one payload. Raises ParseError for an OpenMetrics payload that
        does not end with `# EOF`."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("Transformer.transform is already running (one at a time)")
        try:
            return self._transform(payload, openmetrics)
        finally:
            self._busy.release()

    def _transform(self, payload: bytes | Payload, openmetrics: bool) -> Result:
        if isinstance(payload, Payload):
            lines, size = payload.take(), payload.size
        else:
            lines, size = payload.split(b"\n"), len(payload)
        self._evict(lines)
        res = None if openmetrics else self._replay(size, lines)
        if res is None:
            res = Result(families=[], series_in=len(lines))
            if openmetrics:
                self.scanner.openmetrics(lines, res)
            else:
                self.plan = self.scanner.text(lines, res)
        if res.join_misses and self.index is not None:
            self.index.request_refresh()
        if self.rewriter.size() > 2 * res.series_in + _CACHE_SLACK:
            self.rewriter.clear()  # label sets of series long gone (the index evicts pods' own)
            self.scanner.forget()
        return res

    def _evict(self, lines: list[bytes]) -> None:
        """Forget what the hook or the pod index says changed since the last transform."""
        changes = self.hook.prepare(lines, self.index)
        pods = set(changes.pods)
        everything = changes.everything
        if self.index is not None and self.index.generation != self._generation:
            changed = self.index.changed_since(self._generation)
            self._generation = self.index.generation
            if changed is None:
                everything = True
            else:
                pods |= changed
        if everything:
            self.rewriter.clear()
        elif not (pods and self.rewriter.evict(pods)):
            return
        self.scanner.forget()
        self.plan = None

    def _replay(self, size: int, lines: list[bytes]) -> Result | None:
        """The fast path: the result, if the payload had the last clean scan's shape."""
        if self.plan is None:
            return None
        families = replay.replay(self.plan, size, lines)
        if families is None:
            return None
        return replace(self.plan.counts, families=families, errors=list(self.plan.counts.errors))
