"""Pod metadata: what a series gains when it names a pod.

Built from the node's own kubelet `/pods` (a PodList), so the join costs the apiserver nothing.
Owners are resolved from the pod alone: a ReplicaSet whose name ends in the pod's
`pod-template-hash` is a Deployment's; a Job whose name ends in a scheduled-minute number is a
CronJob's; an owner of kind Node (or a kubelet config source other than the apiserver) is a
static pod.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_ALLOWLIST = (
    "app", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
    "app.kubernetes.io/part-of", "k8s-app", "component", "tier",
)
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
# CronJob controllers (v1 and v2) name Jobs `<cronjob>-<scheduled time in unix minutes>`.
_CRON_SUFFIX = re.compile(r"^(.+)-([0-9]{8,10})$")


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    """Which pod labels become `label_<name>`: an allowlist (`*` = all), then a denylist."""

    allow: frozenset[str] = frozenset(DEFAULT_ALLOWLIST)
    deny: frozenset[str] = frozenset()

    def admits(self, key: str) -> bool:
        """Whether the pod label `key` is exported."""
        return ("*" in self.allow or key in self.allow) and key not in self.deny


@dataclass(frozen=True, slots=True)
class PodMeta:
    """One pod, as much of it as the join and the health series need."""

    namespace: str
    name: str
    uid: str = ""
    node: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    workload: str = ""
    workload_kind: str = ""
    host_network: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): what a series names."""
        return (self.namespace, self.name)


@lru_cache(maxsize=4096)  # a node's pods share a few label keys; two regex passes each
def label_name(key: str) -> str:
    """Kubernetes label key -> Prometheus label name, as kube-state-metrics does it: invalid
    characters become `_`, then camelCase becomes snake_case (`appVersion` -> `app_version`)."""
    return "label_" + _CAMEL.sub(r"\1_\2", _INVALID.sub("_", key)).lower()


def pod_labels(labels: Mapping[str, str], policy: LabelPolicy) -> list[tuple[str, str]]:
    """The `label_*` pairs for a pod. Keys that sanitise to the same name all get a
    `_conflictN` suffix, numbered in key order (kube-state-metrics' rule), so no value is lost."""
    by_name: dict[str, list[str]] = {}
    for key in sorted(labels):
        if policy.admits(key):
            by_name.setdefault(label_name(key), []).append(key)
    out: list[tuple[str, str]] = []
    used = {n for n, keys in by_name.items() if len(keys) == 1}
    for name in sorted(by_name):
        keys = by_name[name]
        if len(keys) == 1:
            out.append((name, labels[keys[0]]))
            continue
        n = 0
        for key in keys:
            n += 1
            while f"{name}_conflict{n}" in used:  # a generated name must not clash either
                n += 1
            used.add(f"{name}_conflict{n}")
            out.append((f"{name}_conflict{n}", labels[key]))
    return sorted(out)


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(workload, workload_kind) for a PodList item."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    source = (meta.get("annotations") or {}).get("kubernetes.io/config.source", "api")
    if owner is None:
        if source != "api":
            return _static_name(meta), "StaticPod"
        return meta.get("name", ""), "Pod"
    kind, name = owner.get("kind", ""), owner.get("name", "")
    if kind == "ReplicaSet":
        tmpl = labels.get("pod-template-hash")
        if tmpl and name.endswith("-" + tmpl):
            return name[: -len(tmpl) - 1], "Deployment"
        return name, "ReplicaSet"
    if kind == "Job":
        m = _CRON_SUFFIX.match(name)
        return (m.group(1), "CronJob") if m else (name, "Job")
    if kind == "Node":
        return _static_name(meta), "StaticPod"
    return name, kind


def _static_name(meta: Mapping[str, Any]) -> str:
    # Static pods are named `<manifest name>-<node name>`; the manifest name is the workload.
    name, node = meta.get("name", ""), (meta.get("_node") or "")
    return name[: -len(node) - 1] if node and name.endswith("-" + node) else name


def pod_meta(item: Mapping[str, Any]) -> PodMeta:
    """A PodList item -> PodMeta. Missing fields (old kubelets, pending pods) stay empty."""
    meta = dict(item.get("metadata") or {})
    spec = item.get("spec") or {}
    meta["_node"] = spec.get("nodeName", "")
    workload, kind = workload_of({**item, "metadata": meta})
    return PodMeta(
        namespace=meta.get("namespace", "default"), name=meta.get("name", ""),
        uid=meta.get("uid", ""), node=spec.get("nodeName", ""),
        labels=dict(meta.get("labels") or {}), workload=workload, workload_kind=kind,
        host_network=bool(spec.get("hostNetwork")), raw=item,
    )


def parse_podlist(doc: Mapping[str, Any]) -> dict[tuple[str, str], PodMeta]:
    """A kubelet `/pods` document -> {(namespace, name): PodMeta}."""
    items: Iterable[Mapping[str, Any]] = doc.get("items") or []
    pods = (pod_meta(i) for i in items if isinstance(i, Mapping))
    return {p.key: p for p in pods if p.name}
