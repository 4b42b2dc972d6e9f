"""What a shard of the cluster collector costs per node it owns, on one machine.

A replay fleet (exporter/replay/fleet.py: `--nodes` replay kubelets on 127.0.0.1 serving the
1.35 capture as distinct nodes, one replay API server with their Nodes and pods) is collected
by `--shards` apps (the default node collectors), each scraped `--scrapes` times in turn
after a warm-up scrape. Printed per shard: nodes owned, /metrics mean and 90th percentile,
body bytes and series; and the API server requests the shards made (Node list/watch, pod
list/watch per node).

    python -m bench.shard --nodes 7 --shards 3 --scrapes 10
    python -m bench.shard --nodes 7 --rss     # one `kubebridge run` process: its RSS

With `--rss`, one shard runs as its own `python -m exporter run` process (total_shards 1)
and its resident memory (VmRSS) is printed after the warm-up and after `--scrapes` scrapes.

Numbers are printed, never judged: the replay kubelets share the 2 cores with kubebridge.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

from exporter import config as config_mod, plugins
from exporter.replay.fleet import ReplayFleet
from exporter.server import build_app
from exporter.shard.membership import shard_of

NODE_OBJECT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kube_system" / \
    "k9s-node-minikube-2019-12.json"


def _config(fleet: ReplayFleet, shard: int, total: int) -> config_mod.Config:
    api = fleet.apiserver
    tls = {"token_file": str(fleet.token_file), "ca_file": str(api.ca_file)}
    return config_mod.parse({"kubelet": tls, "scrape_timeout": "60s", "cluster_collector": {
        "enabled": True, "shard": shard, "total_shards": total, "apiserver": {"url": api.base_url, **tls}}},
        env={})


async def main(nodes: int, shards: int, scrapes: int) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    plugins.load()
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("bench-token\n")
        fleet = ReplayFleet(token, json.loads(NODE_OBJECT.read_text()), prefix="worker")
        await fleet.start(nodes)
        clients = [TestClient(TestServer(build_app(_config(fleet, i, shards)))) for i in range(shards)]
        try:
            for c in clients:
                await c.start_server()
            owned = [[n for n in fleet.nodes if shard_of(n, shards) == i] for i in range(shards)]
            for c, mine in zip(clients, owned):  # until every owned node's pods are indexed
                for _ in range(600):
                    text = await (await c.get("/metrics")).text()
                    if all(f'collector="pods",node="{n}"' in text and
                           f'kubebridge_up{{collector="pods",node="{n}"' in text for n in mine):
                        break
                    await asyncio.sleep(0.1)
            times: dict[int, list[float]] = collections.defaultdict(list)
            size: dict[int, tuple[int, int]] = {}
            for _ in range(scrapes):
                for i, c in enumerate(clients):
                    start = time.perf_counter()
                    body = await (await c.get("/metrics")).read()
                    times[i].append(time.perf_counter() - start)
                    lines = sum(1 for ln in body.splitlines() if ln and not ln.startswith(b"#"))
                    size[i] = (len(body), lines)
            print(f"{nodes} nodes, {shards} shards, {scrapes} scrapes each")
            print("shard | nodes | /metrics mean | p90 | body | series")
            for i in range(shards):
                t = sorted(times[i])
                p90 = t[min(len(t) - 1, int(0.9 * len(t)))]
                print(f"{i} | {len(owned[i])} | {statistics.mean(t) * 1000:.0f} ms | {p90 * 1000:.0f} ms | "
                      f"{size[i][0] / 1e6:.2f} MB | {size[i][1]}")
            reqs = collections.Counter()
            for p in fleet.apiserver.requests:
                path, _, query = p.partition("?")
                kind = "watch" if "watch=" in query else "list"
                if path in ("/api/v1/nodes", "/api/v1/pods"):
                    reqs[f"{path} {kind}"] += 1
            print("API server requests:", dict(sorted(reqs.items())))
        finally:
            for c in clients:
                await c.close()
            await fleet.stop()


async def rss(nodes: int, scrapes: int) -> None:
    """One real `kubebridge run` process collecting every node: its VmRSS."""
    import aiohttp
    import socket
    import subprocess
    import sys

    import yaml

    plugins.load()
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("bench-token\n")
        fleet = ReplayFleet(token, json.loads(NODE_OBJECT.read_text()), prefix="worker")
        await fleet.start(nodes)
        api = fleet.apiserver
        tls = {"token_file": str(token), "ca_file": str(api.ca_file)}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}", "kubelet": tls,
                                       "scrape_timeout": "60s", "cluster_collector": {
                                           "enabled": True, "apiserver": {"url": api.base_url, **tls}}}))
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/metrics"
                for _ in range(600):
                    try:
                        async with session.get(url) as resp:
                            text = await resp.text()
                        if all(f'kubebridge_up{{collector="pods",node="{n}"' in text for n in fleet.nodes):
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
                warm = _rss(proc.pid)
                for _ in range(scrapes):
                    async with session.get(url) as resp:
                        await resp.read()
                print(f"{nodes} nodes in one process: VmRSS {warm / 1024:.0f} MiB after the warm-up, "
                      f"{_rss(proc.pid) / 1024:.0f} MiB after {scrapes} scrapes")
        finally:
            proc.terminate()
            proc.wait(30)
            await fleet.stop()


def _rss(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=7)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--rss", action="store_true", help="measure one `kubebridge run` process's memory")
    a = ap.parse_args()
    asyncio.run(rss(a.nodes, a.scrapes) if a.rss else main(a.nodes, a.shards, a.scrapes))
