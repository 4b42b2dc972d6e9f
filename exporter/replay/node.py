"""Mutable state of one synthetic node: its cAdvisor payload, PodList and stats summary.

`synth` (pure functions) and `ReplayKubelet` (churn while serving) both build on this so a
cloned pod shows up consistently in /metrics/cadvisor, /pods and /stats/summary. Unless a
template is named explicitly, clones are made from the captured pods ("templates"), so
every synthetic pod is one real pod under a fresh identity.
"""

from __future__ import annotations

import copy
import json
import random
import re

from .encoding import go_json
from .exposition import Exposition, PodKey
from .identity import IdentityFactory, clone_pod_item, clone_summary_entry, container_ids_in


def pod_key(pod: dict) -> PodKey:
    meta = pod["metadata"]
    return (meta.get("namespace", ""), meta["name"])


class SyntheticNode:
    """A node built from a real (cadvisor, pods[, stats summary]) capture; see `clone`."""

    def __init__(
        self,
        cadvisor: bytes,
        pods: dict,
        stats_summary: dict | None = None,
        *,
        seed: int = 0,
        node_name: str | None = None,
    ) -> None:
        self.podlist = copy.deepcopy(pods)
        self.summary = copy.deepcopy(stats_summary) if stats_summary is not None else None
        items = self.podlist.setdefault("items", [])
        uid_index = {p["metadata"]["uid"]: pod_key(p) for p in items if p["metadata"].get("uid")}
        self.exposition = Exposition.parse(cadvisor, uid_index)
        if node_name is None and self.summary is not None:
            node_name = self.summary.get("node", {}).get("nodeName")
        if node_name is None and items:
            node_name = items[0].get("spec", {}).get("nodeName")
        self.node_name = node_name
        self.factory = IdentityFactory(random.Random(seed), items, node_name)
        # Snapshot the captured pods that have series: they stay usable as templates even
        # after churn removed them from the served state.
        self._templates: dict[PodKey, tuple[dict, dict[int, list[str]], dict | None]] = {}
        for pod in items:
            key = pod_key(pod)
            if key in self.exposition.pod_lines:
                self._templates[key] = (pod, self.exposition.pod_lines[key], self._summary_entry(key))
        self._round_robin = 0

    @property
    def templates(self) -> list[PodKey]:
        """Captured pods with cAdvisor series, in PodList order (the round-robin order)."""
        return list(self._templates)

    def pod_keys(self) -> list[PodKey]:
        return [pod_key(p) for p in self.podlist["items"]]

    def next_template(self) -> PodKey:
        if not self._templates:
            raise ValueError("the capture has no pod with cAdvisor series to clone")
        key = self.templates[self._round_robin % len(self._templates)]
        self._round_robin += 1
        return key

    def clone(self, template: PodKey | None = None) -> PodKey:
        """Add one pod cloned from `template` (default: next in round-robin); returns its key."""
        template = template or self.next_template()
        current = {pod_key(p): p for p in self.podlist["items"]}
        if template in current and template in self.exposition.pod_lines:
            pod, lines, entry = (
                current[template],
                self.exposition.pod_lines[template],
                self._summary_entry(template),
            )
        elif template in self._templates:
            pod, lines, entry = self._templates[template]
        else:
            raise KeyError(f"no pod {template[0]}/{template[1]} with cAdvisor series to clone")
        ids = container_ids_in(
            "\n".join(line for chunk in lines.values() for line in chunk) + json.dumps(pod)
        )
        ident = self.factory.identity_for(pod, ids)
        needs_ip = not pod.get("spec", {}).get("hostNetwork") and pod.get("status", {}).get("podIP")
        self.podlist["items"].append(
            clone_pod_item(pod, ident, self.factory.fresh_pod_ip() if needs_ip else None)
        )
        ns = ident.namespace
        replacements = {
            f'pod="{ident.old_name}"': f'pod="{ident.new_name}"',
            f'pod_name="{ident.old_name}"': f'pod_name="{ident.new_name}"',
            # docker-era container names: k8s_<container>_<pod>_<namespace>_<uid>_<attempt>
            f"_{ident.old_name}_{ns}_{ident.old_uid}_": f"_{ident.new_name}_{ns}_{ident.new_uid}_",
            ident.old_uid: ident.new_uid,
            # systemd cgroup driver: kubepods-burstable-pod<uid with underscores>.slice
            ident.old_uid.replace("-", "_"): ident.new_uid.replace("-", "_"),
            **ident.container_ids,
        }
        # Longest first so the docker name token wins over the bare UID inside it.
        pattern = re.compile("|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True)))
        new_key = (ident.namespace, ident.new_name)
        self.exposition.add_pod_lines(
            new_key,
            {
                index: [pattern.sub(lambda m: replacements[m.group(0)], line) for line in chunk]
                for index, chunk in lines.items()
            },
        )
        if entry is not None and self.summary is not None:
            self.summary.setdefault("pods", []).append(clone_summary_entry(entry, ident))
        return new_key

    def remove(self, key: PodKey) -> bool:
        """Drop a pod everywhere; returns whether it existed in any of the three views."""
        items = self.podlist["items"]
        before = len(items)
        items[:] = [p for p in items if pod_key(p) != key]
        found = len(items) != before
        found = self.exposition.remove_pod(key) or found
        if self.summary is not None:
            pods = self.summary.get("pods", [])
            kept = [p for p in pods if (p["podRef"].get("namespace", ""), p["podRef"]["name"]) != key]
            found = found or len(kept) != len(pods)
            self.summary["pods"] = kept
        return found

    def scale(self, count: int) -> None:
        """Make the node hold exactly `count` pods, all with series (see synth.clone_pods)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        keep = set(self.templates[:count])
        for key in self.pod_keys() + self.exposition.pods():
            if key not in keep:
                self.remove(key)
        for index in range(len(keep), count):
            self.clone(self.templates[index % len(self._templates)])

    def render_cadvisor(self) -> bytes:
        return self.exposition.render()

    def render_pods(self) -> bytes:
        return go_json(self.podlist, newline=True)

    def _summary_entry(self, key: PodKey) -> dict | None:
        if self.summary is None:
            return None
        for entry in self.summary.get("pods", []):
            ref = entry.get("podRef", {})
            if (ref.get("namespace", ""), ref.get("name")) == key:
                return entry
        return None
