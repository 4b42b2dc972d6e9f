"""The sockets: UDP (host:port) and an optional Unix datagram socket, one receiver thread each.

A receiver waits for the socket to be readable, then drains it (up to `_BATCH` datagrams) under
the store lock, so a scrape sees whole batches and never a half-applied line. Threads, not the
event loop: a long scrape encode on the loop must not leave the kernel buffer unread. The
Unix socket has SO_PASSCRED, so every datagram carries its sender's pid (as seen from our pid
namespace; 0 when not visible), which `origin.Resolver` follows to a container.

Drops: the kernel counts UDP datagrams dropped for a full receive buffer per socket, in the
last column of /proc/net/udp(6); `udp_drops` reads it for our socket's inode. A Unix datagram
socket never drops: a sender blocks or gets EAGAIN when our queue is full.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

from exporter.statsd.ingest import Ingest

log = logging.getLogger("kubebridge.statsd")
_BATCH = 512           # datagrams per lock hold
_MAX_DATAGRAM = 65535
_UCRED = struct.Struct("3i")
Batch = Callable[[socket.socket, float], int]
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_EXPIRE_EVERY = 1.0    # seconds between TTL sweeps by the receivers


@dataclass(frozen=True)
class Sockets:
    """Where to listen. `udp`: HOST:PORT ("" for none); `unix`: a path ("" for none)."""

    udp: str = "0.0.0.0:8125"
    unix: str = ""
    unix_mode: int = 0o666
    receive_buffer: int = 8 << 20


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Listener:
    """Binds the sockets and runs the receiver threads."""

    def __init__(self, ingest: Ingest, sockets: Sockets, proc: Path = Path("/proc")) -> None:
        self.ingest = ingest
        self.cfg = sockets
        self.proc = proc
        self.udp: socket.socket | None = None
        self.unix: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_expire = 0.0

    @property
    def udp_port(self) -> int:
        """The bound UDP port (useful with port 0)."""
        return self.udp.getsockname()[1] if self.udp is not None else 0

    def bind(self) -> None:
        """Bind the sockets (datagrams queue in the kernel until `receive`); raises OSError."""
        try:
            if self.cfg.udp:
                host, port = _split(self.cfg.udp)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self.udp = _bound(sock, (host, port), self.cfg.receive_buffer)
            if self.cfg.unix:
                self.unix = self._unix_socket()
        except BaseException:
            self.stop()
            raise

    def receive(self) -> None:
        """Start the receiver threads."""
        if self.udp is not None:
            self._spawn("udp", self.udp, self._udp_batch)
        if self.unix is not None:
            self._spawn("unix", self.unix, self._unix_batch)

    def start(self) -> None:
        """bind, then receive."""
        self.bind()
        self.receive()

    def _unix_socket(self) -> socket.socket:
        path = Path(self.cfg.unix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # a previous instance's socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        _bound(sock, str(path), self.cfg.receive_buffer)
        os.chmod(path, self.cfg.unix_mode)
        return sock

    def _spawn(self, name: str, sock: socket.socket, batch: Batch) -> None:
        t = threading.Thread(target=self._receive, args=(name, sock, batch), name=f"statsd-{name}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        """Stop the threads, close the sockets, remove the Unix socket file."""
        self._stop.set()
        for t in self._threads:
            t.join(5.0)
        self._threads.clear()
        for sock in (self.udp, self.unix):
            if sock is not None:
                sock.close()
        if self.unix is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.cfg.unix)
        self.udp = self.unix = None

    def _receive(self, name: str, sock: socket.socket, batch: Batch) -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        ingest = self.ingest
        lock = ingest.store.lock
        packets = ingest.stats.packets
        while not self._stop.is_set():
            if not poller.poll(200):
                with lock:
                    self._maybe_expire(time.monotonic())
                continue
            with lock:
                now = time.monotonic()
                ingest.refresh()
                n = batch(sock, now)
                packets[name] = packets.get(name, 0) + n
                self._maybe_expire(now)

    def _maybe_expire(self, now: float) -> None:
        if now - self._last_expire >= _EXPIRE_EVERY:
            self._last_expire = now
            self.ingest.store.expire(now)

    def _udp_batch(self, sock: socket.socket, now: float) -> int:
        datagram = self.ingest.datagram
        recv = sock.recvfrom
        n = 0
        try:
            while n < _BATCH:
                data, addr = recv(_MAX_DATAGRAM, socket.MSG_DONTWAIT)
                n += 1
                datagram(data, addr[0], now)
        except (BlockingIOError, InterruptedError):
            pass
        return n

    def _unix_batch(self, sock: socket.socket, now: float) -> int:
        datagram = self.ingest.datagram
        space = socket.CMSG_SPACE(_UCRED.size)
        n = 0
        try:
            while n < _BATCH:
                data, anc, _, _ = sock.recvmsg(_MAX_DATAGRAM, space, socket.MSG_DONTWAIT)
                n += 1
                pid: int | None = None
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS \
                            and len(cdata) >= _UCRED.size:
                        pid = _UCRED.unpack(cdata[:_UCRED.size])[0]
                datagram(data, pid, now)
        except (BlockingIOError, InterruptedError):
            pass
        return n

    def udp_drops(self) -> int | None:
        """Datagrams the kernel dropped on our UDP socket (None where /proc does not say)."""
        if self.udp is None:
            return None
        inode = str(os.fstat(self.udp.fileno()).st_ino)
        for table in ("udp", "udp6"):
            try:
                lines = (self.proc / "net" / table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                if len(cols) >= 13 and cols[9] == inode:
                    try:
                        return int(cols[12])
                    except ValueError:
                        return None
        return None


def _bound(sock: socket.socket, address: tuple[str, int] | str, rcvbuf: int) -> socket.socket:
    try:
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE: beyond rmem_max, with CAP_NET_ADMIN
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, rcvbuf)
                break
            except OSError:
                continue
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
