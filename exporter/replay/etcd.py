"""The demo's etcd: a real single-member etcd when the `etcd` binary is installed, otherwise a
loopback server answering with recorded etcd payloads (metrics, /health, v3 status, v2 stats)."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from exporter.replay.paths import data_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed(body: bytes, content_type: str = "application/json",
           charset: str | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler that answers every request with the recorded `body`."""
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset=charset)
    return handler


class ReplayEtcd:
    """`url` is the client URL once started; `real` tells which kind is running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.url = ""
        self.real = shutil.which("etcd") is not None
        self._proc: asyncio.subprocess.Process | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start it and wait until it answers /health."""
        if self.real:
            await self._start_real()
        else:
            await self._start_recorded()
        return self.url

    async def _start_real(self) -> None:
        client, peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{client}"
        self._proc = await asyncio.create_subprocess_exec(
            "etcd", "--name", "demo", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"demo=http://127.0.0.1:{peer}", "--enable-v2",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("demo etcd did not become healthy")

    async def _start_recorded(self) -> None:
        metrics = data_file("nri-k8s-1.35-etcd-metrics.txt").read_bytes()
        v2 = {p: data_file(f"beats-etcd-v2-stats-{p}.json").read_bytes() for p in ("self", "store", "leader")}
        app = web.Application()
        app.router.add_get("/metrics", _fixed(metrics, "text/plain", charset="utf-8"))
        app.router.add_get("/health", _fixed(json.dumps({"health": "true", "reason": ""}).encode(),
                                              charset="utf-8"))
        for path, body in v2.items():
            app.router.add_get(f"/v2/stats/{path}", _fixed(body))
        # No status capture exists: this answer is written in etcd's wire shape (int64 as strings).
        status = {"header": {"member_id": "1", "raft_term": "2"}, "version": "3.6.6",
                  "dbSize": "1000000", "leader": "1", "raftIndex": "10", "raftTerm": "2"}
        app.router.add_post("/v3/maintenance/status", _fixed(json.dumps(status).encode(), charset="utf-8"))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop it (the real one gets SIGTERM, then SIGKILL after 5 s)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
        if self._runner is not None:
            await self._runner.cleanup()
