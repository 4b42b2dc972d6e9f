"""Helpers of the `events` collector (not a collector): the reason allowlist, workload
resolution of an event's involved object, and the de-duplicating counter.

Events are counted, never labelled by object name or message (naive per-object counters
explode cardinality, opsgenie/kubernetes-event-exporter#1). Reasons outside a curated
allowlist per involved kind (the approach of DataDog's events_common.go) count as "Other".
The apiserver folds repeats of an event into one object whose `count` (or `series.count`)
grows; each event UID's last count is remembered so only growth is counted, whether it
arrives on the watch or in a relist after 410 Gone.
"""
from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from collections.abc import Callable, Mapping

from exporter.pods import pod_meta

OTHER = "Other"
DEFAULT_REASONS: dict[str, tuple[str, ...]] = {
    "Pod": ("BackOff", "Failed", "Unhealthy", "FailedScheduling", "FailedMount", "FailedAttachVolume",
            "OOMKilling", "Killing", "Pulled", "Pulling", "Created", "Started", "Scheduled", "Evicted",
            "Preempting", "NodeNotReady", "FailedCreatePodSandBox", "FailedKillPod", "ProbeWarning",
            "FailedPreStopHook", "FailedPostStartHook", "ExceededGracePeriod", "NetworkNotReady"),
    "Node": ("NodeNotReady", "NodeReady", "Rebooted", "NodeHasDiskPressure", "NodeHasNoDiskPressure",
             "NodeHasInsufficientMemory", "NodeHasSufficientMemory", "NodeHasInsufficientPID",
             "EvictionThresholdMet", "SystemOOM", "TerminatingEvictedPod", "HostPortConflict",
             "NodeNotSchedulable", "NodeSchedulable", "RegisteredNode", "RemovingNode", "Starting",
             "ContainerGCFailed", "ImageGCFailed", "FreeDiskSpaceFailed", "InvalidDiskCapacity"),
    "Deployment": ("ScalingReplicaSet", "DeploymentRollback", "ProgressDeadlineExceeded"),
    "ReplicaSet": ("SuccessfulCreate", "SuccessfulDelete", "FailedCreate", "FailedDelete"),
    "StatefulSet": ("SuccessfulCreate", "SuccessfulDelete", "FailedCreate", "FailedDelete",
                    "RecreatingFailedPod"),
    "DaemonSet": ("SuccessfulCreate", "SuccessfulDelete", "FailedCreate", "FailedDelete",
                  "FailedPlacement", "FailedDaemonPod"),
    "Job": ("SuccessfulCreate", "SuccessfulDelete", "FailedCreate", "Completed",
            "BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy"),
    "CronJob": ("SuccessfulCreate", "SuccessfulDelete", "SawCompletedJob", "MissSchedule",
                "FailedCreate", "UnexpectedJob", "FailedNeedsStart", "TooManyMissedTimes"),
    "HorizontalPodAutoscaler": ("SuccessfulRescale", "FailedGetResourceMetric", "FailedRescale",
                                "FailedComputeMetricsReplicas", "FailedGetScale",
                                "FailedGetPodsMetric", "FailedGetExternalMetric"),
}
# ReplicaSets are `<deployment>-<pod-template-hash>`: today 6-10 characters of the
# rand.SafeEncodeString alphabet, before Kubernetes 1.8 a decimal number.
_RS_HASH = re.compile(r"^(.+)-([bcdfghjklmnpqrstvwxz2456789]{6,10}|[0-9]{6,10})$")
_CRON_SUFFIX = re.compile(r"^(.+)-([0-9]{8,10})$")  # CronJob Jobs: `<cronjob>-<unix minutes>`
_POD_SUFFIX = re.compile(r"^(.+)-[a-z0-9]{5}$")
Labels = tuple[str, str, str, str, str, str]  # namespace, involved_kind, reason, type, workload, kind


def check_reasons(value: Any) -> str | None:
    """Option check: {kind: [reason, ...]} (a reason `*` allows all; a kind `*` any other kind)."""
    ok = isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(r, str) for r in v)
        for k, v in value.items())
    return None if ok else "must map involved kinds to lists of reasons"


class Rules:
    """The allowlist, built-in table overridden per kind by the `reasons` option."""

    def __init__(self, overrides: Mapping[str, Any]) -> None:
        table = {**DEFAULT_REASONS, **{k: tuple(v) for k, v in overrides.items()}}
        self.table = {k: frozenset(v) for k, v in table.items()}

    def reason(self, kind: str, reason: str) -> str:
        allowed = self.table.get(kind, self.table.get("*", frozenset()))
        return reason if reason and (reason in allowed or "*" in allowed) else OTHER


def owner_of(kind: str, name: str) -> tuple[str, str]:
    """(workload, workload_kind) of a non-pod involved object."""
    if kind == "ReplicaSet":
        m = _RS_HASH.match(name)
        return (m.group(1), "Deployment") if m else (name, kind)
    if kind == "Job":
        m = _CRON_SUFFIX.match(name)
        return (m.group(1), "CronJob") if m else (name, kind)
    return name, kind


