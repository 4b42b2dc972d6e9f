"""kubelet `/pods`: pod and container health, joined like every other pod series.

Read from the pod index (`PodMeta.raw` is the PodList item), so `/pods` is fetched once per
`pod_refresh_interval`, not once more per scrape: the health series lag the kubelet by at most
that interval (60 s by default; an alert with `for: 5m` does not notice). If the index has not
synced yet the source reports no_data; if it has not refreshed for 3 intervals + 10 s (the kubelet
refuses /pods) the source is down rather than serving old health.

Semantics, chosen so that alerts both fire and resolve:
- one-hot families (`phase`, `container_state`) carry every value, the current one at 1;
- state families with a free-form reason (`container_waiting`, `container_terminated`) exist
  only while the container is in that state, at 1, and DISAPPEAR when it leaves it: a crash
  loop's `container_waiting{reason="CrashLoopBackOff"}` is gone at the next scrape after the
  container runs again (Prometheus marks it stale), so `... == 1` alerts resolve;
- `container_last_terminated` is the kubelet's `lastState.terminated`: it stays until the next
  termination replaces it, so alert on its `_timestamp_seconds` (e.g. `time() - x < 600`).
Containers are the pod's containers and init containers (names are unique within a pod).
Requests and limits are the spec's, for containers and restartable (sidecar) init containers:
CPU in cores (unit="core"), memory, ephemeral storage and hugepages in bytes (unit="byte"),
anything else as a count (unit="integer"); resource names are sanitised as kube-state-metrics
does (`nvidia.com/gpu` -> `nvidia_com_gpu`).
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from collectors._pods import parse_quantity, resource_label
from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import NoDataError
from exporter.expfmt import Family
from exporter.families import Builder, Metric, PodLabels
from exporter.jsonshape import loads, obj, objs, text
from exporter.transform import Result
from exporter.podindex import PodIndex
from exporter.pods import PodMeta, parse_podlist
from exporter.registry import register

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
STATES = ("running", "waiting", "terminated")
POD = ("namespace", "pod")
CTR = ("namespace", "pod", "container")


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_pods_{name}", kind, help, labels)


PHASE = _m("phase", "gauge", "1 for the pod's current phase, 0 for the other phases.", *POD, "phase")
READY = _m("ready", "gauge", "1 if the pod's Ready condition is True, else 0.", *POD)
RESTARTS = _m("container_restarts_total", "counter", "Container restarts (restartCount).", *CTR)
CREADY = _m("container_ready", "gauge", "1 if the container passes its readiness probe.", *CTR)
STATE = _m("container_state", "gauge", "1 for the container's current state (running, waiting, "
           "terminated), 0 for the others.", *CTR, "state")
WAITING = _m("container_waiting", "gauge", "1 while the container waits, by reason "
             "(CrashLoopBackOff, ImagePullBackOff, ...); absent otherwise.", *CTR)
TERMINATED = _m("container_terminated", "gauge", "1 while the container is terminated, by reason "
                "and exit code; absent otherwise.", *CTR)
LAST = _m("container_last_terminated", "gauge", "1 for the reason and exit code of the container's "
          "last termination (OOMKilled, Error, ...), until the next one.", *CTR)
LAST_TS = _m("container_last_terminated_timestamp_seconds", "gauge", "When the container's last "
             "termination finished.", *CTR)
REQUESTS = _m("container_resource_requests", "gauge", "The container's requested resources (cpu in "
              "cores, memory in bytes, ...).", *CTR, "resource", "unit")
LIMITS = _m("container_resource_limits", "gauge", "The container's resource limits (cpu in cores, "
            "memory in bytes, ...).", *CTR, "resource", "unit")
TABLE = (PHASE, READY, RESTARTS, CREADY, STATE, WAITING, TERMINATED, LAST, LAST_TS, REQUESTS, LIMITS)


def timestamp(text: Any) -> float | None:
    """An RFC 3339 time -> Unix seconds (None if absent or unparsable)."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


Labels = Callable[..., PodLabels]  # extra labels -> the container's labels


def _status(b: Builder, cs: Mapping[str, Any], lab: Labels) -> None:
    labels = lab()
    restarts = cs.get("restartCount")
    b.add(RESTARTS, float(restarts) if isinstance(restarts, (int, float)) and not isinstance(
        restarts, bool) else 0.0, labels)
    b.add(CREADY, 1.0 if cs.get("ready") is True else 0.0, labels)
    state = obj(cs.get("state"))
    current = next((s for s in STATES if s in state), None)
    if current is not None:
        for s in STATES:
            b.add(STATE, 1.0 if s == current else 0.0, lab(state=s))
    if state.get("waiting") is not None:
        b.add(WAITING, 1.0, lab(**_reason(obj(state["waiting"]))))
    if state.get("terminated") is not None:
        b.add(TERMINATED, 1.0, lab(**_reason(obj(state["terminated"]), True)))
    last = obj(cs.get("lastState")).get("terminated")
    if last is not None:
        last = obj(last)
        why = lab(**_reason(last, True))
        b.add(LAST, 1.0, why)
        finished = timestamp(last.get("finishedAt"))
        if finished is not None:
            b.add(LAST_TS, finished, why)


