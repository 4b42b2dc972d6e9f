"""Fresh, realistically shaped identities for cloned pods (names, UIDs, container IDs, IPs).

A clone must look like a pod the same controller could have created, because the
exporter under test derives owner/workload labels from those shapes: a ReplicaSet pod
is `<rs-name>-<5 chars>`, a StatefulSet pod `<sts>-<ordinal>`, a static pod
`<manifest>-<node>` with a 32-hex config-hash UID. Everything is drawn from one
`random.Random` so a seed reproduces the same node.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import re
from dataclasses import dataclass, field

# k8s.io/apimachinery/pkg/util/rand: the alphabet generateName suffixes are drawn from.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# 64 hex not preceded by "sha256:": image IDs/digests are shared by every pod running the
# image and must survive cloning (1.16 cAdvisor labels `image="sha256:..."`, PodList imageID).
_CONTAINER_ID_RE = re.compile(r"(?<![0-9a-f])(?<!sha256:)[0-9a-f]{64}(?![0-9a-f])")


@dataclass
class Identity:
    """Old -> new identity of one clone; `container_ids` maps every runtime ID it carries."""

    namespace: str
    old_name: str
    new_name: str
    old_uid: str
    new_uid: str
    container_ids: dict[str, str] = field(default_factory=dict)
    ordinal: int | None = None  # StatefulSet pods only


def container_ids_in(text: str) -> list[str]:
    """Runtime container IDs (64 hex: containerd, docker, cri-o) in first-seen order."""
    return list(dict.fromkeys(_CONTAINER_ID_RE.findall(text)))


class IdentityFactory:
    """Draws identities that collide neither with each other nor with the capture."""

    def __init__(self, rng: random.Random, pods: list[dict], node_name: str | None = None) -> None:
        self.rng = rng
        self.node_name = node_name
        self.taken_names = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]) for p in pods}
        self.taken_ips = {p.get("status", {}).get("podIP") for p in pods} - {None}
        # Pod IPs come from the node's pod CIDR; the capture uses 10.244.0.0/24. A node
        # with 250 pods needs more than a /24, so allocation simply continues upward.
        self._next_ip = ipaddress.IPv4Address("10.244.0.2")

    def identity_for(self, pod: dict, container_ids: list[str]) -> Identity:
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        name, ordinal = self._fresh_name(pod)
        self.taken_names.add((namespace, name))
        old_uid = meta["uid"]
        return Identity(
            namespace=namespace,
            old_name=meta["name"],
            new_name=name,
            old_uid=old_uid,
            new_uid=self._fresh_uid(old_uid),
            container_ids={cid: f"{self.rng.getrandbits(256):064x}" for cid in container_ids},
            ordinal=ordinal,
        )

    def fresh_pod_ip(self) -> str:
        while str(self._next_ip) in self.taken_ips or str(self._next_ip).endswith((".0", ".255")):
            self._next_ip += 1
        ip = str(self._next_ip)
        self.taken_ips.add(ip)
        return ip

    def _fresh_uid(self, old_uid: str) -> str:
        bits = self.rng.getrandbits(128)
        if "-" not in old_uid:  # static pods: the UID is the manifest's 32-hex config hash
            return f"{bits:032x}"
        # Same shape as the API server's UIDs (random version-4 UUID).
        bits = (bits & ~(0xF << 76)) | (0x4 << 76)
        bits = (bits & ~(0x3 << 62)) | (0x2 << 62)
        text = f"{bits:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _suffix(self) -> str:
        return "".join(self.rng.choice(_SUFFIX_ALPHABET) for _ in range(5))

    def _fresh_name(self, pod: dict) -> tuple[str, int | None]:
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        owners = meta.get("ownerReferences") or []
        kinds = {o.get("kind"): o.get("name", "") for o in owners}
        if "StatefulSet" in kinds:
            base = kinds["StatefulSet"]
            ordinal = 0
            while (namespace, f"{base}-{ordinal}") in self.taken_names:
                ordinal += 1
            return f"{base}-{ordinal}", ordinal
        node = self.node_name or pod.get("spec", {}).get("nodeName")
        is_static = meta.get("annotations", {}).get("kubernetes.io/config.source") == "file"
        while True:
            if meta.get("generateName"):  # ReplicaSet, DaemonSet, Job: `<generateName><5 chars>`
                name = meta["generateName"] + self._suffix()
            elif is_static and node and meta["name"].endswith(f"-{node}"):
                # Static pod names are `<manifest name>-<node name>`; a second manifest.
                name = f"{meta['name'][: -len(node) - 1]}-{self._suffix()}-{node}"
            else:
                name = f"{meta['name']}-{self._suffix()}"
            if (namespace, name) not in self.taken_names:
                return name, None


def clone_pod_item(pod: dict, ident: Identity, pod_ip: str | None) -> dict:
    """A deep copy of a PodList item carrying `ident` (and `pod_ip` unless hostNetwork)."""
    text = json.dumps(pod)
    # UIDs and container IDs are random tokens, so a textual replace is exact: it also
    # reaches annotations such as kubernetes.io/config.hash and lastState container IDs.
    text = text.replace(ident.old_uid, ident.new_uid)
    for old, new in ident.container_ids.items():
        text = text.replace(old, new)
    clone = json.loads(text)
    meta = clone["metadata"]
    meta["name"] = ident.new_name
    for label, value in list(meta.get("labels", {}).items()):
        if value == ident.old_name:  # e.g. statefulset.kubernetes.io/pod-name
            meta["labels"][label] = ident.new_name
    if ident.ordinal is not None and "apps.kubernetes.io/pod-index" in meta.get("labels", {}):
        meta["labels"]["apps.kubernetes.io/pod-index"] = str(ident.ordinal)
    if "selfLink" in meta:  # pre-1.20 PodLists
        meta["selfLink"] = meta["selfLink"].rsplit("/", 1)[0] + "/" + ident.new_name
    spec = clone.get("spec", {})
    if spec.get("hostname") == ident.old_name:
        spec["hostname"] = ident.new_name
    status = clone.get("status", {})
    if pod_ip is not None and not spec.get("hostNetwork") and status.get("podIP"):
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return clone


def clone_summary_entry(entry: dict, ident: Identity) -> dict:
    """A /stats/summary pod entry for the clone: same usage numbers, new podRef."""
    clone = copy.deepcopy(entry)
    clone["podRef"] = {"name": ident.new_name, "namespace": ident.namespace, "uid": ident.new_uid}
    return clone