def guess_pod(name: str) -> tuple[str, str]:
    """A pod the cache never saw (deleted before we started; short-lived CronJob pods most
    often): `<parent>-<5 chars>` belongs to a CronJob when the parent ends in a scheduled
    time, to a Deployment when it ends in a pod-template-hash. A decimal parent suffix is
    read as a CronJob's: decimal pod-template-hashes ended with Kubernetes 1.8. Anything
    else stays the bare pod."""
    m = _POD_SUFFIX.match(name)
    if m:
        for kind in ("Job", "ReplicaSet"):
            workload, wkind = owner_of(kind, m.group(1))
            if wkind != kind:
                return workload, wkind
    return name, "Pod"


def timestamp(ev: Mapping[str, Any]) -> float | None:
    """When the event last happened (series, lastTimestamp, eventTime, creation)."""
    for text in ((ev.get("series") or {}).get("lastObservedTime"), ev.get("lastTimestamp"),
                 ev.get("eventTime"), (ev.get("metadata") or {}).get("creationTimestamp")):
        if text:
            try:
                return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def occurrences(ev: Mapping[str, Any]) -> int:
    """How many times the event object says it happened (core/v1 count, events/v1 series)."""
    series = (ev.get("series") or {}).get("count") or 0
    return max(int(ev.get("count") or 0), int(series), 1)


class EventCounter:
    """Counts events from list+watch; `replace`/`apply` make it an `exporter.kube.watch` Handler."""

    def __init__(self, rules: Rules, resolve: Callable[[str, str], tuple[str, str] | None]) -> None:
        self.rules = rules
        self.resolve = resolve  # (namespace, pod) -> (workload, kind) or None
        self.seen: dict[str, int] = {}  # uid -> last count seen
        self.totals: dict[Labels, int] = {}
        self.last_seen: dict[tuple[str, str, str, str], float] = {}

    def replace(self, items: list[dict], initial: bool) -> None:
        """A (re)list: the initial one is history and counts nothing; a relist counts only
        events that are new or whose count grew since we last saw them."""
        fresh: dict[str, int] = {}
        for ev in items:
            uid = (ev.get("metadata") or {}).get("uid", "")
            if not initial:
                self._observe(ev)
            fresh[uid] = max(occurrences(ev), self.seen.get(uid, 0))
        self.seen = fresh

    def apply(self, kind: str, ev: dict) -> None:
        if kind == "DELETED":  # expired (TTL): a later event gets a new UID
            self.seen.pop((ev.get("metadata") or {}).get("uid", ""), None)
        elif kind in ("ADDED", "MODIFIED"):
            self._observe(ev)

    def _observe(self, ev: Mapping[str, Any]) -> None:
        uid = (ev.get("metadata") or {}).get("uid", "")
        count = occurrences(ev)
        delta = count - self.seen.get(uid, 0)
        self.seen[uid] = max(count, self.seen.get(uid, 0))
        if delta > 0:
            self.count(ev, delta)

    def count(self, ev: Mapping[str, Any], delta: int) -> None:
        obj = ev.get("involvedObject") or {}
        kind, name, ns = obj.get("kind", ""), obj.get("name", ""), obj.get("namespace", "")
        if kind == "Pod":
            workload, wkind = self.resolve(ns, name) or guess_pod(name)
        else:
            workload, wkind = owner_of(kind, name)
        reason = self.rules.reason(kind, ev.get("reason", ""))
        labels = (ns, kind, reason, ev.get("type", ""), workload, wkind)
        self.totals[labels] = self.totals.get(labels, 0) + delta
        key = (ns, workload, wkind, reason)
        self.last_seen[key] = max(self.last_seen.get(key, 0.0), timestamp(ev) or time.time())


class PodOwners:
    """(namespace, pod) -> (workload, kind) from a pod list+watch. Deleted pods are kept for
    `keep` seconds: Killing/Evicted events often arrive after the pod is gone."""

    def __init__(self, keep: float = 3600.0) -> None:
        self.keep = keep
        self.owners: dict[tuple[str, str], tuple[str, str]] = {}
        self.gone: dict[tuple[str, str], tuple[tuple[str, str], float]] = {}

    def get(self, namespace: str, name: str) -> tuple[str, str] | None:
        key = (namespace, name)
        found = self.owners.get(key)
        if found is None and key in self.gone:
            found, until = self.gone[key]
            if until < time.monotonic():
                del self.gone[key]
                return None
        return found

    def replace(self, items: list[dict], initial: bool) -> None:
        self.owners = dict(_owner(p) for p in items)

    def apply(self, kind: str, obj: dict) -> None:
        key, owner = _owner(obj)
        if kind == "DELETED":
            self.owners.pop(key, None)
            self.gone[key] = (owner, time.monotonic() + self.keep)
            if len(self.gone) > 10_000:  # bound the memory of a pod-churning cluster
                now = time.monotonic()
                self.gone = {k: v for k, v in self.gone.items() if v[1] >= now}
        elif kind in ("ADDED", "MODIFIED"):
            self.owners[key] = owner


def _owner(pod: Mapping[str, Any]) -> tuple[tuple[str, str], tuple[str, str]]:
    meta = pod_meta(pod)
    return meta.key, (meta.workload, meta.workload_kind)
