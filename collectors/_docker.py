"""Pure parts of the `docker` collector: its metric table and Docker Engine API JSON -> samples.

No I/O here, so the live `collect()` and the offline `process()` share every rule, and each
payload shape (API 1.22 to 1.41+, cgroup v1 and v2, swarm, Windows) is testable from fixtures.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from typing import Any
from collections.abc import Iterator, Mapping

from exporter import NAMESPACE
from exporter.errors import NotPermittedError
from exporter.families import Metric
from exporter.upstream import UpstreamError


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_docker_{name}", kind, help, labels)


# A label whose value is empty is left out (Prometheus reads an absent label as empty), so a
# family declares only the labels every sample has; the others go in the order of these tuples.
CONTAINER = ("name", "namespace", "pod", "container", "image", "cgroup_kind")  # then interface
INFO_LABELS = ("version", "api_version", "storage_driver", "cgroup_driver", "cgroup_version", "os_type")
UP = _m("up", "gauge", "1 when the Docker daemon answered this collection (when it does not, the "
        "whole source is down: kubebridge_up{collector=\"docker\"} 0).")
INFO = _m("info", "gauge", "The Docker daemon's version and setup (a field the daemon does not "
          "report is empty).")
CONTAINERS = _m("containers", "gauge", "Containers by state, Kubernetes namespace (empty: not a "
                "Kubernetes container) and image.", "state")
CPU = _m("container_cpu_usage_seconds_total", "counter", "CPU time used by a running container.")
MEMORY = _m("container_memory_usage_bytes", "gauge", "Memory used by a running container, page "
            "cache included.")
WORKING_SET = _m("container_memory_working_set_bytes", "gauge", "Memory used minus inactive file "
                 "cache (what the kubelet evicts on).")
RECEIVE = _m("container_network_receive_bytes_total", "counter", "Bytes received per interface "
             "(only containers with their own network namespace, e.g. pause containers).")
TRANSMIT = _m("container_network_transmit_bytes_total", "counter", "Bytes sent per interface "
              "(only containers with their own network namespace, e.g. pause containers).")
BLOCK_READ = _m("container_blkio_read_bytes_total", "counter", "Bytes read from block devices.")
BLOCK_WRITE = _m("container_blkio_write_bytes_total", "counter", "Bytes written to block devices.")
PIDS = _m("container_pids", "gauge", "Processes and threads in a running container.")
STATS_FAILURES = _m("stats_failures", "gauge", "Running containers whose stats could not be read "
                    "in the last collection: gone (stopped or removed meanwhile), timeout, error.",
                    "reason")
EVENTS = _m("events_total", "counter", "Docker events since kubebridge subscribed (earlier history "
            "is not counted), by object type and action; unknown ones are \"other\".", "type", "action")
TABLE = (UP, INFO, CONTAINERS, CPU, MEMORY, WORKING_SET, RECEIVE, TRANSMIT, BLOCK_READ, BLOCK_WRITE,
         PIDS, STATS_FAILURES, EVENTS)

STATES = frozenset({"created", "running", "paused", "restarting", "removing", "exited", "dead"})
_PODMAN_STATES = {"configured": "created", "initialized": "created", "stopped": "exited"}
# Event vocabulary of the Engine API (plus podman's compat additions): anything else would be
# an unbounded label (plugins and future daemons invent actions), so it becomes "other".
EVENT_TYPES = frozenset({"builder", "config", "container", "daemon", "image", "network", "node",
                         "plugin", "secret", "service", "volume", "pod"})
EVENT_ACTIONS = frozenset({
    "attach", "commit", "copy", "create", "destroy", "detach", "die", "exec_create", "exec_detach",
    "exec_die", "exec_start", "export", "health_status", "kill", "oom", "pause", "rename", "resize",
    "restart", "start", "stop", "top", "unpause", "update", "delete", "import", "load", "pull",
    "push", "save", "tag", "untag", "prune", "mount", "unmount", "connect", "disconnect", "remove",
    "reload", "enable", "disable", "install", "upgrade", "init", "cleanup", "sync"})
# Exposed at 0 from the subscription on, so the first increment of each shows in rate().
ZERO_EVENTS = tuple(("container", a) for a in (
    "create", "start", "die", "stop", "kill", "oom", "pause", "unpause", "restart", "destroy"))
_IMAGE_ID = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def present(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that have a value, in their order: an empty one is left out."""
    return {name: value for name, value in labels.items() if value}


