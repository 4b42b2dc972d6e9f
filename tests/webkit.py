"""Test helpers for the web side: certificates (trustme), a `kubebridge run` process with a web
config, TLS clients."""
from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.realprom import free_port

trustme = pytest.importorskip("trustme")
KB = [sys.executable, "-m", "exporter"]


@dataclass
class PKI:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files in `dir`."""

    dir: Path
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert: Path
    client_key: Path

    def renew(self, ca: trustme.CA | None = None) -> None:
        """Write a new server certificate (and key) over the old files, as cert-manager does."""
        cert = (ca or self.ca).issue_cert("127.0.0.1", "localhost")
        tmp_cert, tmp_key = self.dir / "new.crt", self.dir / "new.key"
        cert.cert_chain_pems[0].write_to_path(str(tmp_cert))
        cert.private_key_pem.write_to_path(str(tmp_key))
        tmp_key.replace(self.key_file)
        tmp_cert.replace(self.cert_file)


def make_pki(dir: Path) -> PKI:
    ca = trustme.CA()
    pki = PKI(dir, ca, dir / "ca.crt", dir / "server.crt", dir / "server.key",
              dir / "client.crt", dir / "client.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(pki.cert_file))
    server.private_key_pem.write_to_path(str(pki.key_file))
    client = ca.issue_cert("prometheus.monitoring.svc", "client@example.org")
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


def bcrypt_hash(password: str, prefix: str = "2y") -> str:
    """A bcrypt hash as htpasswd writes it (`$2y$`), at the cost node_exporter's docs use."""
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    return f"${prefix}${h.split('$', 2)[2]}"


def write_web_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_port(port: int, proc: subprocess.Popen, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"kubebridge exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@dataclass
class Running:
    """A `kubebridge run` process."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def kubebridge(tmp: Path, *args: str, web_config: Path | None = None) -> Iterator[Running]:
    """`kubebridge run` on an ephemeral port (no collector unless `args` enable some)."""
    port = free_port()
    log = tmp / f"kubebridge-{port}.log"
    cmd = [*KB, "run", "--web.listen-address", f"127.0.0.1:{port}", *args]
    if web_config is not None:
        cmd += ["--web.config.file", str(web_config)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        yield Running(proc, port, log)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def client_context(pki: PKI, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(url: str, ctx: ssl.SSLContext | None = None, user: str = "", password: str = "") -> Reply:
    """GET, returning the status whatever it is (HTTP errors are replies, not exceptions)."""
    req = urllib.request.Request(url)
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def peer_cert(port: int, pki: PKI) -> bytes:
    """The DER certificate the server presents to a new connection."""
    ctx = client_context(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