def _reason(state: Mapping[str, Any], exit_code: bool = False) -> dict[str, str]:
    out = {"reason": text(state.get("reason"))}
    if exit_code:
        code = state.get("exitCode", "")
        out["exit_code"] = str(code) if isinstance(code, int) and not isinstance(code, bool) else ""
    return {k: v for k, v in out.items() if v}


def _resources(b: Builder, ctr: Mapping[str, Any], lab: Labels) -> int:
    bad = 0
    res = obj(ctr.get("resources"))
    for kind, metric in (("requests", REQUESTS), ("limits", LIMITS)):
        for name, qty in sorted(obj(res.get(kind)).items()):
            try:
                value = parse_quantity(qty)
            except ValueError:
                bad += 1  # the apiserver validates quantities: count, never guess
                continue
            resource, unit = resource_label(name)
            b.add(metric, value, lab(resource=resource, unit=unit))
    return bad


def _labeller(b: Builder, meta: PodMeta, container: str) -> Labels:
    def lab(**extra: str) -> PodLabels:
        return b.pod(meta.namespace, meta.name, {"container": container, **extra}, meta)
    return lab


def fill(b: Builder, pods: Iterable[PodMeta]) -> int:
    """Pods -> samples; returns how many quantities could not be parsed, plus how many items
    (containers, statuses) were skipped for wrong JSON types (such a field reads as absent)."""
    bad = 0
    for meta in pods:
        item = meta.raw
        status, spec = obj(item.get("status")), obj(item.get("spec"))
        phase = text(status.get("phase"))
        if phase:
            for p in PHASES:
                b.add(PHASE, 1.0 if p == phase else 0.0,
                      b.pod(meta.namespace, meta.name, {"phase": p}, meta))
        conditions, skipped = objs(status.get("conditions"))
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is not None:
            b.add(READY, 1.0 if ready.get("status") == "True" else 0.0,
                  b.pod(meta.namespace, meta.name, meta=meta))
        inits, skipped_i = objs(status.get("initContainerStatuses"))
        ctrs, skipped_c = objs(status.get("containerStatuses"))
        bad += skipped + skipped_i + skipped_c
        for cs in [*inits, *ctrs]:
            if text(cs.get("name")):
                _status(b, cs, _labeller(b, meta, cs["name"]))
        init_specs, skipped_i = objs(spec.get("initContainers"))
        specs, skipped_c = objs(spec.get("containers"))
        bad += skipped_i + skipped_c
        sidecars = [c for c in init_specs if c.get("restartPolicy") == "Always"]
        for ctr in [*sidecars, *specs]:
            if text(ctr.get("name")):
                bad += _resources(b, ctr, _labeller(b, meta, ctr["name"]))
    return bad


@register("pods", default_enabled=True)
class PodsCollector:
    """Pod phase and readiness, container restarts, waiting and termination reasons, requests and
    limits, from the kubelet's /pods (through the pod index)."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        # The series are a function of the index's listing and the common labels only: between
        # two refreshes of the index (and topology changes), a scrape serves the same families.
        self._last: tuple[tuple[int, int], Result] | None = None

    async def collect(self, budget: float) -> Sequence[Family]:
        """The index's current listing -> families."""
        index = self.deps.index
        if index is None or not index.synced.is_set():
            raise NoDataError("the pod index has not synced yet")
        interval = self.deps.config.pod_refresh_interval
        age = time.time() - index.last_sync
        if age > 3 * interval + 10:
            # Old health is worse than none: alerts would neither fire nor resolve.
            raise ConnectionError(f"the pod index last synced {age:.0f}s ago (kubelet /pods failing)")
        topology = self.deps.labels(self.cfg).topology
        key = (index.syncs, topology.generation if topology is not None else 0)
        if self._last is None or self._last[0] != key:
            self._last = (key, self._convert(index, 0))
        return self._last[1].families

    def process(self, payload: bytes) -> Result:
        """Offline entry point (`kubebridge transform --source pods PODS_JSON`)."""
        index = PodIndex(self.deps.config.label_policy)
        index.replace(parse_podlist(loads(payload, "/pods")))
        return self._convert(index, len(payload))

    def _convert(self, index: PodIndex, size: int) -> Result:
        b = Builder(TABLE, self.deps.labels(self.cfg), index)
        bad = fill(b, index.pods())
        res = b.result()
        res.malformed = bad
        self.stats = {"series_out": res.series_out, "malformed": bad,
                      **({"response_bytes": size} if size else {})}
        return res
