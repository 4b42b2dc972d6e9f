"""ReplayCluster: everything `kubebridge demo` runs against, on loopback.

Today: the replay kubelet (node agent sources). The cluster agent parts (replay apiserver,
etcd) join here as they land; each part contributes its URLs and its exporter config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.replay.kubelet import ReplayKubelet


class ReplayCluster:
    """The replay kubelet (and, when present, the cluster-agent upstreams)."""

    def __init__(self, workdir: Path, token_file: Path) -> None:
        self.workdir = workdir
        self.token_file = token_file
        self.kubelet = ReplayKubelet.from_package_data(token_file)
        self.kubelet_url = ""

    async def start(self) -> None:
        """Start every part on free loopback ports."""
        self.kubelet_url = await self.kubelet.start()

    async def stop(self) -> None:
        """Stop every part."""
        await self.kubelet.stop()

    def urls(self) -> dict[str, str]:
        """What the demo prints."""
        return {"kubelet": self.kubelet_url}

    def exporter_config(self, listen: str) -> dict[str, Any]:
        """A kubebridge config document pointing at the replay parts (TLS verified, token)."""
        return {
            "listen_address": listen,
            "cluster": "demo",
            "node_name": self.kubelet.node_name,
            "pod_refresh_interval": "10s",
            "kubelet": {"url": self.kubelet_url, "token_file": str(self.token_file),
                        "ca_file": str(self.kubelet.ca_file)},
            "collectors": {"cadvisor": {"enabled": True}, "kubelet": {"enabled": True},
                           "probes": {"enabled": True}, "resource": {"enabled": True}},
        }
