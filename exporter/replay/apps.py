"""Loopback application pods for the demo and the tests of autodiscovery.

`AppServer` is a small aiohttp app on 127.0.0.1 serving its own metrics (and recording the
headers of every request, so tests can prove no credential reaches a target). `add_app_pod`
puts a pod for it into the replay kubelet through its churn API (`add_pod`, `update_pod`): the
pod is a clone of a captured pod, given the app's container, port, annotations and pod IP 127.0.0.1 (the only
address a test or the demo may scrape). `DemoApps` is what `kubebridge demo` runs.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from exporter.replay.kubelet import ReplayKubelet

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
LOOPBACK = "127.0.0.1"
DEPLOYMENT_POD = "scraper/e2e-deployment-79967c5968-8bnn8"  # a captured Deployment pod to clone


class AppServer:
    """Serves `body` (bytes, or a callable returning bytes) at `path` on 127.0.0.1."""

    def __init__(self, body: bytes | Callable[[], bytes], content_type: str = TEXT,
                 path: str = "/metrics") -> None:
        self.body = body
        self.content_type = content_type
        self.path = path
        self.requests: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        body = self.body() if callable(self.body) else self.body
        return web.Response(body=body, headers={"Content-Type": self.content_type})

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        app = web.Application()
        app.router.add_get(self.path, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, 0).start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def add_app_pod(kubelet: ReplayKubelet, *, container: str, image: str, port: int,
                annotations: Mapping[str, str] = {}, labels: Mapping[str, str] = {},
                port_name: str = "metrics", template: str = DEPLOYMENT_POD,
                host_network: bool = False) -> tuple[str, str]:
    """Add a pod running one app container on 127.0.0.1:`port`; returns its (namespace, name)."""
    key = kubelet.add_pod(template)

    def patch(item: dict) -> None:
        meta, spec, status = item["metadata"], item.setdefault("spec", {}), item.setdefault("status", {})
        meta.setdefault("annotations", {}).update(annotations)
        meta.setdefault("labels", {}).update(labels)
        spec["containers"] = [{"name": container, "image": image,
                               "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}]}]
        spec["hostNetwork"] = host_network
        for cs in status.get("containerStatuses") or []:
            cs.update(name=container, image=image)
        status.update(phase="Running", podIP=LOOPBACK, podIPs=[{"ip": LOOPBACK}])
    # No await between the two calls: no /pods can serve the clone before its patch.
    kubelet.update_pod(*key, patch)
    return key


CHECKOUT = b"""# HELP checkout_orders_total Orders placed.
# TYPE checkout_orders_total counter
checkout_orders_total{payment="card"} %d
checkout_orders_total{payment="voucher"} 7
# HELP checkout_request_duration_seconds Request latency.
# TYPE checkout_request_duration_seconds histogram
checkout_request_duration_seconds_bucket{le="0.1"} 90
checkout_request_duration_seconds_bucket{le="1"} 99
checkout_request_duration_seconds_bucket{le="+Inf"} 100
checkout_request_duration_seconds_sum 12.5
checkout_request_duration_seconds_count 100
"""
CART = b"""# TYPE cart_items gauge
# HELP cart_items Items in open carts.
cart_items{currency="EUR"} 42
# TYPE cart_checkouts counter
cart_checkouts_total 1027
# EOF
"""


class DemoApps:
    """Two app pods for `kubebridge demo`: `checkout` (a `kubebridge.io/app.check` annotation,
    text 0.0.4) and `cart` (`prometheus.io/*` annotations, OpenMetrics)."""

    def __init__(self) -> None:
        self.hits = 0
        self.servers = [AppServer(self._checkout), AppServer(CART, OPENMETRICS)]

    def _checkout(self) -> bytes:
        self.hits += 1
        return CHECKOUT % (1000 + self.hits)

    async def start(self, kubelet: ReplayKubelet) -> None:
        """Start the servers and add their pods to the replay kubelet."""
        checkout, cart = [await s.start() for s in self.servers]
        check = {"port": "%%port_metrics%%", "path": "/metrics", "labels": {"team": "payments"}}
        add_app_pod(kubelet, container="app", image="registry.example.com/shop/checkout:1.4", port=checkout,
                    annotations={"kubebridge.io/app.check": json.dumps(check)},
                    labels={"app.kubernetes.io/name": "checkout"})
        add_app_pod(kubelet, container="app", image="registry.example.com/shop/cart:2.0", port=cart,
                    annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(cart)},
                    labels={"app.kubernetes.io/name": "cart"})

    async def stop(self) -> None:
        for s in self.servers:
            await s.stop()

    def collector_config(self) -> dict[str, Any]:
        """`collectors.autodiscovery` for the demo: only loopback pod IPs are ever scraped."""
        return {"enabled": True, "templates_path": "", "networks": [f"{LOOPBACK}/8"]}

    def urls(self) -> dict[str, str]:
        return {f"app {i + 1}": f"http://{LOOPBACK}:{s.port}/metrics" for i, s in enumerate(self.servers)}
