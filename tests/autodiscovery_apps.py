"""Shared by the autodiscovery and sidecar tests: app payloads, app servers on 127.0.0.1, a
replay kubelet, pod items, and a scrape-until-true helper (polling with a deadline)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from collectors.autodiscovery import AutodiscoveryCollector
from exporter import config as config_mod
from exporter.deps import Deps
from exporter.merge import merge
from exporter.registry import registrations
from exporter.replay.apps import AppServer
from exporter.replay.kubelet import ReplayKubelet
from tests.conftest import FIXTURES, pod_index
from tests.etcd_cluster import Series

StartApp = Callable[..., Awaitable[AppServer]]

LOOPBACK = ["127.0.0.0/8"]
TEXT_APP = b"""# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total{code="200",pod="upstream-pod"} 12
app_requests_total{code="500"} 1
# TYPE app_temperature_celsius gauge
app_temperature_celsius 21.5
"""
OM_APP = b"""# TYPE om_jobs counter
# HELP om_jobs Jobs done.
om_jobs_total{queue="a"} 3
om_jobs_created{queue="a"} 1.7e+09
# TYPE om_size_bytes gauge
# UNIT om_size_bytes bytes
om_size_bytes 1024
# EOF
"""
ESCAPES = b"""# HELP esc_info Label values with escapes: a \\\\ backslash and a \\n newline.
# TYPE esc_info gauge
esc_info{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} 1
"""
DEFAULTS_OFF = {r.name: {"enabled": False} for r in registrations() if r.default_enabled}


def pod(name: str, *, ns: str = "shop", ip: str = "127.0.0.1", containers=None, annotations=None,
        labels=None, host_network: bool = False, phase: str = "Running", node: str = "n1") -> dict:
    """A kubelet /pods item of a Deployment's pod (workload `web`)."""
    default = [("app", "r.example.com/team/app:1", [("metrics", 9000)])]
    conts = containers if containers is not None else default
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "labels": {"app": "web", "pod-template-hash": "7d9f8", **(labels or {})},
                         "annotations": annotations or {},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8",
                                              "controller": True}]},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": c, "image": img, "ports": [
                         {"name": pn, "containerPort": p, "protocol": "TCP"} for pn, p in ports]}
                         for c, img, ports in conts]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


def check(**doc) -> dict[str, str]:
    """The annotation asking kubebridge to scrape container `app` with this template."""
    return {"kubebridge.io/app.check": json.dumps(doc)}


def make(items: list[dict], *, listen: str = "127.0.0.1:9500", **opts) -> AutodiscoveryCollector:
    """An autodiscovery collector over a PodIndex of `items` (node n1, cluster c1)."""
    section = {"enabled": True, "templates_path": "", "networks": LOOPBACK, **opts}
    cfg = config_mod.parse({"cluster": "c1", "node_name": "n1", "listen_address": listen,
                            "collectors": {"autodiscovery": section}}, env={})
    index = pod_index({"items": items}, cfg)
    return AutodiscoveryCollector(Deps(cfg, None, index), cfg.collectors["autodiscovery"])


async def collect(c: AutodiscoveryCollector) -> Series:
    return Series(merge([("autodiscovery", await c.collect(5.0))])[0])


@contextlib.asynccontextmanager
async def app_servers() -> AsyncIterator[StartApp]:
    """`start(body, content_type, path)` starts one app server; all are stopped on exit."""
    started: list[AppServer] = []

    async def start(body=TEXT_APP, content_type="text/plain; version=0.0.4", path="/metrics") -> AppServer:
        server = AppServer(body, content_type, path)
        await server.start()
        started.append(server)
        return server
    try:
        yield start
    finally:
        for server in started:
            await server.stop()


@contextlib.asynccontextmanager
async def replay_kubelet(tmp_path: Path) -> AsyncIterator[ReplayKubelet]:
    """The replay kubelet of the 1.35 capture, on a free loopback port."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(16))
    replay = ReplayKubelet.from_fixtures(FIXTURES, token_file=token)
    await replay.start()
    try:
        yield replay
    finally:
        await replay.stop()


def app_config(replay: ReplayKubelet, **autodiscovery) -> config_mod.Config:
    """Only autodiscovery (plus the pod index it needs), against the replay kubelet."""
    return config_mod.parse({
        "cluster": "e2e", "pod_refresh_interval": "0.2s", "node_name": replay.node_name,
        "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                    "ca_file": str(replay.ca_file)},
        "collectors": {**DEFAULTS_OFF, "autodiscovery": {
            "enabled": True, "templates_path": "", "networks": LOOPBACK, **autodiscovery}}}, env={})


async def scrape_until(client, predicate, deadline: float = 15.0) -> str:
    """Scrape kubebridge until `predicate(text)` holds (polling with a deadline), return the text."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        resp = await client.get("/metrics")
        text = (await resp.read()).decode()
        if predicate(text) or loop.time() > end:
            return text
        await asyncio.sleep(0.05)
