"""What the framework hands every collector: shared session, upstreams, the pod index."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from exporter.config import Config, Endpoint
from exporter.podindex import PodIndex
from exporter.upstream import TLS, TokenSource, Upstream

if TYPE_CHECKING:
    pass


@dataclass
class Deps:
    """Shared dependencies. `session` is None offline (`kubebridge transform`)."""

    config: Config
    session: aiohttp.ClientSession | None
    index: PodIndex | None
    kubelet: Upstream | None = None

    def upstream(self, ep: Endpoint, max_bytes: int = 256 << 20) -> Upstream:
        """An Upstream for an endpoint (tokens are per endpoint: never shared across hosts)."""
        if self.session is None:
            raise RuntimeError("offline: no upstream access")
        tls = TLS(ep.ca_file, ep.cert_file, ep.key_file, ep.server_name, ep.insecure_skip_verify)
        token = TokenSource(ep.token_file) if ep.token_file else None
        return Upstream(self.session, ep.url, tls=tls, token=token, max_bytes=max_bytes)
