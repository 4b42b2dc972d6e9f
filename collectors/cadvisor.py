"""kubelet `/metrics/cadvisor`: container resource usage, classified, deduplicated and joined.

cAdvisor mixes four kinds of cgroup in every family, which is why users double count:
- `system`: no pod (`/`, `/kubepods`, `/system.slice/...`);
- `pod`: the pod-level cgroup (`container=""`, no `name`, no `image`): the sum of the others;
- `pause`: the sandbox (`container="POD"` on Docker-era kubelets; on containerd/CRI-O
  `container=""` with a `name`/`image`);
- `container`: a real container.
Each `container_*` series gets `cgroup_kind=<kind>`, so `sum by (workload)
(x{cgroup_kind="container"})` counts every byte once (`machine_*`, `cadvisor_*` and
`container_scrape_error` describe the machine or cAdvisor, not a cgroup, and get none).
`id` (cgroup path) and `name` (runtime id) are dropped by default from pod cgroups: they churn
on every restart, and after a restart cAdvisor keeps the dead container's series for minutes,
so series of a container that is not the newest (by `container_start_time_seconds`) for its
(pod, container) are dropped. System cgroups keep both: `id` is all that tells
`/system.slice/a` from `/system.slice/b`, and on a standalone cAdvisor `name` is the Docker
container's name.

Label drift across Kubernetes 1.10-1.35 is tolerated: `pod_name`/`container_name` (< 1.16) gain
`pod`/`container`; the sandbox is `container="POD"` (dockershim) or `container=""` with an
image/name (CRI); cgroupfs (`/kubepods/burstable/pod<uid>/<id>`) and systemd
(`kubepods-burstable-pod<uid>.slice/docker-<id>.scope`) paths are never parsed; standalone
cAdvisor's `container_label_*`/`container_env_*` pass through (no pod labels: `system`).
"""
from __future__ import annotations

from itertools import compress
from operator import methodcaller
from typing import Any
from collections.abc import Sequence

from exporter.expfmt import label_dict, parse_labels
from exporter.passthrough import Passthrough, options_table
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.transform import NOTHING, Changes, Pairs, PodKey
from exporter.registry import Option, register

_START = b"container_start_time_seconds{"


def _label_list(value: Any) -> str | None:
    ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return None if ok else "must be a list of label names"


class CadvisorHook:
    """Classify, normalise legacy names, drop identity labels, skip hostNetwork pod networks."""

    # All the rewrite looks at: the other labels (cpu, device, interface, state...) pass as they are.
    reads = frozenset({"namespace", "pod", "pod_name", "container", "container_name", "id", "name", "image",
                       "cgroup_kind"})

    def __init__(self, drop_labels: Sequence[str]) -> None:
        self.drop = frozenset(drop_labels)
        self._drop_system = self.drop - {"id", "name"}
        self.stale: frozenset[str] = frozenset()  # cgroup ids of containers that are not the newest
        self._stale_pods: dict[str, PodKey] = {}  # ...and the pod each names
        self._block = b""

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        """A restart changes which container ids are stale: the pods whose stale set changed
        must be rewritten. Start times never change, so an unchanged block (the usual case,
        byte for byte) changes nothing."""
        if "id" not in self.drop:
            return NOTHING
        block = start_times(lines)
        if block == self._block:
            return NOTHING
        self._block = block
        stale = _stale(block)
        if stale.keys() == self._stale_pods.keys():
            return NOTHING
        changed = stale.keys() ^ self._stale_pods.keys()
        pods = frozenset(stale.get(cid) or self._stale_pods[cid] for cid in changed)
        self._stale_pods = stale
        self.stale = frozenset(stale)
        return Changes(pods=pods)

    def variant(self, family: str) -> Any:
        if family.startswith("container_network_"):
            return "net"
        if family.startswith("container_") and family != "container_scrape_error":
            return "cgroup"
        return None  # machine_*, cadvisor_version_info, container_scrape_error: not a cgroup

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        if variant is None:
            return pairs
        labels = dict(pairs)
        if self.stale and labels.get("id") in self.stale:
            return None
        added: Pairs = []
        if "pod_name" in labels or "container_name" in labels:
            # Kubernetes < 1.16 spelled them pod_name/container_name: add the modern names too.
            added = [(new, labels[old]) for old, new in (("pod_name", "pod"), ("container_name", "container"))
                     if old in labels and new not in labels]
            labels.update(added)
        kind = classify(labels)
        # System cgroups keep `id` and `name` (see the module docstring).
        drop = self.drop if kind != "system" else self._drop_system
        out = [p for p in pairs if p[0] not in drop] if drop else list(pairs)
        if "cgroup_kind" in labels:  # ours wins; an upstream one is kept renamed, as Prometheus does
            out = [("exported_cgroup_kind", v) if k == "cgroup_kind" else (k, v) for k, v in out]
        if variant == "net" and pod is not None and pod.host_network:
            return None  # a hostNetwork pod's "network" is the node's: counted under system
        out += added
        out.append(("cgroup_kind", kind))
        return out


def classify(labels: dict[str, str]) -> str:
    """container / pod / pause / system for one cAdvisor label set."""
    if not labels.get("namespace") or not labels.get("pod"):
        return "system"
    container = labels.get("container", "")
    if container == "POD":
        return "pause"
    if container:
        return "container"
    return "pause" if labels.get("name") or labels.get("image") else "pod"


def start_times(lines: list[bytes]) -> bytes:
    """The `container_start_time_seconds` sample lines of a payload, joined (b"" if none)."""
    return b"\n".join(compress(lines, map(methodcaller("startswith", _START), lines)))


def _label_dict(text: bytes) -> dict[str, str] | None:
    """A label text as a dict (None if it does not parse)."""
    labels = label_dict(text)
    if labels is not None:
        return labels
    try:
        return dict(parse_labels(text))
    except ValueError:
        return None


def _stale(block: bytes) -> dict[str, PodKey]:
    """cgroup ids of containers that are not the newest for their (namespace, pod, container),
    each with the pod it belongs to."""
    newest: dict[tuple[str, str, str], tuple[float, str]] = {}
    every: list[tuple[tuple[str, str, str], str]] = []
    for line in block.split(b"\n"):
        head, sep, rest = line.rpartition(b"} ")
        if not sep or not head.startswith(_START):
            continue
        labels = _label_dict(head[len(_START):])
        try:
            started = float(rest.partition(b" ")[0])
        except ValueError:
            continue
        if labels is None or "id" not in labels:
            continue
        labels.setdefault("pod", labels.get("pod_name", ""))
        labels.setdefault("container", labels.get("container_name", ""))
        kind = classify(labels)
        if kind not in ("container", "pause"):
            continue
        name = labels["container"] if kind == "container" else "POD"
        key = (labels.get("namespace", ""), labels["pod"], name)
        every.append((key, labels["id"]))
        if key not in newest or started > newest[key][0]:
            newest[key] = (started, labels["id"])
    return {cid: (key[0], key[1]) for key, cid in every if newest[key][1] != cid}


OPTIONS = options_table(
    drop_labels=Option(("id", "name"), _label_list, "cAdvisor labels removed from every series."),
)


@register("cadvisor", default_enabled=True, options=OPTIONS)
class CadvisorCollector(Passthrough):
    """Container resource usage from the kubelet's embedded cAdvisor."""

    path = "/metrics/cadvisor"

    def hook(self, cfg: Any) -> CadvisorHook:
        return CadvisorHook(cfg.options["drop_labels"])
