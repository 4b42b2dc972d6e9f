"""kubelet `/metrics/resource`: the compact CPU/memory set metrics-server reads, joined per pod."""
from __future__ import annotations

from exporter.passthrough import Passthrough, options_table
from exporter.registry import register


@register("resource", default_enabled=False, options=options_table())
class ResourceCollector(Passthrough):
    """The kubelet's /metrics/resource (off by default: cadvisor carries the same and more)."""

    path = "/metrics/resource"
