"""kubelet `/healthz?verbose`: the kubelet's own health checks, and whether it answers at all.

The verbose body is k8s.io/apiserver's healthz format, one line per check: `[+]ping ok`,
`[-]syncloop failed: reason withheld` (the reason is never shown on this endpoint), then
`healthz check passed|failed`. A failing check makes the kubelet answer 500 WITH that body: here
a 500 is data (the kubelet is up and unhealthy), not a collection failure.

Reachability is data too: `kubebridge_healthz_up` is 0 when the kubelet does not answer (refused,
reset, or no answer within 90 % of the scrape budget), and the source itself stays ok; 401/403
(our RBAC) and TLS verification failures (our configuration) are raised as usual.

Container runtime health, honestly: today's kubelet has no runtime check on /healthz (very old
ones had `docker` and `pleg` checks). What remains is `syncloop`: when the
runtime is down or PLEG is unhealthy, the kubelet's sync loop skips every iteration ("Skipping pod
synchronization") without recording progress, and `syncloop` fails once no iteration completed for
max(2 x sync-frequency, 5 min). `kubebridge_healthz_runtime_healthy` is that check (ANDed with
`pleg`/`docker` where an old kubelet still has them): it lags a runtime outage by ~5 minutes, and
a sync loop stuck for another reason (e.g. housekeeping) also turns it 0. Absent when the body
lists none of these checks. `kubelet_runtime_operations_errors_total` (kubelet collector) is the
finer, per-operation view.
"""
from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence

import aiohttp

from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.transform import Result
from exporter.registry import register

PATH = "/healthz?verbose"
RUNTIME_CHECKS = ("syncloop", "pleg", "docker")
_CHECK = re.compile(r"^\[([+-])\]([^\s]+) (ok|failed)", re.M)

UP = Metric(f"{NAMESPACE}_healthz_up", "gauge", "1 if the kubelet answered /healthz, 0 if it could "
            "not be reached.")
HEALTHY = Metric(f"{NAMESPACE}_healthz_healthy", "gauge", "1 if every kubelet health check passed "
                 "(HTTP 200), else 0.")
CHECK = Metric(f"{NAMESPACE}_healthz_check", "gauge", "1 if the kubelet health check passed, else 0.",
               ("check",))
RUNTIME = Metric(f"{NAMESPACE}_healthz_runtime_healthy", "gauge", "The kubelet's sync loop (and "
                 "pleg/docker checks where present) is healthy: 0 ~5 min after the container "
                 "runtime goes down.")
TABLE = (UP, HEALTHY, CHECK, RUNTIME)


def checks(body: str) -> dict[str, bool]:
    """Check name -> passed, from a verbose healthz body (empty for a plain `ok`)."""
    return {m.group(2): m.group(1) == "+" for m in _CHECK.finditer(body)}


def fill(b: Builder, body: str, status: int | None) -> None:
    """One answer -> samples; `status` None offline (health is then read from the body)."""
    found = checks(body)
    b.add(UP, 1.0)
    failed = "healthz check failed" in body or not all(found.values())
    b.add(HEALTHY, 1.0 if (status == 200 if status is not None else not failed) else 0.0)
    for name in sorted(found):
        b.add(CHECK, 1.0 if found[name] else 0.0, {"check": name})
    runtime = [found[c] for c in RUNTIME_CHECKS if c in found]
    if runtime:
        b.add(RUNTIME, 1.0 if all(runtime) else 0.0)


@register("healthz", default_enabled=True)
class HealthzCollector:
    """The kubelet's /healthz checks, its reachability, and the runtime signal it carries."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        self.labels = deps.labels(cfg)

    async def collect(self, budget: float) -> Sequence[Family]:
        """Ask the kubelet; an unreachable kubelet is reported as healthz_up 0."""
        if self.deps.kubelet is None:
            raise RuntimeError("no kubelet upstream configured")
        try:
            async with asyncio.timeout(budget * 0.9):
                resp = await self.deps.kubelet.request(PATH, accept="text/plain", ok_statuses=(500,))
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError):
            raise  # our trust configuration, not the kubelet's health
        except (aiohttp.ClientConnectionError, OSError, TimeoutError):
            b = Builder(TABLE, self.labels)
            b.add(UP, 0.0)
            self.stats = {"series_out": b.samples}
            return b.families()
        return self._convert(resp.body, resp.status).families

    def process(self, payload: bytes) -> Result:
        """Offline entry point (`kubebridge transform --source healthz BODY`)."""
        return self._convert(payload, None)

    def _convert(self, payload: bytes, status: int | None) -> Result:
        b = Builder(TABLE, self.labels)
        fill(b, payload.decode("utf-8", "replace"), status)
        self.stats = {"response_bytes": len(payload), "series_out": b.samples}
        return b.result()
