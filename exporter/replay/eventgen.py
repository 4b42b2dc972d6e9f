"""Events that flow through the replay apiserver, in the shapes real clusters record.

The recorded events (DataDog's EventList, k9s' single Event) are history: the events collector
counts only what happens after its list, so the demo needs events that keep coming. Every shape
here is one a real component writes (reason, type, source component, message format and the
`fieldPath` of container events, as in `dd-kubernetes-events.json` and `k9s-event.json`); only
the timing is the generator's. Each tick:

- the crash-looping container's BackOff event is repeated (the same Event object, `count` + 1,
  as the kubelet's event recorder folds repeats);
- the container whose readiness probe fails gets its Unhealthy event repeated;
- one pod of the churn list goes through a rollout step, in turn: the ReplicaSet's
  SuccessfulCreate, the scheduler's Scheduled, the kubelet's Pulling, Pulled, Created, Started,
  and the Killing of the pod it replaces.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.replay.apiserver import ReplayApiserver


@dataclass(frozen=True)
class PodRef:
    """A pod the generator writes events about."""
    namespace: str
    name: str
    uid: str
    node: str
    container: str
    image: str
    owner_kind: str = ""     # ReplicaSet, DaemonSet, ...
    owner_name: str = ""


def pod_ref(item: dict, container: str | None = None) -> PodRef:
    """A PodRef from a PodList item (its first container unless named)."""
    meta, spec = item.get("metadata", {}), item.get("spec", {})
    containers = spec.get("containers") or [{}]
    c = next((x for x in containers if x.get("name") == container), containers[0])
    owner = (meta.get("ownerReferences") or [{}])[0]
    return PodRef(meta.get("namespace", "default"), meta.get("name", ""), meta.get("uid", ""),
                  spec.get("nodeName", ""), c.get("name", ""), c.get("image", ""),
                  owner.get("kind", ""), owner.get("name", ""))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Step:
    """One event of a rollout: who writes it and what it says about the pod."""
    reason: str
    component: str
    message: str
    on_owner: bool = False
    container_event: bool = True
    type: str = "Normal"


ROLLOUT = (
    Step("SuccessfulCreate", "replicaset-controller", "Created pod: {pod}", on_owner=True,
         container_event=False),
    Step("Scheduled", "default-scheduler", "Successfully assigned {namespace}/{pod} to {node}",
         container_event=False),
    Step("Pulling", "kubelet", 'Pulling image "{image}"'),
    Step("Pulled", "kubelet", 'Successfully pulled image "{image}" in 1.2s (1.2s including waiting). '
         "Image size: 4123456 bytes."),
    Step("Created", "kubelet", "Created container: {container}"),
    Step("Started", "kubelet", "Started container {container}"),
    Step("Killing", "kubelet", "Stopping container {container}"),
)


class EventGenerator:
    """Writes events into a ReplayApiserver every `interval` seconds until stopped."""

    def __init__(self, apiserver: ReplayApiserver, *, crash_loop: PodRef | None,
                 failing_probe: PodRef | None, churn: Callable[[], list[PodRef]],
                 interval: float = 2.0) -> None:
        self.apiserver = apiserver
        self.crash_loop, self.failing_probe, self.churn = crash_loop, failing_probe, churn
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._steps: Iterator[int] = itertools.count()
        self._task: asyncio.Task | None = None

    def _put(self, ref: PodRef, reason: str, message: str, component: str, *, type_: str = "Normal",
             kind: str = "Pod", name: str | None = None, container_event: bool = True) -> dict:
        """Create the event, or fold a repeat into it (`count` + 1, `lastTimestamp` now)."""
        involved = name or ref.name
        key = _suffix(kind, ref.namespace, involved, reason, component)
        self.counts[key] = self.counts.get(key, 0) + 1
        now = _now()
        obj: dict = {
            "apiVersion": "v1", "kind": "Event",
            # A stable UID: a repeat is the same Event object, its `count` grown.
            "metadata": {"name": f"{involved}.{key}", "namespace": ref.namespace, "uid": str(uuid.UUID(
                hashlib.sha256(key.encode()).hexdigest()[:32]))},
            "involvedObject": {"kind": kind, "namespace": ref.namespace, "name": involved,
                               "apiVersion": "v1" if kind == "Pod" else "apps/v1"},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component, **({"host": ref.node} if component == "kubelet" else {})},
            "reportingComponent": component, "reportingInstance": ref.node if component == "kubelet" else "",
            "firstTimestamp": now, "lastTimestamp": now, "count": self.counts[key], "eventTime": None,
        }
        if kind == "Pod":
            obj["involvedObject"]["uid"] = ref.uid
            if container_event:
                obj["involvedObject"]["fieldPath"] = f"spec.containers{{{ref.container}}}"
        return self.apiserver.add_event(obj)

    def tick(self) -> None:
        """One round of events (see the module docstring)."""
        if self.crash_loop is not None:
            r = self.crash_loop
            self._put(r, "BackOff", f"Back-off restarting failed container {r.container} in pod "
                      f"{r.name}_{r.namespace}({r.uid})", "kubelet", type_="Warning")
        if self.failing_probe is not None:
            r = self.failing_probe
            self._put(r, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503",
                      "kubelet", type_="Warning")
        pods = self.churn()
        if not pods:
            return
        n = next(self._steps)
        ref = pods[(n // len(ROLLOUT)) % len(pods)]
        step = ROLLOUT[n % len(ROLLOUT)]
        text = step.message.format(pod=ref.name, namespace=ref.namespace, node=ref.node, image=ref.image,
                                   container=ref.container)
        if step.on_owner:
            if ref.owner_kind:
                self._put(ref, step.reason, text, step.component, kind=ref.owner_kind, name=ref.owner_name)
            return
        self._put(ref, step.reason, text, step.component, type_=step.type,
                  container_event=step.container_event)

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
