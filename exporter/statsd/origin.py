"""Which pod sent a datagram: the join by origin.

In order of precedence:
1. an explicit pod UID (the `dd.internal.entity_id` tag, which DogStatsD clients add from
   `DD_ENTITY_ID`, set through the downward API);
2. a container id (`|c:` field, or read from the sender's cgroup for a Unix socket peer);
3. the peer's cgroup path naming the pod UID (Unix socket);
4. the UDP source IP, when exactly one pod on this node has it and that pod does not use the
   host network (a hostNetwork pod shares the node's IP: it is never guessed). The container
   is named only when the pod has one (spec) container.

The tables are rebuilt from the pod index whenever its generation moves. Thread-safe for one
writer: the receiver threads call `pod_of`, which swaps in a whole new table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

from exporter.podindex import PodIndex
from exporter.pods import PodMeta

PodKey = tuple[str, str]
# A container id in a cgroup path (docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>,
# /kubepods/<qos>/pod<uid>/<id>) and the pod UID (systemd writes its dashes as underscores).
_CGROUP_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?$")
_CGROUP_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True, slots=True)
class Origin:
    """The pod (and container, when known) a line is joined to; `pod` None: a join miss."""

    pod: PodKey | None = None
    container: str = ""


@dataclass(frozen=True, slots=True)
class Tables:
    generation: int
    by_ip: Mapping[str, Origin]
    by_uid: Mapping[str, PodKey]
    by_container: Mapping[str, tuple[PodKey, str]]


NOWHERE = Origin()


def _ips(pod: PodMeta) -> set[str]:
    status = pod.raw.get("status") or {}
    ips = {str(p.get("ip")) for p in status.get("podIPs") or () if isinstance(p, Mapping) and p.get("ip")}
    if status.get("podIP"):
        ips.add(str(status["podIP"]))
    return ips


def _containers(pod: PodMeta) -> list[tuple[str, str]]:
    status = pod.raw.get("status") or {}
    out = []
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            if isinstance(cs, Mapping) and isinstance(cs.get("containerID"), str):
                cid = cs["containerID"].rpartition("://")[2]
                if cid:
                    out.append((cid, str(cs.get("name") or "")))
    return out


def build_tables(index: PodIndex) -> Tables:
    """The lookup tables of the index's current pods. An IP two pods claim is left out."""
    gen = index.generation
    by_ip: dict[str, Origin] = {}
    shared: set[str] = set()
    by_uid: dict[str, PodKey] = {}
    by_container: dict[str, tuple[PodKey, str]] = {}
    for pod in index.pods():
        if pod.uid:
            by_uid[pod.uid] = pod.key
        for cid, name in _containers(pod):
            by_container[cid] = (pod.key, name)
        if pod.host_network:
            continue
        specs = list((pod.raw.get("spec") or {}).get("containers") or [])
        only = str(specs[0].get("name") or "") if len(specs) == 1 and isinstance(specs[0], Mapping) else ""
        for ip in _ips(pod):
            if ip in by_ip and by_ip[ip].pod != pod.key:
                shared.add(ip)
            by_ip[ip] = Origin(pod.key, only)
    for ip in shared:
        del by_ip[ip]
    return Tables(gen, by_ip, by_uid, by_container)


class Resolver:
    """Origin of a line from its sender's address or credentials and its own fields."""

    def __init__(self, index: PodIndex | None, proc: Path = Path("/proc")) -> None:
        self.index = index
        self.proc = proc
        self.tables = Tables(-1, {}, {}, {})
        self.conflicts = 0  # entity ids naming another pod than the sender's address or pid

    def fresh(self) -> bool:
        """Rebuild the tables if the pod index moved on; True when it did."""
        if self.index is None or self.index.generation == self.tables.generation:
            return False
        self.tables = build_tables(self.index)
        return True

    def pod_of(self, peer: str | int | None, container_id: str, entity_id: str) -> Origin:
        """`peer`: the UDP source IP (str), the Unix peer's pid (int), or None. An entity id
        wins (DogStatsD's convention: it is set from the downward API), but one that names another
        pod than the sender's own address or pid does is counted in `conflicts`: a pod can
        claim another's UID, and the operator should be able to see it."""
        t = self.tables
        if entity_id:
            pod = t.by_uid.get(entity_id)
            if pod is not None:
                network = self._network(peer)
                if network.pod is not None and network.pod != pod:
                    self.conflicts += 1
                return Origin(pod, self._container_name(container_id, pod))
        if container_id:
            hit = t.by_container.get(container_id)
            if hit is not None:
                return Origin(*hit)
        return self._network(peer)

    def _network(self, peer: str | int | None) -> Origin:
        """The origin the sender's address (UDP) or pid (Unix socket) gives."""
        if isinstance(peer, int):
            return self._from_pid(peer)
        if isinstance(peer, str):
            if peer.startswith("::ffff:"):  # an IPv4 sender on a dual-stack socket
                peer = peer[7:]
            return self.tables.by_ip.get(peer, NOWHERE)
        return NOWHERE

    def _container_name(self, container_id: str, pod: PodKey) -> str:
        hit = self.tables.by_container.get(container_id) if container_id else None
        return hit[1] if hit is not None and hit[0] == pod else ""

    def _from_pid(self, pid: int) -> Origin:
        cid, uid = self.cgroup_ids(pid)
        if cid and cid in self.tables.by_container:
            return Origin(*self.tables.by_container[cid])
        pod = self.tables.by_uid.get(uid) if uid else None
        return Origin(pod) if pod is not None else NOWHERE

    def cgroup_ids(self, pid: int) -> tuple[str, str]:
        """(container id, pod UID) from /proc/<pid>/cgroup; empty where absent. The pid is as
        SCM_CREDENTIALS translated it: 0 when the sender's pid namespace is not visible."""
        if pid <= 0:
            return "", ""
        try:
            text = (self.proc / str(pid) / "cgroup").read_text(errors="replace")[:65536]
        except OSError:
            return "", ""
        cid = uid = ""
        for line in text.splitlines():
            path = line.split(":", 2)[-1].rstrip("/")
            for part in reversed(path.split("/")):
                m = _CGROUP_ID.search(part)
                if m and not cid:
                    cid = m.group(1)
            p = _CGROUP_POD.search(path)
            if p and not uid:
                uid = p.group(1).replace("_", "-")
        return cid, uid
