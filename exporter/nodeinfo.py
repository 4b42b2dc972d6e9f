"""The node's own dimensions: region, zone, role and allowlisted labels, from its Node object.

- `NodeInfo` is what one Node object says (a record, built by `NodeInfo.from_node`): a node
  agent keeps its own, a collector of many nodes (a sharded Deployment) can keep one per node.
- `NodeTopology` is the node agent's live `NodeInfo`: refreshed from `GET /api/v1/nodes/<name>`
  (RBAC: `get` on `nodes`), with a generation that every cache of finished label sets compares
  (`exporter.labels.CommonLabels`), so a relabelled node changes the series without a
  restart.

Which labels (every value untrusted: only non-empty strings are kept):
- `region`, `zone`: `topology.kubernetes.io/region|zone`, else the deprecated
  `failure-domain.beta.kubernetes.io/region|zone`;
- `node_role`: the roles named by `node-role.kubernetes.io/<role>` label keys (their values are
  empty by convention), else the legacy `kubernetes.io/role` value; several are sorted and
  joined with `,`;
- `node_label_<name>`: each allowlisted node label, named as kube-state-metrics names labels
  (`node.kubernetes.io/instance-type` -> `node_label_node_kubernetes_io_instance_type`);
- the cluster's name, when a platform writes it on its nodes (`CLUSTER_LABELS`): used for
  `cluster` only when the configuration names none.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from exporter.errors import ParseError
from exporter.pods import LabelPolicy, pod_labels
from exporter.upstream import Upstream, UpstreamError

log = logging.getLogger("kubebridge.nodeinfo")

Pairs = tuple[tuple[str, str], ...]
REGION = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
ZONE = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
ROLE_PREFIX = "node-role.kubernetes.io/"
LEGACY_ROLE = "kubernetes.io/role"
# Node labels that name the cluster, in the order they are tried: eksctl's node groups
# (`alpha.eksctl.io/cluster-name`), and AKS (`kubernetes.azure.com/cluster`: the cluster's node
# resource group, `MC_<group>_<cluster>_<region>`, which names the cluster uniquely).
CLUSTER_LABELS = ("alpha.eksctl.io/cluster-name", "kubernetes.azure.com/cluster")
# Instance type and the node pool of GKE, EKS managed node groups, AKS and Karpenter.
DEFAULT_NODE_LABELS = (
    "node.kubernetes.io/instance-type", "cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool", "karpenter.sh/nodepool",
)
_MAX_VALUE = 1024  # characters: a label value past this is not a Kubernetes label; left out


def _text(value: Any) -> str:
    """A usable label value: a non-empty string of reasonable length, else ""."""
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_VALUE else ""


@dataclass(frozen=True)
class NodeInfo:
    """What a series of this node gains, read from one Node object."""

    name: str
    region: str = ""
    zone: str = ""
    roles: tuple[str, ...] = ()
    labels: Pairs = ()        # the allowlisted `node_label_*` pairs, sorted by name
    cluster: str = ""         # the cluster's name from a platform node label ("" if none)

    @classmethod
    def from_node(cls, obj: Any, allow: frozenset[str] | tuple[str, ...] = DEFAULT_NODE_LABELS,
                  roles: bool = True) -> NodeInfo:
        """Read a Node object (a decoded JSON mapping). Raises ParseError when it is not one."""
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if not isinstance(meta, Mapping) or not _text(meta.get("name")):
            raise ParseError("not a Node object: no metadata.name")
        raw = meta.get("labels") or {}
        if not isinstance(raw, Mapping):
            raise ParseError("Node metadata.labels is not an object")
        labels = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
        found: tuple[str, ...] = ()
        if roles:
            found = tuple(sorted({k[len(ROLE_PREFIX):] for k in labels
                                  if k.startswith(ROLE_PREFIX) and _text(k[len(ROLE_PREFIX):])}))
            if not found and _text(labels.get(LEGACY_ROLE)):
                found = (labels[LEGACY_ROLE],)
        chosen = {k: v for k, v in labels.items() if _text(v)}
        named = pod_labels(chosen, LabelPolicy(frozenset(allow)))
        return cls(
            name=meta["name"],
            region=next((v for k in REGION if (v := _text(labels.get(k)))), ""),
            zone=next((v for k in ZONE if (v := _text(labels.get(k)))), ""),
            roles=found,
            labels=tuple(("node_" + k, v) for k, v in named),
            cluster=next((v for k in CLUSTER_LABELS if (v := _text(labels.get(k)))), ""),
        )

    def pairs(self) -> Pairs:
        """The labels a series of this node gains, in output order (empty values left out)."""
        out = [("region", self.region), ("zone", self.zone), ("node_role", ",".join(self.roles))]
        return tuple((k, v) for k, v in out if v) + self.labels


async def fetch_node(api: Upstream, name: str, allow: frozenset[str] | tuple[str, ...],
                     roles: bool = True) -> NodeInfo:
    """GET /api/v1/nodes/<name> and read it (the one request the node agent makes of the API
    server for its topology)."""
    resp = await api.request(f"/api/v1/nodes/{quote(name, safe='')}", accept="application/json")
    try:
        obj = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"Node {name}: invalid JSON: {exc}") from None
    return NodeInfo.from_node(obj, allow, roles)


async def fetch_gke_cluster(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> str:
    """The `cluster-name` instance attribute of the GKE metadata server ("" when it has none).
    Opt-in only (`cluster_from: [..., gke_metadata]`): no cloud metadata call is made otherwise."""
    async with session.get(url, headers={"Metadata-Flavor": "Google"},
                           timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        if resp.status == 404:
            return ""
        if resp.status != 200 or resp.headers.get("Metadata-Flavor") != "Google":
            raise UpstreamError(url, resp.status)
        body = await resp.content.read(_MAX_VALUE + 1)
    try:
        return _text(body.decode().strip())
    except UnicodeDecodeError:
        return ""


class NodeTopology:
    """The live NodeInfo of the node this agent runs on (None until the first read).

    Contract for caches: `generation` changes exactly when `pairs()` or `cluster()` may
    answer differently; a cache of anything derived from them compares it."""

    def __init__(self, name: str, cluster_from_labels: bool = True) -> None:
        self.name = name
        self.cluster_from_labels = cluster_from_labels
        self.info: NodeInfo | None = None
        self.platform_cluster = ""  # from an opt-in platform source (GKE metadata), if any
        self.generation = 0
        self.last_sync = 0.0
        self.syncs = 0
        self.errors = 0
        self._pairs: Pairs = ()

    def pairs(self) -> Pairs:
        """region, zone, node_role and node_label_* of this node (none before the first read)."""
        return self._pairs

    def cluster(self) -> str:
        """The cluster's name from a platform source ("" if none knows it)."""
        node = self.info.cluster if self.info is not None and self.cluster_from_labels else ""
        return node or self.platform_cluster

    def replace(self, info: NodeInfo) -> bool:
        """Install a fresh read; True when it changed what series gain."""
        self.last_sync = time.time()
        self.syncs += 1
        if info == self.info:
            return False
        self.info = info
        self._pairs = info.pairs()
        self.generation += 1
        return True

    def set_platform_cluster(self, name: str) -> None:
        """The cluster name an opt-in platform source gave."""
        if name != self.platform_cluster:
            self.platform_cluster = name
            self.generation += 1

    async def run(self, fetch: Callable[[], Awaitable[NodeInfo]], interval: float) -> None:
        """Refresh forever: every `interval`; after a failure sooner (backoff from 1 s), keeping
        the last good read."""
        backoff = 1.0
        while True:
            try:
                if self.replace(await fetch()):
                    log.info("node %s: %s", self.name, dict(self._pairs) or "no topology labels")
                backoff, delay = 1.0, interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last good read
                self.errors += 1
                log.warning("reading Node %s failed (%s); retrying in %.0fs", self.name, exc, backoff)
                delay, backoff = backoff, min(backoff * 2, interval)
            await asyncio.sleep(delay)
