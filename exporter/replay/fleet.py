"""ReplayFleet: a replay cluster of many nodes, for the cluster-wide (sharded) collector.

N replay kubelets on 127.0.0.1, each on its own port, each serving the 1.35 capture as a
distinct node `<prefix>-<i>`: its pods are renamed `<name>-<node>` (a static pod
`<manifest>-<capture node>` becomes `<manifest>-<node>`, as the kubelet names it), so every
pod is unique in the cluster; its `/pods`, `/metrics/cadvisor` and `/stats/summary` agree.
One replay API server holds a Node object per kubelet (the minikube capture's shape, with
`InternalIP` 127.0.0.1, `daemonEndpoints.kubeletEndpoint.Port` = the kubelet's port, and
region/zone labels) and every node's pods with `spec.nodeName` set; the capture's own nodes
are removed. Nodes can be added and removed while running (`add_node`, `remove_node`).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

from exporter.replay import paths
from exporter.replay.apiserver import ReplayApiserver
from exporter.replay.kubelet import ReplayKubelet

VERSION = "1.35"
_POD = re.compile(rb'\bpod="([^"]*)"')
NODE_TEMPLATE = "k9s-node-minikube-2019-12.json"  # a real Node object (tests/fixtures/kube_system)


@dataclass(frozen=True)
class FleetNode:
    """One node of the fleet: its name, kubelet and topology."""

    name: str
    kubelet: ReplayKubelet
    region: str
    zone: str


def regions(i: int) -> tuple[str, str]:
    """Node i's region and zone: two regions, three zones each, round robin."""
    region = ("europe-west1", "us-east1")[i % 2]
    return region, f"{region}-{'bcd'[(i // 2) % 3]}"


class ReplayFleet:
    """Many replay kubelets behind one replay API server."""

    def __init__(self, token_file: Path, node_template: dict, *, prefix: str = "node") -> None:
        self.token_file = Path(token_file)
        self.node_template = node_template
        self.prefix = prefix
        self.apiserver = ReplayApiserver(None, self.token_file)
        self.nodes: dict[str, FleetNode] = {}
        self._next = 0
        def read(name: str) -> bytes:
            return paths.data_file(name).read_bytes()
        self._capture = {
            "cadvisor": read(paths.CADVISOR.format(version=VERSION)),
            "pods": json.loads(read(paths.PODS.format(version=VERSION))),
            "summary": json.loads(read(paths.STATS_SUMMARY.format(version=VERSION))),
            "metrics": read(paths.KUBELET_METRICS), "probes": read(paths.PROBES), "slis": read(paths.SLIS),
        }

    async def start(self, count: int) -> None:
        """The API server (capture nodes removed) and `count` nodes."""
        await self.apiserver.start()
        for key in list(self.apiserver.store.objects["nodes"]):
            self.apiserver.store.delete("nodes", "", key[1])
        for _ in range(count):
            await self.add_node()

    async def stop(self) -> None:
        for node in list(self.nodes.values()):
            await node.kubelet.stop()
        self.nodes.clear()
        await self.apiserver.stop()

    async def add_node(self) -> FleetNode:
        """Start one more kubelet and create its Node and pods."""
        i = self._next
        self._next += 1
        name = f"{self.prefix}-{i}"
        kubelet = self._kubelet(name)
        await kubelet.start()
        region, zone = regions(i)
        node = self.nodes[name] = FleetNode(name, kubelet, region, zone)
        self.apiserver.put_node(self.node_object(node))
        self.apiserver.proxy_node(name, kubelet.base_url or "", kubelet.ca_file)
        for pod in kubelet.podlist["items"]:
            self.apiserver.add_pod(copy.deepcopy(pod))
        return node

    async def remove_node(self, name: str) -> None:
        """Delete the Node and its pods, and stop its kubelet."""
        node = self.nodes.pop(name)
        for pod in node.kubelet.podlist["items"]:
            self.apiserver.delete_pod(pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
        self.apiserver.store.delete("nodes", "", name)
        await node.kubelet.stop()

    def node_object(self, node: FleetNode) -> dict:
        """The Node object of a fleet node."""
        obj = copy.deepcopy(self.node_template)
        meta = obj["metadata"]
        for k in ("resourceVersion", "uid", "selfLink"):
            meta.pop(k, None)
        meta["name"] = node.name
        meta["labels"] = {**meta.get("labels", {}), "kubernetes.io/hostname": node.name,
                          "topology.kubernetes.io/region": node.region,
                          "topology.kubernetes.io/zone": node.zone}
        port = int((node.kubelet.base_url or ":0").rsplit(":", 1)[1])
        status = obj.setdefault("status", {})
        status["addresses"] = [{"type": "InternalIP", "address": "127.0.0.1"},
                               {"type": "Hostname", "address": node.name}]
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        return obj

    def _kubelet(self, name: str) -> ReplayKubelet:
        cap = self._capture
        old_node = cap["summary"]["node"]["nodeName"]
        pods = copy.deepcopy(cap["pods"])
        renamed: dict[bytes, bytes] = {}
        for item in pods["items"]:
            meta = item["metadata"]
            old = meta["name"]
            new = old[: -len(old_node)] + name if old.endswith("-" + old_node) else f"{old}-{name}"
            renamed[old.encode()] = new.encode()
            meta["name"] = new
            item.setdefault("spec", {})["nodeName"] = name
        summary = copy.deepcopy(cap["summary"])
        summary["node"]["nodeName"] = name
        for entry in summary.get("pods", []):
            ref = entry["podRef"]
            ref["name"] = renamed.get(ref["name"].encode(), ref["name"].encode()).decode()
        cadvisor = _POD.sub(lambda m: b'pod="' + renamed.get(m.group(1), m.group(1)) + b'"', cap["cadvisor"])
        return ReplayKubelet(cadvisor=cadvisor, pods=pods, metrics=cap["metrics"], probes=cap["probes"],
                             stats_summary=summary, token_file=self.token_file, node_name=name,
                             slis=cap["slis"])
