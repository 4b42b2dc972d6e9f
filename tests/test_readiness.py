"""Readiness means "can serve": a kubelet that refuses `/pods` (403, the RBAC of Kubernetes
< 1.33 without nodes/proxy) is reported by a metric, one log line and the landing page, and
does not keep the node agent NotReady. An unreachable kubelet still does."""
from __future__ import annotations

import asyncio
import logging

from exporter import config as config_mod
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.realprom import free_port


def node_agent(replay: ReplayKubelet, url: str | None = None) -> config_mod.Config:
    return config_mod.parse({
        "cluster": "c1", "pod_refresh_interval": "0.2s", "node_name": replay.node_name,
        "kubelet": {"url": url or replay.base_url, "token_file": str(replay.token_file),
                    "ca_file": str(replay.ca_file)}}, env={})


async def wait_status(client, path: str, status: int, deadline: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        if (await client.get(path)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}")


def sample(text: str, prefix: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


async def test_forbidden_pods_is_reported_not_blocking(replay, aiohttp_client, caplog):
    replay.forbidden_paths.add("/pods")
    caplog.set_level(logging.INFO)
    client = await aiohttp_client(build_app(node_agent(replay)))
    await wait_status(client, "/readyz", 200)
    body = await (await client.get("/metrics")).text()
    assert sample(body, 'kubebridge_pod_index_status{status="not_permitted"') == 1
    assert sample(body, 'kubebridge_pod_index_status{status="ok"') == 0
    # Series are still served, without pod labels: the cadvisor source is up.
    assert sample(body, 'kubebridge_up{collector="cadvisor"') == 1
    # Several refreshes later (0.2 s apart), the refusal has been logged once.
    await asyncio.sleep(1.0)
    refusals = [r for r in caplog.records if "refused the pod list" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert "nodes/proxy" in refusals[0].getMessage() and "object at 0x" not in refusals[0].getMessage()
    page = await (await client.get("/")).text()
    assert 'id="pod-index"' in page and "not_permitted" in page and "nodes/pods" in page
    # Permission granted later: the index syncs and says so.
    replay.forbidden_paths.discard("/pods")
    for _ in range(200):
        body = await (await client.get("/metrics")).text()
        if sample(body, 'kubebridge_pod_index_status{status="ok"') == 1:
            break
        await asyncio.sleep(0.05)
    assert sample(body, 'kubebridge_pod_index_status{status="ok"') == 1
    assert sample(body, "kubebridge_pod_index_pods") > 0


async def test_unreachable_kubelet_is_not_ready(replay, aiohttp_client):
    closed = f"https://127.0.0.1:{free_port()}"
    client = await aiohttp_client(build_app(node_agent(replay, closed)))
    for _ in range(20):  # a few refresh attempts (1 s backoff): still not ready
        assert (await client.get("/readyz")).status == 503
        await asyncio.sleep(0.05)
    body = await (await client.get("/metrics")).text()
    assert sample(body, 'kubebridge_pod_index_status{status="down"') == 1
    assert "object at 0x" not in body
    page = await (await client.get("/")).text()
    assert "cannot connect to 127.0.0.1" in page and "object at 0x" not in page
