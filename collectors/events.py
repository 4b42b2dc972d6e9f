"""Kubernetes events as counters: list+watch of core/v1 events from the API server.

Events vanish after an hour (kubernetes/kubernetes#52521) and are not alertable; counters
are. The listed history is not counted: counting starts at the list's resourceVersion, and
every event UID's `count` is remembered so a reconnect or a relist after 410 Gone never
counts twice (see `_events`). The involved object is resolved to its workload (pods through
a pod list+watch of the same API server), reasons outside a curated allowlist per kind
count as "Other", and nothing is labelled per object name or message.

Run it once per cluster (a Deployment): every replica counts every event. With several
replicas set `leader_election: true`; only the holder of the Lease `kubebridge-events` (in
the pod's namespace) counts, and another takes over after the lease duration if it dies.
Events in the gap between a leader's death and the takeover are not counted.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import TYPE_CHECKING, Any
from collections.abc import Sequence

from collectors._events import DEFAULT_REASONS, EventCounter, PodOwners, Rules, check_reasons
from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.kube import client as kube
from exporter.transform import Result
from exporter.registry import Option, register

if TYPE_CHECKING:  # kubernetes-asyncio is imported by run(): see exporter/kube/__init__.py
    from kubernetes_asyncio import client

    from exporter.kube.leader import LeaseElector
    from exporter.kube.watch import Reflector

EVENTS = Metric(f"{NAMESPACE}_kube_events_total", "counter",
                "Kubernetes events seen since this instance started counting (repeats included).",
                ("namespace", "involved_kind", "reason", "type", "workload", "workload_kind"))
LAST_SEEN = Metric(f"{NAMESPACE}_kube_event_last_seen_timestamp_seconds", "gauge",
                   "When an event of this reason last happened for the workload.",
                   ("namespace", "workload", "workload_kind", "reason"))
LEADER = Metric(f"{NAMESPACE}_events_leader", "gauge",
                "1 if this instance counts events (it holds the lease, or election is off).")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be positive"


OPTIONS = kube.options(
    reasons=Option({}, check_reasons, "Counted reasons per involved kind, overriding the built-in "
                   f"table per kind ({', '.join(DEFAULT_REASONS)}); `*` allows every reason, a kind "
                   "`*` applies to unlisted kinds. Other reasons count as reason=\"Other\"."),
    resolve_pods=Option(True, help="Watch pods cluster-wide to resolve pod events to workloads "
                                   "(else guess from the pod name)."),
    leader_election=Option(False, help="Count only while holding the Lease (several replicas)."),
    lease_name=Option("kubebridge-events", help="Lease name (namespace: pod_namespace)."),
    identity=Option("", help="Lease holder identity (default: the hostname, i.e. the pod name)."),
    lease_duration=Option(15.0, _positive, "Seconds a lease is valid without renewal."),
    lease_renew_deadline=Option(10.0, _positive, "Seconds a leader keeps trying to renew."),
    lease_retry_period=Option(2.0, _positive, "Seconds between lease attempts."),
)


@register("events", default_enabled=False, scope="cluster", options=OPTIONS)
class EventsCollector:
    """Kubernetes events counted by namespace, kind, reason, type and workload."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps, self.cfg, self.opt = deps, cfg, cfg.options
        self.target = kube.KubeTarget.from_options(self.opt)
        self.pods = PodOwners()
        self.counter = EventCounter(Rules(self.opt["reasons"]), self._resolve)
        self.leader = not self.opt["leader_election"]
        self.elector: LeaseElector | None = None
        self.reflectors: list[Reflector] = []
        self.stats: dict[str, float] = {}
        self.backoff = (1.0, 30.0)
        self.watch_timeout = 300.0

    def _resolve(self, namespace: str, pod: str) -> tuple[str, str] | None:
        found = self.pods.get(namespace, pod)
        if found is None and self.deps.index is not None:  # offline: `transform --pods`
            meta = self.deps.index.get(namespace, pod)
            found = (meta.workload, meta.workload_kind) if meta else None
        return found

    async def run(self) -> None:
        """Count while leader (always, without election)."""
        from exporter.kube.leader import LeaseElector

        async with self.target.client() as api:
            if not self.opt["leader_election"]:
                await self._count(api)
                return
            o = self.opt
            self.elector = LeaseElector(
                api, self.deps.config.pod_namespace or "default", o["lease_name"],
                o["identity"] or socket.gethostname(), lease_duration=o["lease_duration"],
                renew_deadline=o["lease_renew_deadline"], retry_period=o["lease_retry_period"])
            task: asyncio.Task | None = None
            try:
                async for leading in self.elector.changes():
                    self.leader = leading
                    if leading:
                        task = asyncio.create_task(self._count(api))
                    elif task is not None:
                        await _cancel(task)
                        task = None
            finally:
                if task is not None:
                    await _cancel(task)

    async def _count(self, api: client.ApiClient) -> None:
        """One leadership term: a fresh list (history, not counted) and watch."""
        from kubernetes_asyncio import client

        from exporter.kube.watch import Reflector

        v1 = client.CoreV1Api(api)
        kw: dict[str, Any] = {"backoff": self.backoff, "watch_timeout": self.watch_timeout}
        events = Reflector(v1.list_event_for_all_namespaces, handler=self.counter, what="events", **kw)
        self.reflectors = [events]
        tasks = []
        try:
            if self.opt["resolve_pods"]:
                pods = Reflector(v1.list_pod_for_all_namespaces, handler=self.pods, what="pods", **kw)
                self.reflectors.append(pods)
                tasks.append(asyncio.create_task(pods.run()))
                # Resolve from the start if the pods list answers soon; never block on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pods.synced.wait(), 10.0)
            tasks.append(asyncio.create_task(events.run()))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                await _cancel(t)

    async def collect(self, budget: float) -> Sequence[Family]:
        if self.elector is not None and self.elector.error is not None and not self.leader:
            raise _framework_error(self.elector.error)
        if self.leader:
            for r in self.reflectors[:1]:  # the pod watch only degrades resolution
                r.raise_if_unhealthy()
        return self._families().families

    def process(self, *payloads: bytes) -> Result:
        """Offline: EventLists (or watch streams, one JSON event per line) counted as if each
        event arrived on the watch; a PodList among them resolves pod events."""
        docs = [doc for p in payloads for doc in _documents(p)]
        for doc in docs:
            if doc.get("kind") == "PodList":
                self.pods.replace(doc.get("items") or [], True)
        for doc in docs:
            if "type" in doc and "object" in doc:
                self.counter.apply(doc["type"], doc["object"])
            elif doc.get("kind") in ("EventList", "Event"):
                for ev in doc.get("items") or [doc]:
                    self.counter.apply("ADDED", ev)
        return self._families()

    def _families(self) -> Result:
        b = Builder([EVENTS, LAST_SEEN, LEADER], self.deps.labels(self.cfg, node=False))
        for labels, n in sorted(self.counter.totals.items()):
            b.add(EVENTS, n, dict(zip(EVENTS.labels, labels)))
        for key, ts in sorted(self.counter.last_seen.items()):
            b.add(LAST_SEEN, ts, dict(zip(LAST_SEEN.labels, key)))
        b.add(LEADER, 1.0 if self.leader else 0.0)
        res = b.result()
        self.stats = {"series_out": res.series_out}
        return res


def _documents(payload: bytes) -> list[dict]:
    """One JSON document, or a watch stream (one JSON event per line)."""
    try:
        return [json.loads(payload)]
    except ValueError:
        return [json.loads(line) for line in payload.splitlines() if line.strip()]


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _framework_error(exc: Exception) -> Exception:
    from kubernetes_asyncio.client.exceptions import ApiException  # loaded: the lease raised it

    return kube.translate(exc, "lease") if isinstance(exc, ApiException) else exc
