"""Real etcd for the etcd and etcd_v2 tests: members on 127.0.0.1 free ports, TLS material made
with openssl, readiness by polling with a deadline, and helpers to read collector output."""
from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from exporter import config as config_mod
from exporter.deps import Deps
from exporter.expfmt import Family, encode_text, parse_line
from exporter.registry import get
from exporter.runner import Outcome, Source

BUDGET = 10.0
START_DEADLINE = 30.0  # a member is healthy ~2 s after start; CI machines can be slower


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(d: Path) -> Certs:
    """Generate the TLS material with openssl (EC keys: fast)."""
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=kubebridge-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    # etcd's own gateway dials its client port with the server certificate: it needs clientAuth.
    server_san = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    for name, usage, san in (("server", "serverAuth,clientAuth", server_san), ("client", "clientAuth", "")):
        (d / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\n{san}")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=kubebridge-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
            "2" if name == "server" else "3", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@dataclass
class Member:
    """One etcd process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    scheme: str = "http"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def label(self) -> str:
        """The `member` label kubebridge gives it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """`size` members started together; `v2` adds --enable-v2, `certs` serves clients over TLS
    with client-certificate authentication."""

    def __init__(self, root: Path, size: int = 3, *, v2: bool = True, certs: Certs | None = None,
                 prefix: str = "m") -> None:
        ports = free_ports(2 * size)
        self.root, self.v2, self.certs = root, v2, certs
        self.members = [Member(f"{prefix}{i + 1}", ports[2 * i], ports[2 * i + 1], root / f"{prefix}{i + 1}",
                               "https" if certs else "http") for i in range(size)]
        self.initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._ssl = self._client_context() if certs else None

    def _client_context(self) -> ssl.SSLContext:
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca))
        ctx.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        return ctx

    def _args(self, m: Member, state: str) -> list[str]:
        args = ["etcd", "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial, "--initial-cluster-token", f"kb-{self.root.name}",
                "--initial-cluster-state", state, "--heartbeat-interval", "100", "--election-timeout", "1000"]
        if self.v2:
            args.append("--enable-v2")
        if self.certs:
            args += ["--cert-file", str(self.certs.server_cert), "--key-file", str(self.certs.server_key),
                     "--trusted-ca-file", str(self.certs.ca), "--client-cert-auth"]
        return args

    def _spawn(self, m: Member, state: str) -> None:
        log = open(self.root / f"{m.name}.log", "ab")
        m.proc = subprocess.Popen(self._args(m, state), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def start(self) -> None:
        """Start every member and wait for a healthy cluster."""
        self.root.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self._spawn(m, "new")
        self.wait_healthy()

    def kill(self, *members: Member) -> None:
        """SIGKILL (a crash, not a clean leave) and reap."""
        for m in members:
            if m.proc is not None and m.running():
                m.proc.send_signal(signal.SIGKILL)
        for m in members:
            if m.proc is not None:
                m.proc.wait(10)

    def ensure_all(self) -> None:
        """Restart every dead member (same data dir) and wait for a healthy cluster."""
        dead = [m for m in self.members if not m.running()]
        for m in dead:
            self._spawn(m, "existing")
        if dead or not self._healthy():
            self.wait_healthy()

    def stop(self) -> None:
        """Stop every member. SIGKILL: the data is thrown away, and a graceful etcd shutdown
        takes about 2 s per member."""
        self.kill(*self.members)

    def request(self, m: Member, path: str, body: Any = None, method: str | None = None,
                form: dict[str, str] | None = None) -> tuple[int, Any]:
        """A small synchronous client (readiness polling and writes)."""
        data, headers = None, {}
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif form is not None:
            data = "&".join(f"{k}={v}" for k, v in form.items()).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        req = urllib.request.Request(m.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self, m: Member) -> dict[str, Any]:
        return self.request(m, "/v3/maintenance/status", {})[1]

    def _healthy(self) -> bool:
        try:
            if any(self.request(m, "/health")[1].get("health") != "true" for m in self.members):
                return False
            leaders = {self.status(m).get("leader") for m in self.members}
        except OSError:
            return False
        return len(leaders) == 1 and None not in leaders

    def wait_healthy(self) -> None:
        """Poll until every member is healthy and all name the same leader."""
        deadline = time.monotonic() + START_DEADLINE
        while not self._healthy():
            for m in self.members:
                if not m.running():
                    raise RuntimeError(f"etcd {m.name} exited: see {self.root / (m.name + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd cluster not healthy after {START_DEADLINE}s ({self.root})")
            time.sleep(0.05)

    def leader(self) -> Member:
        """The member the cluster names as leader (by the members' own status)."""
        ids = {m.name: self.status(m)["header"]["member_id"] for m in self.members if m.running()}
        lead = self.status(next(m for m in self.members if m.running()))["leader"]
        return next(m for m in self.members if ids.get(m.name) == lead)

    def put_v3(self, key: str, value: str) -> None:
        """A put through the v3 JSON gateway (base64 key and value)."""
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        code, _ = self.request(self.members[0], "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        assert code == 200

    def put_v2(self, key: str, value: str) -> None:
        """A set through the v2 keys API (counted by the v2 store stats, unlike v3 puts)."""
        code, _ = self.request(self.members[0], f"/v2/keys/{key}", method="PUT", form={"value": value})
        assert code in (200, 201)

    def config(self, m: Member, client_cert: bool = True) -> dict[str, Any]:
        """The `members` entry kubebridge needs for `m`."""
        entry: dict[str, Any] = {"url": m.url}
        if self.certs:
            entry["ca_file"] = str(self.certs.ca)
            if client_cert:
                entry |= {"cert_file": str(self.certs.client_cert), "key_file": str(self.certs.client_key)}
        return entry


def source(name: str, session: aiohttp.ClientSession, members: Sequence[dict[str, Any]]) -> Source:
    """A collector built as the server builds it, wrapped in the real runner's Source."""
    cfg = config_mod.parse({"collectors": {name: {"enabled": True, "members": list(members)}}}, env={})
    return Source(name, get(name).factory(Deps(cfg, session, None), cfg.collectors[name]))


class Series:
    """Encoded collector output, read back: name + labels -> value."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.text = encode_text(families)
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in self.text.split(b"\n"):
            if line and not line.startswith(b"#"):
                s = parse_line(line)
                self.samples.append((s.name, dict(s.labels), float(s.value)))

    def get(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The one matching sample's value (None if absent; error if ambiguous)."""
        found = self.get(name, **labels)
        assert len(found) <= 1, (name, labels, found)
        return found[0][1] if found else None

    def by(self, name: str, label: str = "member", **labels: str) -> dict[str, float]:
        return {lb[label]: v for lb, v in self.get(name, **labels)}


async def until(src: Source, check: Callable[[Outcome, Series], bool],
                deadline: float = 20.0) -> tuple[Outcome, Series]:
    """Collect until `check` holds or the deadline passes; return the last collection (the
    caller then asserts the facts, so a miss fails with a readable message)."""
    end = time.monotonic() + deadline
    while True:
        out = await src.collect(BUDGET)
        series = Series(out.families)
        if check(out, series) or time.monotonic() > end:
            return out, series
        await asyncio.sleep(0.1)


def have_etcd() -> bool:
    """etcd and openssl are on PATH (else the real-etcd tests skip)."""
    from shutil import which
    return which("etcd") is not None and which("openssl") is not None
