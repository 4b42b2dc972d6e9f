"""kubelet `/metrics`: the kubelet's own metrics (pod-naming series are joined)."""
from __future__ import annotations

from exporter.passthrough import Passthrough, options_table
from exporter.registry import register


@register("kubelet", default_enabled=True, options=options_table())
class KubeletCollector(Passthrough):
    """The kubelet's own /metrics."""

    path = "/metrics"
