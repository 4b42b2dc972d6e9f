"""DemoCluster: the replay cluster `kubebridge demo` runs, with what makes every dashboard panel
show something: three nodes, a kubelet `/metrics` and `/metrics/probes` consistent with the pods
each node serves (`kubeletmetrics`), and events that keep coming (`eventgen`).

- Node 1 is the 1.35 capture (`ReplayCluster.kubelet`). Nodes 2.. are further replay kubelets
  holding fresh clones of captured Deployment and DaemonSet pods (new names, UIDs, container
  IDs; `spec.nodeName` set to the node), which the replay apiserver also lists.
- One kubebridge node agent runs per node (in a cluster: the DaemonSet); node 1's is the one
  that also runs the cluster agent's collectors (`ReplayCluster.exporter_config`).
- A readiness probe of one captured pod fails one time in three; its Unhealthy events and the
  crash-looping pod's BackOff events repeat on every tick of the generator, and the crash-looping
  container is restarted (and crashes again) every 30 s.
- Real etcd gets a write every 2 s (a lease renewal), so its commit and fsync latencies move.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from exporter.replay.advance import Advance
from exporter.replay.apps import add_app_pod
from exporter.replay.cluster import CRASH_LOOP, ReplayCluster
from exporter.replay.eventgen import EventGenerator, PodRef, pod_ref
from exporter.replay.kubelet import ReplayKubelet
from exporter.replay.kubeletmetrics import render_metrics, render_probes
from exporter.replay.podstatus import crash_loop_backoff, running_again

# A captured pod whose readiness probe fails now and then (container, as in the 1.35 /pods).
FAILING_PROBE = ("kube-system", "metrics-server-9d74bb658-c6nnt", "metrics-server")
# On the newest node, the kube-proxy clone is still being created (its image being pulled), as a
# DaemonSet pod on a node that just joined is.
CREATING = ("kube-system", "kube-proxy-")  # namespace, name prefix (clones get a fresh suffix)
OWN_POD_TEMPLATE = "kube-system/kindnet-zkpn8"
# Captured pods the extra nodes run clones of: Deployments and DaemonSets schedule there.
EXTRA_NODE_PODS = (
    "scraper/e2e-deployment-79967c5968-8bnn8", "scraper/e2e-deployment-79967c5968-zjslc",
    "scraper/e2e-hpa-6cd8d99884-tggnr", "scraper/e2e-daemonset-kb65b", "kube-system/kindnet-zkpn8",
    "kube-system/kube-proxy-8k9zt", "kube-system/coredns-7d764666f9-qdcxt",
)
NODE_COLLECTORS = ("cadvisor", "kubelet", "probes", "resource", "stats_summary", "healthz", "pods")


def make_live(kubelet: ReplayKubelet, started: float, failing: tuple[str, str, str] | None = None) -> None:
    """Serve the derived `/metrics` and `/metrics/probes` of the pods this kubelet holds, and its
    cAdvisor counters advancing at the capture's pace (`advance`)."""
    bad = [failing] if failing else []
    kubelet.cadvisor_filter = Advance(started)
    kubelet.metrics = lambda: render_metrics(kubelet.podlist, time.monotonic() - started,
                                             node_name=kubelet.node_name)
    kubelet.probes = lambda: render_probes(kubelet.podlist, time.monotonic() - started, bad)


def extra_node(token_file: Path, number: int, started: float) -> ReplayKubelet:
    """Replay kubelet `number` (2, 3, ...): clones of EXTRA_NODE_PODS on node `datagen-1-35-w<n>`."""
    name = f"datagen-1-35-w{number}"
    kubelet = ReplayKubelet.from_package_data(token_file, node_name=name, seed=number)
    kubelet.node.scale(0)
    if kubelet.node.summary is not None:
        kubelet.node.summary.setdefault("node", {})["nodeName"] = name
    for template in EXTRA_NODE_PODS:
        ns, pod = kubelet.add_pod(template)

        def place(item: dict) -> None:
            item.setdefault("spec", {})["nodeName"] = name
        kubelet.update_pod(ns, pod, place)
    make_live(kubelet, started)
    return kubelet


def container_creating(item: dict) -> None:
    """The pod's containers wait in ContainerCreating: not started, not ready, phase Pending."""
    status = item.setdefault("status", {})
    status["phase"] = "Pending"
    for cs in status.get("containerStatuses") or []:
        cs.update(state={"waiting": {"reason": "ContainerCreating"}}, ready=False, started=False,
                  restartCount=0, lastState={})
        cs.pop("containerID", None)
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Ready", "ContainersReady"):
            cond.update(status="False", reason="ContainersNotReady",
                        message="containers with unready status: [kube-proxy]")


def own_pod(kubelet: ReplayKubelet) -> None:
    """kubebridge's own node agent pod on the node (the demo's process stands for it), so the Self
    dashboard has a pod to show: a clone of the captured kindnet DaemonSet pod (host network, as
    the node agent), owned by a DaemonSet `kubebridge`; its cAdvisor series are kindnet's."""
    ns, name = add_app_pod(kubelet, container="kubebridge", image="ghcr.io/kubebridge/kubebridge:demo",
                           port=9500, labels={"app.kubernetes.io/name": "kubebridge"},
                           template=OWN_POD_TEMPLATE, host_network=True)

    def own(item: dict) -> None:
        meta = item["metadata"]
        meta["labels"] = {"app.kubernetes.io/name": "kubebridge"}
        for owner in meta.get("ownerReferences") or []:
            owner["name"] = "kubebridge"
        item["spec"]["nodeName"] = kubelet.node_name
    kubelet.update_pod(ns, name, own)


