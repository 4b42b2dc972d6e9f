"""The sockets: UDP (host:port) and an optional Unix datagram socket, one receiver thread each.

A receiver blocks in the kernel for the next datagram and applies it under the store lock, so a
scrape never sees a half-applied line. Threads, not the
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
_HOUSEKEEPING = 255    # every 256 datagrams (and when idle): pick up a new pod index, expire
_IDLE_SECONDS = 0.2  # a receiver blocked this long with no datagram does its housekeeping
_IDLE = struct.pack("ll", 0, int(_IDLE_SECONDS * 1_000_000))  # (SO_RCVTIMEO's struct timeval)
_MAX_DATAGRAM = 65535
_UCRED = struct.Struct("3i")
_CRED_SPACE = socket.CMSG_SPACE(_UCRED.size)
Recv = Callable[[socket.socket], tuple[bytes, str | int | None]]
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
            self._spawn("udp", self.udp, self._udp_recv)
        if self.unix is not None:
            self._spawn("unix", self.unix, self._unix_recv)

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

    def _spawn(self, name: str, sock: socket.socket, recv: Recv) -> None:
        t = threading.Thread(target=self._receive, args=(name, sock, recv), name=f"statsd-{name}",
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

    def _receive(self, name: str, sock: socket.socket, recv: Recv) -> None:
        """Block in the kernel for the next datagram (SO_RCVTIMEO wakes us to check for stop and
        to expire series when idle); apply it under the lock. One syscall per datagram, no
        poll: when this thread is short of CPU, nothing but the datagrams costs it."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _IDLE)
        ingest = self.ingest
        datagram = ingest.datagram
        lock = ingest.store.lock
        packets = ingest.stats.packets
        packets.setdefault(name, 0)
        monotonic = time.monotonic
        n = 0
        while not self._stop.is_set():
            try:
                data, peer = recv(sock)
            except (BlockingIOError, InterruptedError):  # idle for _IDLE
                with lock:
                    ingest.refresh()
                    self._maybe_expire(monotonic())
                continue
            now = monotonic()
            with lock:
                if not n & _HOUSEKEEPING:
                    ingest.refresh()
                    self._maybe_expire(now)
                datagram(data, peer, now)
                packets[name] += 1
            n += 1

    def _maybe_expire(self, now: float) -> None:
        if now - self._last_expire >= _EXPIRE_EVERY:
            self._last_expire = now
            self.ingest.store.expire(now)

    @staticmethod
    def _udp_recv(sock: socket.socket) -> tuple[bytes, str]:
        data, addr = sock.recvfrom(_MAX_DATAGRAM)
        return data, addr[0]

    @staticmethod
    def _unix_recv(sock: socket.socket) -> tuple[bytes, int | None]:
        data, anc, _, _ = sock.recvmsg(_MAX_DATAGRAM, _CRED_SPACE)
        pid: int | None = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= _UCRED.size:
                pid = _UCRED.unpack(cdata[:_UCRED.size])[0]
        return data, pid

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
