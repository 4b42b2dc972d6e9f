"""Pod metadata: what a series gains when it names a pod.

Built from the node's own kubelet `/pods` (a PodList), so the join costs the apiserver nothing.
Owners are resolved from the pod alone: a ReplicaSet whose name ends in the pod's
`pod-template-hash` is a Deployment's; a Job whose name ends in a scheduled-minute number is a
CronJob's; an owner of kind Node (or a kubelet config source other than the apiserver) is a
static pod.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from exporter.errors import ParseError
from exporter.jsonshape import obj, text

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
    """(workload, workload_kind) for a PodList item (fields of a wrong JSON type read as absent)."""
    meta = obj(pod.get("metadata"))
    labels = obj(meta.get("labels"))
    owners = [o for o in meta.get("ownerReferences") or () if isinstance(o, Mapping)] \
        if isinstance(meta.get("ownerReferences"), list) else []
    owner = next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)
    source = text(obj(meta.get("annotations")).get("kubernetes.io/config.source"), "api")
    if owner is None:
        if source != "api":
            return _static_name(meta), "StaticPod"
        return text(meta.get("name")), "Pod"
    kind, name = text(owner.get("kind")), text(owner.get("name"))
    if kind == "ReplicaSet":
        tmpl = text(labels.get("pod-template-hash"))
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
    name, node = text(meta.get("name")), text(meta.get("_node"))
    return name[: -len(node) - 1] if node and name.endswith("-" + node) else name


def pod_meta(item: Mapping[str, Any]) -> PodMeta:
    """A PodList item -> PodMeta. Missing fields (old kubelets, pending pods) stay empty; so do
    fields of a wrong JSON type, and label values that are not strings are left out: one odd
    pod never breaks the join of the others."""
    meta = dict(obj(item.get("metadata")))
    spec = obj(item.get("spec"))
    node = text(spec.get("nodeName"))
    meta["_node"] = node
    workload, kind = workload_of({**item, "metadata": meta})
    labels = {k: v for k, v in obj(meta.get("labels")).items()
              if isinstance(k, str) and isinstance(v, str)}
    return PodMeta(
        namespace=text(meta.get("namespace"), "default"), name=text(meta.get("name")),
        uid=text(meta.get("uid")), node=node,
        labels=labels, workload=workload, workload_kind=kind,
        host_network=spec.get("hostNetwork") is True, raw=_kept(item),
    )


# Parts of a pod that nothing in kubebridge reads, and that make up most of a /pods item: the
# index does not keep them (about half of the 1.35 capture's items, managedFields aside).
_UNREAD_META = frozenset({"managedFields"})
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # (annotations are read: autodiscovery)
_UNREAD_SPEC = frozenset({"tolerations", "affinity"})
_UNREAD_CONTAINER = frozenset({"env", "envFrom", "volumeMounts", "volumeDevices", "command", "args",
                               "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
                               "securityContext", "terminationMessagePath", "terminationMessagePolicy"})
_UNREAD_STATUS = frozenset({"volumeMounts", "user", "allocatedResources"})
_VOLUME_READ = frozenset({"name", "persistentVolumeClaim", "ephemeral"})  # (claims: stats, kubelet)


def _kept(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item as `PodMeta.raw` keeps it: a copy without the parts nothing reads (fields of
    an unexpected JSON type are kept as they are; the input is not changed)."""
    out = dict(item)
    meta, spec, status = item.get("metadata"), item.get("spec"), item.get("status")
    if isinstance(meta, dict):
        out["metadata"] = _without(meta, _UNREAD_META)
        notes = meta.get("annotations")
        if isinstance(notes, dict) and _LAST_APPLIED in notes:
            out["metadata"]["annotations"] = _without(notes, frozenset({_LAST_APPLIED}))
    if isinstance(spec, dict):
        out["spec"] = _trimmed(_without(spec, _UNREAD_SPEC), {
            "containers": _UNREAD_CONTAINER, "initContainers": _UNREAD_CONTAINER})
        if "volumes" in spec:
            out["spec"]["volumes"] = _each(spec["volumes"], lambda v: {k: x for k, x in v.items()
                                                                       if k in _VOLUME_READ})
    if isinstance(status, dict):
        out["status"] = _trimmed(dict(status), {"containerStatuses": _UNREAD_STATUS,
                                                "initContainerStatuses": _UNREAD_STATUS})
    return out


def _trimmed(d: dict[str, Any], lists: Mapping[str, frozenset[str]]) -> dict[str, Any]:
    """`d` with the listed keys' items (lists of dicts) without their unread keys."""
    for key, unread in lists.items():
        if key in d:
            d[key] = _each(d[key], lambda x, unread=unread: _without(x, unread))
    return d


def _without(d: Mapping[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _each(items: Any, keep: Any) -> Any:
    """`keep` applied to each dict of a list (other items as they are); None if not a list."""
    if not isinstance(items, list):
        return items
    return [keep(x) if isinstance(x, dict) else x for x in items]
def parse_podlist(doc: Any) -> dict[tuple[str, str], PodMeta]:
    """A kubelet `/pods` document -> {(namespace, name): PodMeta}. A document that is not a
    PodList (not an object, `items` not a list, an item not an object) raises ParseError: the
    caller keeps its last good listing. Items without a name are skipped."""
    if not isinstance(doc, Mapping):
        raise ParseError("/pods: not a JSON object")
    items = doc.get("items")
    if items is None:  # (Go marshals an empty list as null)
        items = []
    if not isinstance(items, list):
        raise ParseError(f"/pods: items is a {type(items).__name__}, not a list")
    bad = sum(1 for i in items if not isinstance(i, Mapping))
    if bad:
        raise ParseError(f"/pods: {bad} of {len(items)} items are not objects")
    pods = (pod_meta(i) for i in items)
    return {p.key: p for p in pods if p.name}
