"""Locations of the replay package data (captured payloads) and of the demo certificates.

Resolved through importlib.resources so they are found both in a source checkout and in
an installed wheel. The server needs real filesystem paths (ssl.load_cert_chain takes
paths), which a normal (unzipped) install provides; a zipped install is not supported.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

PACKAGE = "exporter.replay"

# Capture file names (in the flat data/ directory, and as tests/fixtures/<folder>/ names them).
CADVISOR = "nri-k8s-{version}-kubelet-metrics-cadvisor.txt"
PODS = "nri-k8s-{version}-kubelet-pods.json"
STATS_SUMMARY = "nri-k8s-{version}-kubelet-stats-summary.json"
# No kubelet /metrics or /metrics/probes capture exists for the versions above; these
# are the only ones (v1.10 and a ~1.20/1.21 GKE node).
KUBELET_METRICS = "dd-kubelet-1.10-kubelet_metrics.txt"
PROBES = "dd-kubelet-metrics-probes.txt"
SLIS = "dd-agent-kubelet-metrics-slis.txt"
APISERVER_SLIS = "dd-apiserver-1.27.3-metrics-slis.txt"

# Each capture is kept once. Those the demo needs are shipped here, in data/, and nowhere else:
# the tests find them through `fixture_path` under the tests/fixtures/ folder they belong to.
SHIPPED_FIXTURES: dict[str, tuple[str, ...]] = {
    "cadvisor": (CADVISOR.format(version="1.35"),),
    "kubelet": (PODS.format(version="1.35"), STATS_SUMMARY.format(version="1.35"),
                KUBELET_METRICS, PROBES, SLIS),
    "apiserver": ("nri-k8s-1.35-apiserver-metrics.txt", APISERVER_SLIS),
    "etcd": ("nri-k8s-1.35-etcd-metrics.txt",),
    "etcd_v2": ("beats-etcd-v2-stats-leader.json", "beats-etcd-v2-stats-self.json",
                "beats-etcd-v2-stats-store.json"),
    "events": ("dd-kubernetes-events.json", "k9s-event.json"),
    "kube_system": ("dd-kubernetes-filtered_node_list_1_4.json", "dd-kubernetes-namespaces.json"),
}


def _resource(*parts: str) -> Path:
    path = Path(str(files(PACKAGE).joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(
            f"package data {'/'.join(parts)} not found at {path} (installed without package data?)"
        )
    return path


def cert_file(name: str) -> Path:
    """A DEMO-ONLY certificate or key of this process (ca.crt, server.crt/.key, client.crt/.key),
    made at first use by `democerts.demo_certs` (never shipped: no private key is in the package)."""
    from exporter.replay.democerts import demo_certs

    return demo_certs().by_name()[name]


def data_file(name: str) -> Path:
    """A captured payload shipped in exporter/replay/data/ (see its PROVENANCE.md)."""
    return _resource("data", name)


def fixture_path(root: Path | str, folder: str, name: str) -> Path:
    """The capture `folder`/`name` of a tests/fixtures directory `root`: the shipped copy for
    one of SHIPPED_FIXTURES, else `root`/`folder`/`name`."""
    if name in SHIPPED_FIXTURES.get(folder, ()):
        return data_file(name)
    return Path(root) / folder / name


async def serve_tls(app: web.Application, port: int = 0,
                    shutdown_timeout: float = 60.0) -> tuple[web.AppRunner, str]:
    """Serve `app` over HTTPS with the demo server certificate on 127.0.0.1:`port` (0: any
    free port). Returns the runner (to clean up) and `https://127.0.0.1:PORT`.
    `shutdown_timeout` is aiohttp's grace for open connections on cleanup (its default, 60 s)."""
    import ssl

    from aiohttp import web

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file("server.crt"), cert_file("server.key"))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}"
