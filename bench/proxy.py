"""The cost of reaching the kubelet through the API server's node proxy, on one machine.

The replay kubelet (the 1.35 capture) and the replay API server (its
/api/v1/nodes/<node>/proxy/ forwards to that kubelet) run on 127.0.0.1. One kubebridge app
reads the kubelet directly, another through the proxy, with the default node collectors; each
is scraped `--scrapes` times in turn. Printed: the mean and 90th percentile /metrics duration
of each, the kubelet payload per scrape (decoded) and the bytes the API server relayed per
scrape (as sent: kubebridge asks for gzip through the proxy; a pod index refresh of /pods
falls in some scrapes).

    python -m bench.proxy --scrapes 30

Numbers are printed, never judged. The replay API server is a Python process: the absolute
proxy overhead of a real kube-apiserver differs; the bytes are the same.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path


from exporter import config as config_mod, plugins
from exporter.replay.apiserver import ReplayApiserver
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app

_BYTES = re.compile(rb'^kubebridge_upstream_response_bytes\{collector="([a-z_]+)"[^}]*\} (\S+)$', re.M)


async def _measure(cfg: config_mod.Config, scrapes: int,
                   api: ReplayApiserver) -> tuple[list[float], float, float, float]:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(build_app(cfg))) as client:
        for _ in range(200):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.05)
        await client.get("/metrics")  # warm: the engine's plans exist from here on
        times, body = [], b""
        wire, requests = api.proxied_bytes, sum("/proxy/" in p for p in api.requests)
        for _ in range(scrapes):
            start = time.perf_counter()
            resp = await client.get("/metrics")
            body = await resp.read()
            times.append(time.perf_counter() - start)
        relayed = sum(float(v) for _, v in _BYTES.findall(body))
        requests = sum("/proxy/" in p for p in api.requests) - requests
        return times, relayed, (api.proxied_bytes - wire) / scrapes, requests / scrapes


async def main(scrapes: int) -> None:
    plugins.load()
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("bench-proxy-token\n")
        kubelet = ReplayKubelet.from_package_data(token)
        api = ReplayApiserver(None, token)
        await kubelet.start()
        await api.start()
        try:
            assert kubelet.base_url and api.base_url
            api.proxy_node(kubelet.node_name, kubelet.base_url, kubelet.ca_file)
            direct = {"url": kubelet.base_url, "token_file": str(token), "ca_file": str(kubelet.ca_file)}
            proxied = {"url": f"{api.base_url}/api/v1/nodes/$NODE_NAME/proxy", "token_file": str(token),
                       "ca_file": str(api.ca_file)}
            for name, ep in (("direct", direct), ("apiserver proxy", proxied)):
                cfg = config_mod.parse({"node_name": kubelet.node_name, "kubelet": ep}, env={})
                times, relayed, wire, requests = await _measure(cfg, scrapes, api)
                p90 = statistics.quantiles(times, n=10)[-1] if len(times) >= 2 else times[0]
                print(f"{name:16} mean {statistics.mean(times) * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms  "
                      f"kubelet payload per scrape {relayed / 1e6:.2f} MB  "
                      f"relayed by the API server {wire / 1e6:.2f} MB in {requests:.1f} requests")
        finally:
            await api.stop()
            await kubelet.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=30)
    asyncio.run(main(ap.parse_args().scrapes))