def info_labels(version: Mapping[str, Any] | None, info: Mapping[str, Any] | None) -> dict[str, str]:
    """`kubebridge_docker_info` labels from /version and /info (either may be absent); a field
    neither reports is left out."""
    v, i = version or {}, info or {}
    return present({"version": _s(v.get("Version") or i.get("ServerVersion")),
                    "api_version": _s(v.get("ApiVersion")),
                    "storage_driver": _s(i.get("Driver")),
                    "cgroup_driver": _s(i.get("CgroupDriver")),     # API 1.23+
                    "cgroup_version": _s(i.get("CgroupVersion")),   # API 1.40+
                    "os_type": _s(i.get("OSType") or v.get("Os"))})


def state_of(c: Mapping[str, Any]) -> str:
    """A listed container's state; API < 1.23 has only the human `Status` text."""
    state = _s(c.get("State")).lower()
    if not state:
        status = _s(c.get("Status"))
        if status.startswith("Up"):
            state = "paused" if "(Paused)" in status else "running"
        else:
            state = {"Exited": "exited", "Created": "created", "Restarting": "restarting",
                     "Dead": "dead", "Removal": "removing"}.get(status.split(" ", 1)[0], "")
    state = _PODMAN_STATES.get(state, state)
    return state if state in STATES else "other"


def short_image(ref: str) -> str:
    """`docker.io/library/nginx:latest@sha256:...` -> `nginx`; `k8s.gcr.io/pause:3.1` stays;
    an image id (dockershim often recorded one) -> its 12-hex short form, as `docker ps` shows."""
    ref = ref.partition("@")[0]
    m = _IMAGE_ID.match(ref)
    if m:
        return m.group(1)[:12]
    for hub in _DOCKER_HUB:
        if ref.startswith(hub):
            ref = ref[len(hub):]
            break
    return ref.removeprefix("library/").removesuffix(":latest")


def name_of(c: Mapping[str, Any]) -> str:
    """A container's name (no leading "/"): stable across restarts, unlike its id."""
    names = c.get("Names") or [c.get("Name") or ""]
    return _s(names[0]).lstrip("/")