def _find(kubelet: ReplayKubelet, namespace: str, name: str) -> dict | None:
    for item in kubelet.podlist.get("items", []):
        meta = item.get("metadata", {})
        if (meta.get("namespace"), meta.get("name")) == (namespace, name):
            return item
    return None


async def lease_renewals(url: str, interval: float = 2.0) -> None:
    """Write to etcd as a control plane does all the time (leader-election leases renewed every
    2 s), so its commit, fsync and proposal metrics move: a v3 put through the JSON gateway."""
    key = base64.b64encode(b"/registry/leases/kube-system/kube-controller-manager").decode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            value = base64.b64encode(json.dumps({"renewTime": time.time()}).encode()).decode()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url + "/v3/kv/put", json={"key": key, "value": value}) as resp:
                    await resp.read()
            await asyncio.sleep(interval)


async def crash_loop(kubelet: ReplayKubelet, interval: float = 30.0) -> None:
    """The crash-looping container keeps crashing: every `interval` the kubelet restarts it
    (restartCount + 1) and it fails at once, back in CrashLoopBackOff (`podstatus`)."""
    ns, pod, container = CRASH_LOOP

    def restart(item: dict) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        running_again(item, container, now)
        for cs in item["status"]["containerStatuses"]:
            if cs["name"] == container:  # the run ends at once, as the kubelet then reports it
                cs["state"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now,
                                              "finishedAt": now}}
        crash_loop_backoff(item, container)
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(KeyError):  # churn may have removed it
            kubelet.update_pod(ns, pod, restart)


class DemoCluster(ReplayCluster):
    """ReplayCluster plus the extra nodes, live kubelet metrics and the event generator."""

    def __init__(self, workdir: Path, token_file: Path, nodes: int = 3) -> None:
        super().__init__(workdir, token_file)
        self.started = time.monotonic()
        make_live(self.kubelet, self.started, FAILING_PROBE)
        self.apiserver.metrics_filter = Advance(self.started)
        self.extra = [extra_node(token_file, n, self.started) for n in range(2, max(nodes, 1) + 1)]
        for kubelet in (self.kubelet, *self.extra):
            own_pod(kubelet)
        if self.extra:
            newest = self.extra[-1]
            creating = next(k for k in newest.node.pod_keys()
                            if k[0] == CREATING[0] and k[1].startswith(CREATING[1]))
            newest.update_pod(*creating, container_creating)
        crash = _find(self.kubelet, CRASH_LOOP[0], CRASH_LOOP[1])
        probe = _find(self.kubelet, FAILING_PROBE[0], FAILING_PROBE[1])
        self.events = EventGenerator(
            self.apiserver, crash_loop=pod_ref(crash, CRASH_LOOP[2]) if crash else None,
            failing_probe=pod_ref(probe, FAILING_PROBE[2]) if probe else None, churn=self._churn)
        self.extra_urls: list[str] = []
        self._tasks: list[asyncio.Task] = []  # the crash loop, etcd lease renewals

    def _churn(self) -> list[PodRef]:
        """Pods whose rollouts the generator replays: the Deployment pods of every node."""
        refs = []
        for kubelet in (self.kubelet, *self.extra):
            for item in kubelet.podlist.get("items", []):
                owners = item.get("metadata", {}).get("ownerReferences") or [{}]
                if owners[0].get("kind") == "ReplicaSet" and item.get("status", {}).get("phase") == "Running":
                    refs.append(pod_ref(item))
        return refs

    async def start(self) -> None:
        await super().start()
        for kubelet in self.extra:
            self.extra_urls.append(await kubelet.start())
            for item in kubelet.podlist.get("items", []):
                self.apiserver.add_pod(copy.deepcopy(item))
        self.events.start()
        self._tasks.append(asyncio.create_task(crash_loop(self.kubelet)))
        if self.etcd.real:
            self._tasks.append(asyncio.create_task(lease_renewals(self.etcd.url)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.events.stop()
        for kubelet in self.extra:
            await kubelet.stop()
        await super().stop()

    def urls(self) -> dict[str, str]:
        extra = {f"kubelet {k.node_name}": url for k, url in zip(self.extra, self.extra_urls, strict=False)}
        return {**super().urls(), **extra}

    def node_agent_configs(self, listen: str) -> list[dict[str, Any]]:
        """The node agents of nodes 2..: node-scoped collectors against their replay kubelet;
        `listen` is a host:port (port 0 for any free one), the same for each."""
        base = self.exporter_config(listen)
        out = []
        for kubelet, url in zip(self.extra, self.extra_urls, strict=True):
            cfg = copy.deepcopy(base)
            cfg["node_name"] = kubelet.node_name
            cfg["kubelet"]["url"] = url
            cfg["collectors"] = {name: base["collectors"][name] for name in NODE_COLLECTORS}
            out.append(cfg)
        return out
