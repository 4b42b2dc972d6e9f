"""Container status transitions the kubelet reports, applied to a captured PodList item.

Used with `ReplayKubelet.update_pod` to replay what a real kubelet shows over time for a
crash-looping container, without inventing anything but the transition itself: between two
restarts the kubelet reports `state.waiting{reason: CrashLoopBackOff}` and keeps the run that
just ended as `lastState.terminated`; when a run lasts, it reports `state.running`. The
captured 1.35 pod `scraper/e2e-container-creating` (container `alpine`, restartCount 2, last
run `terminated: Completed`, restartPolicy Always) is such a loop caught between restarts.
"""

from __future__ import annotations

import copy

BACKOFF = "back-off {delay}s restarting failed container={container} pod={pod}_{namespace}({uid})"


def _status(pod: dict, container: str) -> dict:
    for cs in pod.get("status", {}).get("containerStatuses", []):
        if cs.get("name") == container:
            return cs
    raise KeyError(f"no status for container {container!r}")


def _ready(pod: dict, ready: bool, container: str) -> None:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") in ("Ready", "ContainersReady"):
            cond["status"] = "True" if ready else "False"
            if ready:
                cond.pop("reason", None)
                cond.pop("message", None)
            else:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{container}]"


def crash_loop_backoff(pod: dict, container: str, exit_code: int | None = None,
                       reason: str | None = None) -> None:
    """The container's last run ended and the kubelet waits before restarting it: the ended run
    (the current `terminated` state, else a new one with `reason`/`exit_code`) becomes
    `lastState.terminated`, the state is waiting CrashLoopBackOff, the pod is not Ready."""
    cs = _status(pod, container)
    ended = copy.deepcopy(cs.get("state", {}).get("terminated")) or {
        "exitCode": 1 if exit_code is None else exit_code, "reason": reason or "Error"}
    if exit_code is not None:
        ended["exitCode"] = exit_code
    if reason is not None:
        ended["reason"] = reason
    meta = pod.get("metadata", {})
    delay = min(10 * 2 ** max(int(cs.get("restartCount", 0)), 0), 300)  # the kubelet's back-off
    cs["lastState"] = {"terminated": ended}
    cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": BACKOFF.format(
        delay=delay, container=container, pod=meta.get("name", ""),
        namespace=meta.get("namespace", ""), uid=meta.get("uid", ""))}}
    cs["ready"] = False
    cs["started"] = False
    _ready(pod, False, container)


def running_again(pod: dict, container: str, started_at: str) -> None:
    """The kubelet restarted the container and it stays up: restartCount + 1, state running,
    ready (no readiness probe), `lastState` kept (it still describes the previous run)."""
    cs = _status(pod, container)
    cs["restartCount"] = int(cs.get("restartCount", 0)) + 1
    cs["state"] = {"running": {"startedAt": started_at}}
    cs["ready"] = True
    cs["started"] = True
    _ready(pod, True, container)
