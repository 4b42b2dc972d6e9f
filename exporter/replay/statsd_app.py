"""A demo app pod that pushes DogStatsD to the node agent, for `kubebridge demo` and the tests.

`add_sender_pod` puts a pod into the replay kubelet (a clone of a captured Deployment pod) with a
pod IP of its own on loopback (127.0.0.0/8 is all local on Linux, so a sender socket can bind
it): the statsd collector joins the datagrams by that source IP, as it would a real pod's.
`DemoPusher` is the app: every `interval` seconds it sends a checkout service's counters,
gauge, timer, distribution, set, and a service check, in one datagram, as DogStatsD clients do.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import socket

from exporter.replay.apps import DEPLOYMENT_POD
from exporter.replay.kubelet import ReplayKubelet

SENDER_IP = "127.0.0.42"


def add_sender_pod(kubelet: ReplayKubelet, ip: str, *, container: str = "app",
                   image: str = "registry.example.com/shop/payments:3.1",
                   labels: dict[str, str] | None = None, host_network: bool = False,
                   template: str = DEPLOYMENT_POD) -> tuple[str, str]:
    """Add a Running pod with pod IP `ip` (one app container); returns (namespace, name)."""
    key = kubelet.add_pod(template)

    def patch(item: dict) -> None:
        meta, spec, status = item["metadata"], item.setdefault("spec", {}), item.setdefault("status", {})
        meta.setdefault("labels", {}).update(labels or {})
        spec["containers"] = [{"name": container, "image": image}]
        spec["hostNetwork"] = host_network
        for cs in status.get("containerStatuses") or []:
            cs.update(name=container, image=image)
        status.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}])
    kubelet.update_pod(*key, patch)
    return key


class DemoPusher:
    """Sends DogStatsD datagrams from `ip` to 127.0.0.1:`port` every `interval` seconds."""

    def __init__(self, port: int, ip: str = SENDER_IP, interval: float = 1.0) -> None:
        self.port = port
        self.ip = ip
        self.interval = interval
        self.sent = 0
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None
        self._rng = random.Random(7)

    def payload(self) -> bytes:
        """One flush of the app's metrics (DogStatsD, several lines per datagram)."""
        r = self._rng
        user = r.randint(1, 50)
        lines = [
            f"payments.charges:{r.randint(1, 5)}|c|#method:card,env:demo",
            "payments.charges:1|c|@0.5|#method:voucher,env:demo",
            f"payments.queue_depth:{r.randint(0, 20)}|g|#env:demo",
            f"payments.charge.latency:{r.uniform(5, 400):.1f}|ms|#method:card,env:demo",
            f"payments.amount:{r.uniform(1, 200):.2f}|d|#currency:eur,env:demo",
            f"payments.users:user{user}|s|#env:demo",
            "_sc|payments.gateway|0|#env:demo",
        ]
        if self.sent % 10 == 0:  # a buggy client now and then: a malformed line, a tag over the budget
            lines += ["payments.charges:abc|c|#env:demo", "payments.charges:1|c|#trace:" + "f" * 300]
        return "\n".join(lines).encode()

    async def start(self) -> None:
        """Bind the sender to its pod IP and start sending."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.ip, 0))
        self._sock.setblocking(False)
        self._task = asyncio.create_task(self._run(), name="statsd-demo-app")

    async def _run(self) -> None:
        assert self._sock is not None
        while True:
            with contextlib.suppress(OSError):  # nobody listening yet: UDP just loses it
                self._sock.sendto(self.payload(), ("127.0.0.1", self.port))
                self.sent += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
