"""What the framework hands every collector: shared session, upstreams, the pod index."""
from __future__ import annotations

from dataclasses import dataclass, field
import aiohttp

from exporter.config import CollectorConfig, Config, Endpoint
from exporter.podindex import PodIndex
from exporter.labels import CommonLabels, NodeLabels
from exporter.upstream import TLS, TokenSource, Upstream


@dataclass
class Deps:
    """Shared dependencies. `session` is None offline (`kubebridge transform`)."""

    config: Config
    session: aiohttp.ClientSession | None
    index: PodIndex | None
    kubelet: Upstream | None = None
    topology: NodeLabels | None = None  # the node agent's own Node (exporter.nodeinfo)
    _labels: dict[tuple[str, bool], CommonLabels] = field(default_factory=dict, repr=False)

    def labels(self, cfg: CollectorConfig, node: bool = True) -> CommonLabels:
        """The common labels and relabel rules (global, then the collector's) of a collector's
        series; `node`: series that name no pod get this node's name (node agent). One object
        per collector and kind, so that its cache of finished label sets lives on."""
        key = (cfg.name, node)
        got = self._labels.get(key)
        if got is None:
            got = self._labels[key] = CommonLabels(
                cfg.name, self.config.cluster, self.config.node_name if node else "",
                self.config.relabel_configs + cfg.relabel_configs, self.topology)
        return got

    def upstream(self, ep: Endpoint, max_bytes: int | None = None, compressed: bool = True) -> Upstream:
        """An Upstream for an endpoint (tokens are per endpoint: never shared across hosts);
        its body cap is `max_bytes`, else the configured `max_body_size` (a collecting
        source's own cap wins: runner.Source)."""
        if self.session is None:
            raise RuntimeError("offline: no upstream access")
        tls = TLS(ep.ca_file, ep.cert_file, ep.key_file, ep.server_name, ep.insecure_skip_verify)
        token = TokenSource(ep.token_file) if ep.token_file else None
        return Upstream(self.session, ep.url, tls=tls, token=token,
                        max_bytes=self.config.max_body_size if max_bytes is None else max_bytes,
                        compressed=compressed, follow_redirects=ep.follow_redirects)