def pod_of(name: str, labels: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(namespace, pod, container, cgroup_kind) from dockershim/cri-dockerd labels. The sandbox
    is `pause` and named container "POD", as on Docker-era cAdvisor."""
    ns = _s(labels.get("io.kubernetes.pod.namespace"))
    pod = _s(labels.get("io.kubernetes.pod.name"))
    ctr = _s(labels.get("io.kubernetes.container.name"))
    pause = (labels.get("io.kubernetes.docker.type") == "podsandbox" or ctr == "POD"
             or (bool(ns) and name.startswith("k8s_POD_")))
    return ns, pod, ("POD" if pause else ctr), ("pause" if pause else "container")


def state_counts(containers: list[Mapping[str, Any]]) -> Counter[tuple[str, str, str]]:
    """(state, namespace, image) -> containers, from `/containers/json?all=1`."""
    return Counter((state_of(c), _s((c.get("Labels") or {}).get("io.kubernetes.pod.namespace")),
                    short_image(_s(c.get("Image")))) for c in containers)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stats_samples(st: Mapping[str, Any],
                  os_type: str = "linux") -> Iterator[tuple[Metric, float, dict[str, str]]]:
    """(metric, value, extra labels) from one `/containers/{id}/stats?stream=0` answer."""
    cpu = _num(((st.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage"))
    if cpu is not None:  # nanoseconds on Linux, 100 ns units on Windows
        yield CPU, cpu / (1e7 if os_type == "windows" else 1e9), {}
    mem = st.get("memory_stats") or {}
    usage = _num(mem.get("usage"))
    if usage is not None:
        yield MEMORY, usage, {}
        yield WORKING_SET, working_set(usage, mem.get("stats") or {}), {}
    for iface, net in sorted((st.get("networks") or {}).items()):
        for metric, key in ((RECEIVE, "rx_bytes"), (TRANSMIT, "tx_bytes")):
            value = _num((net or {}).get(key))
            if value is not None:
                yield metric, value, {"interface": iface}
    blk = (st.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if blk is not None:  # null without an io controller; [] when nothing was read yet
        ops: dict[str, float] = {}
        for entry in blk:
            op = _s(entry.get("op")).lower()
            ops[op] = ops.get(op, 0.0) + (_num(entry.get("value")) or 0.0)
        yield BLOCK_READ, ops.get("read", 0.0), {}
        yield BLOCK_WRITE, ops.get("write", 0.0), {}
    pids = _num((st.get("pids_stats") or {}).get("current"))
    if pids is not None:
        yield PIDS, pids, {}


def working_set(usage: float, stats: Mapping[str, Any]) -> float:
    """usage - inactive_file: cgroup v1 reports `total_inactive_file` (hierarchical), v2
    `inactive_file`; the Docker CLI and cAdvisor compute the same."""
    for key in ("total_inactive_file", "inactive_file"):
        inactive = _num(stats.get(key))
        if inactive is not None and inactive < usage:
            return usage - inactive
    return usage


def event_key(ev: Mapping[str, Any]) -> tuple[str, str]:
    """(type, action), bounded. `exec_start: sh -c ...` -> `exec_start`; API < 1.22 events have
    only `status` (and `from` for containers)."""
    kind = _s(ev.get("Type")) or ("container" if "from" in ev else "image")
    action = _s(ev.get("Action") or ev.get("status")).split(":", 1)[0].strip()
    return (kind if kind in EVENT_TYPES else "other", action if action in EVENT_ACTIONS else "other")


def event_time(ev: Mapping[str, Any]) -> int:
    """An event's time in ns (API < 1.22 has seconds only)."""
    ns = ev.get("timeNano")
    return int(ns) if isinstance(ns, int) else int(_num(ev.get("time")) or 0) * 10**9


def parse_payload(raw: bytes) -> tuple[str, Any]:
    """Sniff a saved Engine API answer: ("version"|"info"|"stats", dict), ("containers", list)
    or ("events", list) for one event or an NDJSON stream. JSON errors raise ValueError."""
    text = raw.decode("utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise
        return "events", [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(doc, list):
        return "containers", doc
    if not isinstance(doc, dict):
        raise ValueError("not a Docker Engine API document")
    if "cpu_stats" in doc or "memory_stats" in doc or "pids_stats" in doc:
        return "stats", doc
    if "Action" in doc or "timeNano" in doc or ("status" in doc and "time" in doc):
        return "events", [doc]
    return ("version" if "ApiVersion" in doc else "info"), doc


@contextlib.contextmanager
def mapped(url: str) -> Iterator[None]:
    """aiodocker raises DockerError for everything; the runner needs to tell outcomes apart."""
    from aiodocker.exceptions import DockerError  # loaded: the collector built its client

    try:
        yield
    except DockerError as exc:
        if exc.status == 900:  # aiodocker's "cannot connect"; the OSError is its context
            if isinstance(getattr(exc.__context__, "os_error", None), PermissionError):
                raise NotPermittedError(f"{url}: {exc.message}") from exc  # not in the docker group
            raise ConnectionError(f"{url}: {exc.message}") from exc
        if exc.status in (401, 403):
            raise NotPermittedError(f"{url}: {exc.message}") from exc
        raise UpstreamError(url, exc.status) from exc


def api_version(version: str) -> tuple[int, ...]:
    """aiodocker's negotiated "v1.41" -> (1, 41); (0,) before it is known."""
    try:
        return tuple(int(x) for x in version.lstrip("v").split("."))
    except ValueError:
        return (0,)


def check_unix(value: Any) -> str | None:
    """Option check: a unix socket URL."""
    return None if value.startswith("unix:///") else "must be unix:///PATH/TO/docker.sock"


def check_positive(value: Any) -> str | None:
    """Option check: > 0."""
    return None if value > 0 else "must be positive"
