"""kubelet `/metrics/probes`: liveness/readiness/startup probe results, joined per pod."""
from __future__ import annotations

from exporter.passthrough import Passthrough, options_table
from exporter.registry import register


@register("probes", default_enabled=True, options=options_table())
class ProbesCollector(Passthrough):
    """Probe results from the kubelet's /metrics/probes."""

    path = "/metrics/probes"
    may_be_empty = True  # a kubelet with no probes omits the family: the body is empty
