"""The shard: a Node watch, one `NodeAgent` per node it owns, and their merged families.

Contract (what the sharding test checks):
- A node is collected by the shard `membership.shard_of(name, total)` names, and by no other:
  ownership depends on the name and the shard count only.
- Membership is recomputed on every Node list and on every Node event that changed a target:
  a new node gets an agent (and its pod watch) at once; a node that is deleted loses its
  agent, and its series are gone from the next scrape on; a node whose kubelet address or
  port changed gets a fresh agent.
- Before the Node watch's first list nothing is served for nodes (no guess); `/readyz` waits
  for that list (or its refusal, 403).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from exporter import NAMESPACE
from exporter.config import Config
from exporter.errors import NotPermittedError, describe
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.labels import CommonLabels
from exporter.merge import merge
from exporter.registry import get
from exporter.shard.agent import KUBELET_COLLECTORS, NodeAgent
from exporter.errors import ConfigError
from exporter.shard.membership import ReadyPeers, ShardSpec, resolve
from exporter.shard.peers import PeerSet
from exporter.shard.nodes import NodeSet, NodeTarget

log = logging.getLogger("kubebridge.shard")

INFO = Metric(f"{NAMESPACE}_shard_info", "gauge", "This cluster collector's shard and shard count.",
              ("shard", "total_shards"))
NODES = Metric(f"{NAMESPACE}_shard_nodes", "gauge",
               "Nodes this shard collects (owned by it and with a usable kubelet URL).")
CLUSTER_NODES = Metric(f"{NAMESPACE}_shard_cluster_nodes", "gauge", "Nodes the Node watch knows.")
UNREACHABLE = Metric(f"{NAMESPACE}_shard_nodes_unreachable", "gauge",
                     "Nodes this shard owns but cannot build a kubelet URL for (no address).")
NODE_WATCH = Metric(f"{NAMESPACE}_shard_node_watch_up", "gauge",
                    "1 if the Node watch (and, with membership ready_pods, the peer pod watch) "
                    "listed and is not failing, else 0.")
TABLE = (INFO, NODES, CLUSTER_NODES, UNREACHABLE, NODE_WATCH)


class ShardPool:
    """The node agents of one shard, kept in step with the Node watch."""

    def __init__(self, config: Config) -> None:
        self.config = config
        cc = config.cluster_collector
        self.spec: ShardSpec | ReadyPeers
        if cc.membership == "ready_pods":
            if not config.pod_namespace:
                raise ConfigError("cluster_collector.membership", "ready_pods needs POD_NAMESPACE")
            self.spec = ReadyPeers(cc.pod_name)
        else:
            self.spec = resolve(cc.shard, cc.total_shards, cc.pod_name)
        enabled = [c.name for c in config.enabled() if get(c.name).scope == "node"]
        self.collectors = [n for n in enabled if n in KUBELET_COLLECTORS]
        skipped = sorted(set(enabled) - KUBELET_COLLECTORS)
        if skipped:
            log.warning("cluster collector: %s need(s) the node itself and do(es) not run here",
                        ", ".join(skipped))
        self.template = cc.kubelet_url
        topo = config.node_topology
        self.nodes = NodeSet(frozenset(topo.labels), topo.roles, self._changed)
        self.agents: dict[str, NodeAgent] = {}
        self.unreachable: set[str] = set()
        self.synced = asyncio.Event()
        self.labels = CommonLabels("", config.cluster, "", config.relabel_configs)
        self._session: aiohttp.ClientSession | None = None
        self._v1: Any = None
        self._watches: dict[str, asyncio.Task] = {}
        self._node_watch: Any = None
        self._peer_watch: Any = None
        self.backoff: tuple[float, float] = (1.0, 30.0)
        self.watch_timeout = 300.0

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Watch Nodes (and each owned node's pods) until cancelled."""
        from kubernetes_asyncio import client

        from exporter.kube.client import KubeTarget
        from exporter.kube.watch import Reflector

        cc = self.config.cluster_collector
        target = KubeTarget(cc.apiserver, cc.kubeconfig)
        conf = await target.configuration()
        conf.connection_pool_maxsize = 0  # one long watch per owned node: no pool limit
        self._session = session
        async with target.client() as api:
            self._v1 = client.CoreV1Api(api)
            self._node_watch = Reflector(self._v1.list_node, handler=self.nodes, what="nodes",
                                         backoff=self.backoff, watch_timeout=self.watch_timeout)
            peers = None
            if isinstance(self.spec, ReadyPeers):
                list_fn = functools.partial(self._v1.list_namespaced_pod, self.config.pod_namespace,
                                            label_selector=cc.peer_selector)
                self._peer_watch = Reflector(list_fn, handler=PeerSet(self._peers_changed),
                                             what="cluster collector peers", backoff=self.backoff,
                                             watch_timeout=self.watch_timeout)
                peers = asyncio.create_task(self._peer_watch.run(), name="shard-peers")
            try:
                await self._node_watch.run()
            finally:
                if peers is not None:
                    peers.cancel()
                tasks = [*self._watches.values(), *([peers] if peers is not None else [])]
                for name in list(self.agents):
                    self._drop(name)
                await asyncio.gather(*tasks, return_exceptions=True)

    def settled(self) -> bool:
        """Ready to serve: the Node watch listed, or the node list was refused (403: reported
        by kubebridge_shard_node_watch_up, not a stalled rollout)."""
        w = self._node_watch
        return self.synced.is_set() or (w is not None and isinstance(w.error, NotPermittedError))

    # -- membership -----------------------------------------------------------------------

    def _peers_changed(self, ready: frozenset[str]) -> None:
        """The Ready replicas changed (membership ready_pods): nodes move by rendezvous hashing."""
        assert isinstance(self.spec, ReadyPeers)
        self.spec.members = ready
        log.info("shard %s: peers %s", self.spec, ", ".join(sorted(ready)) or "none")
        if self.nodes.targets or self.synced.is_set():
            self._changed()

    def _changed(self) -> None:
        """Recompute which nodes this shard collects (called by the Node watch's handler)."""
        owned = {n: t for n, t in self.nodes.targets.items() if self.spec.owns(n)}
        for name, agent in list(self.agents.items()):
            t = owned.get(name)
            if t is None or (t.address, t.port) != (agent.target.address, agent.target.port):
                self._drop(name)
        self.unreachable &= set(owned)
        for name, t in owned.items():
            if name in self.agents:
                self.agents[name].update(t)
            else:
                self._add(t)
        self.synced.set()

    def _add(self, t: NodeTarget) -> None:
        try:
            url = t.kubelet_url(self.template)
        except ValueError as exc:
            if t.name not in self.unreachable:
                log.warning("cluster collector: %s", exc)
            self.unreachable.add(t.name)
            return
        self.unreachable.discard(t.name)
        assert self._session is not None
        agent = self.agents[t.name] = NodeAgent(self.config, self._session, t, url, self.collectors)
        log.info("shard %s: collecting node %s (%s)", self.spec, t.name, url)
        self._watches[t.name] = asyncio.create_task(self._watch_pods(agent), name=f"pods:{t.name}")

    def _drop(self, name: str) -> None:
        self.agents.pop(name, None)
        task = self._watches.pop(name, None)
        if task is not None:
            task.cancel()
        log.info("shard %s: node %s dropped", self.spec, name)

    async def _watch_pods(self, agent: NodeAgent) -> None:
        """The node's pods, from a watch with `fieldSelector=spec.nodeName=<node>`."""
        from exporter.kube.watch import Reflector

        selector = f"spec.nodeName={agent.name}"
        list_fn = functools.partial(self._v1.list_pod_for_all_namespaces, field_selector=selector)
        r = Reflector(list_fn, handler=agent.feed, what=f"pods on {agent.name}", backoff=self.backoff,
                      watch_timeout=self.watch_timeout, list_from_cache=True)
        task = asyncio.create_task(r.run())
        try:
            while True:
                await asyncio.sleep(min(self.config.pod_refresh_interval, 60.0))
                if r.error is None and r.synced.is_set():
                    agent.feed.alive()
                elif r.error is not None:  # (kept for the landing page; the pods collector
                    agent.index.detail = describe(r.error)  # reports the stale index itself)
                    agent.index.status = "not_permitted" if isinstance(r.error, NotPermittedError) else "down"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- scrape ---------------------------------------------------------------------------

    async def collect(self, budget: float) -> tuple[list[Family], list[Family]]:
        """(every owned node's series, the kubebridge_* series about them and the shard)."""
        agents = [self.agents[n] for n in sorted(self.agents)]
        results = await asyncio.gather(*(a.collect(budget) for a in agents))
        series, _ = merge((a.name, fams) for a, (fams, _own) in zip(agents, results))
        own: list[Family] = []
        for _fams, fams in results:
            own.extend(fams)
        b = Builder(TABLE, self.labels)
        b.add(INFO, 1, {"shard": str(self.spec.shard), "total_shards": str(self.spec.total)})
        b.add(NODES, len(agents))
        b.add(CLUSTER_NODES, len(self.nodes.targets))
        b.add(UNREACHABLE, len(self.unreachable))
        watches = [self._node_watch] + ([self._peer_watch] if isinstance(self.spec, ReadyPeers) else [])
        healthy = all(w is not None and w.synced.is_set() and w.error is None for w in watches)
        b.add(NODE_WATCH, 1.0 if healthy else 0.0)
        merged, _ = merge([("nodes", own), ("shard", b.families())])
        return series, merged

    def node_names(self) -> Sequence[str]:
        """The nodes this shard collects now, sorted."""
        return sorted(self.agents)
