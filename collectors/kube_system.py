"""Cluster-wide pod health from the API server: "are the apiserver, scheduler, DNS up?"

A list+watch of the pods in `namespaces` (default kube-system; `*` for all) answers from one
place, without calling every node's kubelet: container states, restarts, why a container
is waiting (CrashLoopBackOff, ImagePullBackOff, ...) and why it last terminated, and pod
readiness. Pod series carry the same join as kubelet-sourced ones (label_*, workload,
workload_kind, node), computed from the pod objects themselves.

`container_waiting` has one series per container currently waiting, with value 1; when the
container stops waiting the series disappears. Waiting reasons are open-ended, so a 0
series per known reason would be a guess; a vanished series is marked stale by Prometheus
at the next scrape, which resolves an alert on it as promptly as a 0 would. Init containers
count in restarts, waiting and last_terminated (Init:CrashLoopBackOff), not in `containers`.
"""
from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable, Mapping, Sequence

from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import ConfigError, NoDataError
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.kube import client as kube
from exporter.transform import Result
from exporter.pods import pod_labels, pod_meta
from exporter.registry import Option, register

if TYPE_CHECKING:  # kubernetes-asyncio is imported by run(): see exporter/kube/__init__.py
    from exporter.kube.watch import Reflector

_P = f"{NAMESPACE}_kube_system"
POD = ("namespace", "pod")
CONTAINERS = Metric(f"{_P}_containers", "gauge", "Containers by state (running, waiting, terminated).",
                    ("namespace", "state", "workload", "workload_kind"))
RESTARTS = Metric(f"{_P}_container_restarts_total", "counter", "Container restarts (kubelet's restartCount).",
                  (*POD, "container"))
WAITING = Metric(f"{_P}_container_waiting", "gauge",
                 "1 while the container waits, by reason; absent otherwise.",
                 (*POD, "container", "reason"))
LAST_TERMINATED = Metric(f"{_P}_container_last_terminated", "gauge",
                         "1 for the reason and exit code of the container's previous termination.",
                         (*POD, "container", "reason", "exit_code"))
POD_READY = Metric(f"{_P}_pod_ready", "gauge",
                   "1 if the pod is Ready (pods that finished are left out).", POD)
STATES = ("running", "waiting", "terminated")


class PodStore:
    """(namespace, name) -> pod object; an `exporter.kube.watch` Handler."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict] = {}

    def replace(self, items: list[dict], initial: bool) -> None:
        self.pods = {_key(p): p for p in items}

    def apply(self, kind: str, obj: dict) -> None:
        if kind == "DELETED":
            self.pods.pop(_key(obj), None)
        elif kind in ("ADDED", "MODIFIED"):
            self.pods[_key(obj)] = obj


def _key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _check_namespaces(value: Any) -> str | None:
    return None if value else "must list at least one namespace (or `*`)"


OPTIONS = kube.options(namespaces=Option(("kube-system",), _check_namespaces,
                                         "Namespaces whose pods are watched; `*` for all."))


@register("kube_system", default_enabled=False, scope="cluster", options=OPTIONS)
class KubeSystemCollector:
    """Pod and container health of system namespaces, from the API server."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps, self.cfg = deps, cfg
        self.namespaces: tuple[str, ...] = tuple(cfg.options["namespaces"])
        if "*" in self.namespaces and len(self.namespaces) > 1:
            raise ConfigError(f"collectors.{cfg.name}.namespaces", "`*` cannot be combined with names")
        self.target = kube.KubeTarget.from_options(cfg.options)
        self.reflectors: list[tuple[Reflector, PodStore]] = []
        self.backoff, self.watch_timeout = (1.0, 30.0), 300.0
        self.stats: dict[str, float] = {}

    async def run(self) -> None:
        from kubernetes_asyncio import client

        from exporter.kube.watch import Reflector

        async with self.target.client() as api:
            v1 = client.CoreV1Api(api)
            kw: dict[str, Any] = {"backoff": self.backoff, "watch_timeout": self.watch_timeout}
            for ns in self.namespaces:
                store = PodStore()
                if ns == "*":
                    r = Reflector(v1.list_pod_for_all_namespaces, handler=store, what="pods", **kw)
                else:
                    r = Reflector(v1.list_namespaced_pod, ns, handler=store, what=f"pods in {ns}", **kw)
                self.reflectors.append((r, store))
            await asyncio.gather(*(r.run() for r, _ in self.reflectors))

    async def collect(self, budget: float) -> Sequence[Family]:
        if not self.reflectors:
            raise NoDataError("pod watch not started yet")
        for r, _ in self.reflectors:  # a failure (403) first: it says more than "not listed yet"
            if r.error is not None:
                raise r.error
        for r, _ in self.reflectors:
            r.raise_if_unhealthy()
        return self._families(p for _, s in self.reflectors for p in s.pods.values()).families

    def process(self, *payloads: bytes) -> Result:
        """Offline: PodList documents (e.g. `kubectl get pods -A -o json`)."""
        pods = [p for payload in payloads for p in json.loads(payload).get("items") or []]
        wanted = None if "*" in self.namespaces else set(self.namespaces)
        return self._families(p for p in pods if wanted is None or _key(p)[0] in wanted)

    def _families(self, pods: Iterable[Mapping[str, Any]]) -> Result:
        b = Builder([CONTAINERS, RESTARTS, WAITING, LAST_TERMINATED, POD_READY],
                    self.deps.labels(self.cfg, node=False))
        states: dict[tuple[str, str, str], dict[str, int]] = {}
        policy = self.deps.config.label_policy
        for pod in sorted(pods, key=_key):
            meta = pod_meta(pod)
            join = {**dict(pod_labels(meta.labels, policy)), "workload": meta.workload,
                    "workload_kind": meta.workload_kind, "node": meta.node}
            base = {"namespace": meta.namespace, "pod": meta.name}
            status = pod.get("status") or {}
            group = states.setdefault((meta.namespace, meta.workload, meta.workload_kind),
                                      dict.fromkeys(STATES, 0))
            for init, cs in _statuses(status):
                state = next(iter(cs.get("state") or {}), "waiting")
                if not init and state in group:
                    group[state] += 1
                labels = {**base, "container": cs.get("name", "")}
                b.add(RESTARTS, cs.get("restartCount") or 0, {**labels, **join})
                if state == "waiting":
                    reason = (cs.get("state") or {}).get("waiting", {}).get("reason") or "Unknown"
                    b.add(WAITING, 1, {**labels, "reason": reason, **join})
                last = (cs.get("lastState") or {}).get("terminated")
                if last:
                    b.add(LAST_TERMINATED, 1, {**labels, "reason": last.get("reason") or "Unknown",
                                               "exit_code": str(last.get("exitCode", "")), **join})
            if status.get("phase") not in ("Succeeded", "Failed"):
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
                b.add(POD_READY, 1 if ready else 0, {**base, **join})
        for (ns, workload, kind), counts in sorted(states.items()):
            for state, n in counts.items():
                b.add(CONTAINERS, n, {"namespace": ns, "state": state, "workload": workload,
                                      "workload_kind": kind})
        res = b.result()
        self.stats = {"series_out": res.series_out}
        return res


def _statuses(status: Mapping[str, Any]) -> list[tuple[bool, Mapping[str, Any]]]:
    return ([(True, cs) for cs in status.get("initContainerStatuses") or []]
            + [(False, cs) for cs in status.get("containerStatuses") or []])
