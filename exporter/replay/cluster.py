"""ReplayCluster: everything `kubebridge demo` runs against, on loopback.

- the replay kubelet (node agent sources), with the capture's crash-looping pod shown in
  CrashLoopBackOff;
- the replay apiserver (cluster agent: apiserver, events, kube_system), reached through a
  kubeconfig it writes;
- etcd: a real single member when the `etcd` binary is installed, recorded payloads otherwise;
- small loopback "app" pods whose own metrics autodiscovery finds;
- an app pod pushing DogStatsD to the statsd collector, joined by its pod IP (127.0.0.42).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.replay.apiserver import ReplayApiserver
from exporter.replay.apps import DemoApps
from exporter.replay.etcd import ReplayEtcd
from exporter.replay.kubelet import ReplayKubelet
from exporter.replay.podstatus import crash_loop_backoff
from exporter.replay.statsd_app import SENDER_IP, DemoPusher, add_sender_pod, free_udp_port

# The 1.35 capture's crash-looping container, shown between two restarts as the kubelet reports
# it most of the time (waiting CrashLoopBackOff; the capture caught it just terminated).
CRASH_LOOP = ("scraper", "e2e-container-creating", "alpine")


class ReplayCluster:
    """The replay kubelet, apiserver, etcd and app pods."""

    def __init__(self, workdir: Path, token_file: Path) -> None:
        self.workdir = workdir
        self.token_file = token_file
        self.kubelet = ReplayKubelet.from_package_data(token_file)
        ns, pod, container = CRASH_LOOP
        self.kubelet.update_pod(ns, pod, lambda item: crash_loop_backoff(item, container))
        self.apiserver = ReplayApiserver(None, token_file)
        self.etcd = ReplayEtcd(workdir)
        self.apps = DemoApps()  # autodiscovery: loopback app pods
        self.pusher = DemoPusher(free_udp_port())  # statsd: an app pod pushing DogStatsD
        self.kubelet_url = self.apiserver_url = ""
        self.kubeconfig: Path | None = None

    async def start(self) -> None:
        """Start every part on free loopback ports."""
        self.kubelet_url = await self.kubelet.start()
        self.apiserver_url = await self.apiserver.start()
        self.kubeconfig = self.apiserver.kubeconfig_path(self.workdir)
        await self.etcd.start()
        await self.apps.start(self.kubelet)
        add_sender_pod(self.kubelet, SENDER_IP, labels={"app.kubernetes.io/name": "payments"})
        await self.pusher.start()

    async def stop(self) -> None:
        """Stop every part."""
        await self.pusher.stop()
        await self.apps.stop()
        await self.etcd.stop()
        await self.apiserver.stop()
        await self.kubelet.stop()

    def urls(self) -> dict[str, str]:
        """What the demo prints."""
        etcd = f"{self.etcd.url} ({'real etcd' if self.etcd.real else 'recorded payloads'})"
        return {"kubelet": self.kubelet_url, "apiserver": self.apiserver_url, "etcd": etcd,
                **self.apps.urls(), "statsd app": f"{SENDER_IP} -> udp://127.0.0.1:{self.pusher.port}"}

    def exporter_config(self, listen: str) -> dict[str, Any]:
        """One kubebridge config with the node agent's and the cluster agent's collectors (in a
        cluster they run as a DaemonSet and a Deployment), all pointing at the replay parts."""
        kube = {"enabled": True, "kubeconfig": str(self.kubeconfig)}
        members = {"enabled": True, "members": [{"url": self.etcd.url}]}
        return {
            "listen_address": listen,
            "cluster": "demo",
            "node_name": self.kubelet.node_name,
            "pod_namespace": "kubebridge",
            "pod_refresh_interval": "10s",
            "kubelet": {"url": self.kubelet_url, "token_file": str(self.token_file),
                        "ca_file": str(self.kubelet.ca_file)},
            "collectors": {"cadvisor": {"enabled": True}, "kubelet": {"enabled": True},
                           "probes": {"enabled": True}, "resource": {"enabled": True},
                           "stats_summary": {"enabled": True}, "healthz": {"enabled": True},
                           "pods": {"enabled": True}, "autodiscovery": self.apps.collector_config(),
                           "apiserver": kube, "events": kube, "kube_system": kube,
                           "etcd": members, "etcd_v2": members,
                           "statsd": {"enabled": True, "udp_address": f"127.0.0.1:{self.pusher.port}"}},
        }
