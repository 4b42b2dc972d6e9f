"""PodIndex: the pods of this node, kept fresh from the kubelet's `/pods`.

Refreshed on a bounded interval, and early (but at most once per `min_gap`) when a series names a
pod the index does not know. Consumers never poll it per series: they ask which pods changed
since the generation they last saw, and evict only what those pods touched.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from exporter.errors import describe
from exporter.failures import FailureLog, classify
from exporter.pods import LabelPolicy, PodMeta, pod_labels

log = logging.getLogger("kubebridge.podindex")
_LOG_LIMIT = 4096  # changes remembered; a consumer further behind just clears its cache


class PodIndex:
    """(namespace, pod) -> PodMeta, with a change log for cache invalidation."""

    def __init__(self, policy: LabelPolicy | None = None) -> None:
        self.policy = policy or LabelPolicy()
        self._pods: dict[tuple[str, str], PodMeta] = {}
        self._join: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        self._log: list[tuple[int, tuple[str, str]]] = []
        self.generation = 0
        self.synced = asyncio.Event()
        # Set once the first refresh succeeded OR was refused (403): either way the agent can
        # serve (a refused /pods means series without pod labels, reported, not a stalled
        # rollout). Connection errors do not set it: the kubelet may just not be up yet.
        self.settled = asyncio.Event()
        self.status = ""  # "" (not tried yet), "ok", "not_permitted", "down"
        self.detail = ""  # the last error, one line
        self.last_sync = 0.0
        self.syncs = 0
        self.errors = 0
        self.failures: dict[str, int] = {}  # failed refreshes by reason (failures.REASONS)
        self.up = False  # whether the last refresh succeeded
        self._logger = FailureLog(log, "pod index")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the one `run` refreshes in

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, namespace: str, name: str) -> PodMeta | None:
        """The pod, or None."""
        return self._pods.get((namespace, name))

    def pods(self) -> list[PodMeta]:
        """All pods, sorted by key (stable output)."""
        return [self._pods[k] for k in sorted(self._pods)]

    def join_labels(self, meta: PodMeta) -> tuple[tuple[str, str], ...]:
        """What a series of this pod gains (cluster is added by the caller), remembered."""
        pairs = self._join.get(meta.key)
        if pairs is None:
            pairs = self._join[meta.key] = tuple(self.join_pairs(meta))
        return pairs

    def join_pairs(self, meta: PodMeta) -> list[tuple[str, str]]:
        """join_labels, made afresh: for a caller that keeps its own form of them (the
        transformer formats them once per pod), so that they are not kept twice (a tuple per
        label for the garbage collector to count, on every pod of a node)."""
        pairs = pod_labels(meta.labels, self.policy)
        pairs += (("workload", meta.workload), ("workload_kind", meta.workload_kind))
        if meta.node:
            pairs.append(("node", meta.node))
        return pairs

    def replace(self, pods: Mapping[tuple[str, str], PodMeta]) -> int:
        """Install a fresh listing; returns how many pods changed (added, removed, altered)."""
        old = self._pods
        changed = [k for k in old.keys() | pods.keys() if old.get(k) != pods.get(k)]
        self._pods = dict(pods)
        if changed:
            self.generation += 1
            for k in changed:
                self._join.pop(k, None)
                self._log.append((self.generation, k))
            del self._log[:-_LOG_LIMIT]
        self.last_sync = time.time()
        self.syncs += 1
        self.status, self.detail = "ok", ""
        self.synced.set()
        self.settled.set()
        return len(changed)

    def changed_since(self, generation: int) -> set[tuple[str, str]] | None:
        """Pods changed after `generation`; None when the log no longer reaches back that far."""
        if generation == self.generation:
            return set()
        if not self._log or self._log[0][0] > generation + 1:
            return None
        return {k for g, k in self._log if g > generation}

    def request_refresh(self) -> None:
        """A series named an unknown pod: refresh early (rate-limited by `run`). Safe to call
        from the worker threads large payloads are transformed in."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._wake.set()
        elif not self._wake.is_set():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, fetch: Callable[[], Awaitable[dict[tuple[str, str], PodMeta]]],
                  interval: float = 60.0, min_gap: float = 5.0, timeout: float = 30.0) -> None:
        """Refresh forever: every `interval`, or sooner when asked, never twice within `min_gap`.
        A refresh that fails (or takes over `timeout` seconds) keeps the last good listing,
        counts the failure by reason and retries with backoff."""
        backoff = 1.0
        min_gap = min(min_gap, interval)
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(timeout):
                    pods = await fetch()
                self.replace(pods)
                self.up = True
                self._logger.ok()
                backoff = 1.0
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the index keeps its last good listing
                delay, backoff = self.failed(exc, backoff, interval)
            self._wake.clear()
            await asyncio.sleep(min(min_gap, delay))
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, delay - min_gap))
            except TimeoutError:
                pass

    def failed(self, exc: BaseException, backoff: float = 1.0, interval: float = 60.0) -> tuple[float, float]:
        """A refresh failed; the last good listing stays. Counted by reason and logged on one line
        (deduplicated). Returns (delay, next backoff): a refusal (403) is retried at the normal
        interval and settles readiness (the agent serves, without pod labels: reported, not a
        stalled rollout); other errors back off."""
        reason = classify(exc)
        self.errors += 1
        self.up = False
        self.failures[reason] = self.failures.get(reason, 0) + 1
        detail = describe(exc)
        if reason == "not_permitted":
            if self.status != "not_permitted":
                log.warning("the kubelet refused the pod list (%s): series keep their own labels but "
                            "get no pod labels, workload or node. Grant nodes/pods (Kubernetes >= 1.33) "
                            "or nodes/proxy (before 1.33) to the service account.", detail)
            self.status, self.detail = "not_permitted", detail
            self.settled.set()
            return interval, backoff
        self._logger.failed(reason, exc)
        self.status, self.detail = "down", detail
        return backoff, min(backoff * 2, interval)
