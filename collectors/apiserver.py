"""kube-apiserver: `/metrics` passthrough plus its health checks and component statuses.

`/metrics` (2-3 MB, 16-23k series) is passed through unchanged apart from `collector` and
`cluster` (its series are not pod-scoped: a `namespace`/`pod` label there names an API
object, not the pod the series came from). 401/403 on it is reported as not_permitted:
managed control planes often refuse it, which is not an outage.

`/livez?verbose`, `/readyz?verbose` and `/healthz?verbose` list every check as `[+]name ok`
or `[-]name failed: reason withheld` (the reason is only logged by the apiserver); each
becomes `kubebridge_apiserver_check{endpoint,check}` 1/0 and the endpoint's HTTP status
`kubebridge_apiserver_healthy{endpoint}`. The deprecated ComponentStatus API (scheduler,
controller-manager, etcd; still served in 1.35) gives
`kubebridge_apiserver_componentstatus_healthy{component}`; where it is gone or refused it is
skipped quietly, as is a refused health endpoint.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any
from collections.abc import Sequence

from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import NoDataError, NotPermittedError
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.jsonshape import loads, obj, objs, text
from exporter.kube import client as kube
from exporter.passthrough import Passthrough, options_table
from exporter.registry import Option, register
from exporter.upstream import Response, Upstream

HEALTH_ENDPOINTS = ("livez", "readyz", "healthz")
_CHECK = re.compile(r"^\[([+-])\](\S+) ", re.M)
CHECK = Metric(f"{NAMESPACE}_apiserver_check", "gauge",
               "1 if the apiserver reports the check as passing (or excluded), 0 if failing.",
               ("endpoint", "check"))
HEALTHY = Metric(f"{NAMESPACE}_apiserver_healthy", "gauge",
                 "1 if the health endpoint answered 200, 0 if it answered 500 (a check failed).",
                 ("endpoint",))
COMPONENT = Metric(f"{NAMESPACE}_apiserver_componentstatus_healthy", "gauge",
                   "1 if the deprecated ComponentStatus API reports the component Healthy.",
                   ("component",))


def _endpoints(value: Any) -> str | None:
    bad = [v for v in value if v not in HEALTH_ENDPOINTS]
    return f"unknown health endpoints {bad}; use {', '.join(HEALTH_ENDPOINTS)}" if bad else None


OPTIONS = options_table(**kube.options(
    health_endpoints=Option(HEALTH_ENDPOINTS, _endpoints, "Health endpoints read with ?verbose."),
    componentstatuses=Option(True, help="Read /api/v1/componentstatuses (deprecated API)."),
))


@register("apiserver", default_enabled=False, scope="cluster", options=OPTIONS)
class ApiserverCollector(Passthrough):
    """The API server's own /metrics, health checks and component statuses."""

    path = "/metrics"
    pod_scoped = False

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        super().__init__(deps, cfg)
        self.target = kube.KubeTarget.from_options(cfg.options)
        self._upstream: Upstream | None = None

    async def collect(self, budget: float) -> Sequence[Family]:
        if self._upstream is None:
            self._upstream = await self.target.upstream(self.deps)
        up = self._upstream
        endpoints = self.cfg.options["health_endpoints"]
        results = await asyncio.gather(
            up.request(self.path), *(self._health(up, ep) for ep in endpoints),
            self._components(up), return_exceptions=True)
        for i, res in enumerate(results):  # /metrics first: its 401/403 is the source's status
            if isinstance(res, BaseException) and not (i and _quiet(res)):
                raise res
        metrics = results[0]
        assert isinstance(metrics, Response)  # (exceptions were raised above)
        families = list(await self._transform(metrics))
        b = Builder([CHECK, HEALTHY, COMPONENT], self.deps.labels(self.cfg, node=False))
        for ep, res in zip(endpoints, results[1:-1]):
            if isinstance(res, Response):
                b.add(HEALTHY, 1 if res.status == 200 else 0, {"endpoint": ep})
                for sign, check in _CHECK.findall(res.body.decode("utf-8", "replace")):
                    b.add(CHECK, 1 if sign == "+" else 0, {"endpoint": ep, "check": check})
        if isinstance(results[-1], dict):
            for name, ok in sorted(results[-1].items()):
                b.add(COMPONENT, 1 if ok else 0, {"component": name})
        return [*families, *b.families()]

    async def _health(self, up: Upstream, endpoint: str) -> Response:
        # 500 is an answer (a check failed), not an error.
        return await up.request(f"/{endpoint}?verbose", accept="text/plain", ok_statuses=(500,))

    async def _components(self, up: Upstream) -> dict[str, bool] | None:
        if not self.cfg.options["componentstatuses"]:
            return None
        resp = await up.request("/api/v1/componentstatuses", accept="application/json")
        doc = loads(resp.body, "componentstatuses")
        out = {}
        for item in objs(obj(doc).get("items"))[0]:  # (items of wrong types are skipped)
            name = text(obj(item.get("metadata")).get("name"))
            if name:
                out[name] = any(c.get("type") == "Healthy" and c.get("status") == "True"
                                for c in objs(item.get("conditions"))[0])
        return out


def _quiet(exc: BaseException) -> bool:
    """A refused or absent optional endpoint is skipped; anything else fails the source."""
    return isinstance(exc, (NoDataError, NotPermittedError))
