"""Helpers of the derived node-agent collectors (not a collector): the pod join for series a
collector builds itself, so that they carry exactly the labels a passthrough series of the same
pod gets from the pipeline (label_*, workload, workload_kind, node, cluster, collector)."""
from __future__ import annotations

from typing import Mapping

from exporter.podindex import PodIndex
from exporter.pods import PodMeta


class Joiner:
    """Builds label sets for one collection and counts the pods the index did not know."""

    def __init__(self, collector: str, cluster: str, node: str, index: PodIndex | None) -> None:
        self.collector = collector
        self.cluster = cluster
        self.node = node
        self.index = index
        self.misses = 0
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def _tail(self, labels: dict[str, str]) -> dict[str, str]:
        if self.node and "node" not in labels:
            labels["node"] = self.node
        if self.cluster:
            labels["cluster"] = self.cluster
        labels["collector"] = self.collector
        return labels

    def node_labels(self, own: Mapping[str, str] | None = None) -> dict[str, str]:
        """Labels for a node-level series: its own, then node, cluster and collector."""
        return self._tail(_clean(own or {}))

    def meta(self, namespace: str, pod: str) -> PodMeta | None:
        """The pod's metadata, or None (then the index is asked to refresh early)."""
        meta = self.index.get(namespace, pod) if self.index is not None else None
        if meta is None and self.index is not None:
            self.index.request_refresh()
        return meta

    def pod_labels(self, namespace: str, pod: str, own: Mapping[str, str] | None = None,
                   meta: PodMeta | None = None) -> dict[str, str]:
        """Labels for a pod-scoped series: its own (namespace and pod first), then the pod's join
        labels, node, cluster and collector. Own labels win a clash, as upstream labels do in the
        pipeline; empty values are left out (Prometheus treats them as absent anyway). A series of
        a pod the index does not know counts as a join miss, as in the pipeline."""
        key = (namespace, pod)
        join = self._cache.get(key)
        if join is None:
            if meta is None:
                meta = self.meta(namespace, pod)
            join = None if meta is None or self.index is None else dict(self.index.join_labels(meta))
            self._cache[key] = join
        if join is None and self.index is not None:
            self.misses += 1
        labels = _clean({"namespace": namespace, "pod": pod, **(own or {})})
        labels.update({k: v for k, v in (join or {}).items() if k not in labels and v != ""})
        return self._tail(labels)


def _clean(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in labels.items() if v is not None and str(v) != ""}
