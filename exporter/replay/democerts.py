"""DEMO-ONLY TLS material for the replay cluster, made when first asked for, once per process.

No private key is committed or shipped: the first call makes a throw-away CA, a server
certificate (SAN IP:127.0.0.1 and DNS:localhost) and a client certificate
(CN=kubebridge-replay-client, O=system:masters), writes them as PEM files into a private
temporary directory (mode 0700) and removes that directory when the process exits. Another
process gets another CA: hand it the *paths* (for example the CA file) to trust it.

Needs `trustme` (and through it `cryptography`), the `demo` extra: `pip install
'kubebridge[demo]'`. The exporter itself never imports this module.
"""
from __future__ import annotations

import atexit
import datetime
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

CLIENT_CN = "kubebridge-replay-client"
CLIENT_ORG = "system:masters"
# Backdated a day so a machine whose clock is slightly behind still accepts them; valid a year.
_NOT_BEFORE = datetime.timedelta(days=1)
_LIFETIME = datetime.timedelta(days=365)


@dataclass(frozen=True)
class DemoCerts:
    """PEM files of one process's demo CA and its two leaves (keys: unencrypted PKCS#8)."""
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def by_name(self) -> dict[str, Path]:
        """The historical file names (ca.crt, server.crt/.key, client.crt/.key) -> paths."""
        return {"ca.crt": self.ca_cert, "server.crt": self.server_cert, "server.key": self.server_key,
                "client.crt": self.client_cert, "client.key": self.client_key}


_lock = threading.Lock()
_made: DemoCerts | None = None


def demo_certs() -> DemoCerts:
    """This process's demo certificates, made on the first call (thread-safe)."""
    global _made
    with _lock:
        if _made is None:
            _made = _make(Path(tempfile.mkdtemp(prefix="kubebridge-demo-certs-")))
            atexit.register(shutil.rmtree, _made.directory, True)
        return _made


def _make(directory: Path) -> DemoCerts:
    try:
        import trustme
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("the demo's TLS certificates need trustme: pip install 'kubebridge[demo]'") from e
    os.chmod(directory, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - _NOT_BEFORE, now + _LIFETIME
    ca = trustme.CA(organization_name="kubebridge replay demo CA")
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="localhost", not_before=start, not_after=end)
    client = ca.issue_cert(CLIENT_CN, common_name=CLIENT_CN, organization_name=CLIENT_ORG,
                           not_before=start, not_after=end)
    certs = DemoCerts(directory, directory / "ca.crt", directory / "server.crt", directory / "server.key",
                      directory / "client.crt", directory / "client.key")
    ca.cert_pem.write_to_path(str(certs.ca_cert))
    for leaf, cert_path, key_path in ((server, certs.server_cert, certs.server_key),
                                      (client, certs.client_cert, certs.client_key)):
        # A leaf file holds the leaf then its chain (just the CA here).
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_path.touch(mode=0o600)
        leaf.private_key_pem.write_to_path(str(key_path))
    return certs
