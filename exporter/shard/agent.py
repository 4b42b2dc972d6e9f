"""One node's share of a cluster-wide collector: the node agent's machinery, for one node.

A `NodeAgent` has what a DaemonSet pod has on its own node: the kubelet upstream (this
node's URL), a `PodIndex` of this node's pods, a live topology (`NodeTopology`, fed from the
Node watch instead of a read of its own), and one instance of each kubelet-facing collector,
whose `Deps.labels` give every series this node's `node`, `region`, `zone`, ... Collectors
are the same classes as on a node agent: nothing here converts anything.

The pod index is fed by `PodFeed`, the handler of a watch on `pods` with
`fieldSelector=spec.nodeName=<node>` (see docs/sharding.md for why per node).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import aiohttp

from exporter.config import Config
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.labels import CommonLabels
from exporter.merge import merge
from exporter.nodeinfo import NodeTopology
from exporter.podindex import PodIndex
from exporter.pods import pod_meta
from exporter.registry import get
from exporter.runner import Source, collect_all, self_metrics
from exporter.shard.nodes import NodeTarget

log = logging.getLogger("kubebridge.shard.agent")

# The node collectors whose only upstream is the kubelet (and the pod index): the ones a
# cluster-wide collector can run for a node it does not run on.
KUBELET_COLLECTORS = frozenset({"cadvisor", "kubelet", "probes", "resource", "stats_summary", "pods",
                                "healthz"})


class PodFeed:
    """Keeps a PodIndex equal to one node's pods as a pod watch reports them
    (an `exporter.kube.watch.Handler`). Pods on other nodes are ignored (defence in depth:
    the watch's field selector already leaves them out)."""

    def __init__(self, node: str, index: PodIndex) -> None:
        self.node = node
        self.index = index
        self.items: dict[tuple[str, str], dict] = {}

    def replace(self, items: list[dict], initial: bool) -> None:
        self.items = {}
        for obj in items:
            self._put(obj)
        self._install()

    def apply(self, kind: str, obj: dict) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata") or {}
            self.items.pop((meta.get("namespace", "default"), meta.get("name", "")), None)
        else:
            self._put(obj)
        self._install()

    def _put(self, obj: dict) -> None:
        if not isinstance(obj, dict) or (obj.get("spec") or {}).get("nodeName") != self.node:
            return
        if isinstance(obj.get("metadata"), dict):
            obj["metadata"].pop("managedFields", None)  # (server-side apply's bookkeeping: unused, large)
        meta = pod_meta(obj)
        if meta.name:
            self.items[meta.key] = obj

    def _install(self) -> None:
        self.index.replace({k: pod_meta(v) for k, v in self.items.items()})

    def alive(self) -> None:
        """The watch is healthy: the listing is current even if no pod changed (the `pods`
        collector reports a stale index as down)."""
        if self.index.synced.is_set():
            self.index.last_sync = time.time()


class NodeAgent:
    """The collectors of one node, with its own `node` and topology labels."""

    def __init__(self, config: Config, session: aiohttp.ClientSession, target: NodeTarget,
                 kubelet_url: str, collectors: Sequence[str]) -> None:
        self.name = target.name
        self.target = target
        self.config = replace(config, node_name=target.name,
                              kubelet=replace(config.kubelet, url=kubelet_url))
        self.index = PodIndex(config.label_policy)
        self.feed = PodFeed(target.name, self.index)
        self.topology = NodeTopology(target.name, "node_labels" in config.node_topology.cluster_from)
        self.topology.replace(target.info)
        deps = Deps(self.config, session, self.index, topology=self.topology)
        # The kubelet is across the network here (directly or through the API server): gzip.
        deps.kubelet = deps.upstream(self.config.kubelet, compressed=True)
        self.sources = [Source(name, get(name).factory(deps, self.config.collectors[name]),
                               self.config.collectors[name].timeout) for name in collectors]
        # kubebridge_up & co. of this node's sources: with its node and topology labels.
        self.labels = CommonLabels("", config.cluster, target.name, config.relabel_configs, self.topology)

    def update(self, target: NodeTarget) -> None:
        """A new version of the Node (same kubelet address): its labels follow."""
        self.target = target
        if self.topology.replace(target.info):
            log.info("node %s: %s", self.name, dict(self.topology.pairs()) or "no topology labels")

    async def collect(self, budget: float) -> tuple[list[Family], list[Family]]:
        """(the node's series, the kubebridge_* series about its sources)."""
        outcomes = await collect_all(self.sources, budget)
        families, _ = merge((o.name, o.families) for o in outcomes)
        return families, self_metrics(self.sources, outcomes, self.labels)
