"""End to end: the whole app against the replay kubelet over TLS with a bearer token."""
from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess

import pytest

from exporter import config as config_mod
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.conftest import FIXTURES

# Lines whose values change from run to run (durations, clocks, the process itself).
VOLATILE = re.compile(rb"^(# (HELP|TYPE) )?(process_|python_|kubebridge_scrape_duration_seconds|"
                      rb"kubebridge_pod_index_(last_sync_timestamp_seconds|syncs_total))")


@pytest.fixture
def kubelet(replay: ReplayKubelet) -> ReplayKubelet:
    return replay  # the replay kubelet of tests/conftest.py


def exporter_config(replay: ReplayKubelet, **extra) -> config_mod.Config:
    doc = {"cluster": "e2e", "pod_refresh_interval": "0.2s", "node_name": replay.node_name,
           "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                       "ca_file": str(replay.ca_file)},
           "collectors": {"resource": {"enabled": True}}}
    doc.update(extra)
    return config_mod.parse(doc, env={})


async def scrape(client, **headers) -> bytes:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200
    return await resp.read()


async def ready(client) -> None:
    for _ in range(200):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never ready")


def stable(body: bytes) -> str:
    return b"".join(ln + b"\n" for ln in body.splitlines() if not VOLATILE.match(ln)).decode()


async def test_metrics_golden(kubelet, aiohttp_client, golden):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    await scrape(client)  # cold
    body = await scrape(client)  # warm: must be identical in content
    golden("e2e-output.txt", stable(body))


def test_golden_passes_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (CI installs Debian's prometheus)")
    text = (FIXTURES.parent / "golden" / "e2e-output.txt").read_bytes()
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert out.returncode in (0, 3), out.stderr.decode()  # 3: lint findings only
    ours = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("kubebridge_")]
    assert ours == [], ours
    assert b"second HELP" not in out.stderr and b"error while linting" not in out.stderr


async def test_join_on_container_cpu(kubelet, aiohttp_client):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    text = (await scrape(client)).decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("container_cpu_usage_seconds_total{")
                and 'pod="coredns-' in ln and 'cgroup_kind="container"' in ln)
    for label in ('namespace="kube-system"', 'label_k8s_app="kube-dns"', 'workload="coredns"',
                  'workload_kind="Deployment"', 'node="datagen-1-35"', 'cluster="e2e"',
                  'collector="cadvisor"'):
        assert label in line, (label, line)
    assert 'id="' not in line and 'name="' not in line


async def test_join_follows_pod_churn(kubelet, aiohttp_client):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    ns, name = kubelet.add_pod("kube-system/coredns-7d764666f9-qdcxt")
    want = f'namespace="{ns}",pod="{name}"'
    for _ in range(100):
        text = (await scrape(client)).decode()
        if any(want in ln and 'workload="coredns"' in ln for ln in text.splitlines()):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("new pod never joined")
    kubelet.remove_pod(ns, name)
    for _ in range(100):
        if f'pod="{name}"' not in (await scrape(client)).decode():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("removed pod's series still served")


async def test_token_rotation_followed(kubelet, aiohttp_client):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    kubelet.token_file.write_text(secrets.token_hex(16) + "\n")
    text = (await scrape(client)).decode()
    assert 'kubebridge_up{collector="cadvisor",cluster="e2e"} 1' in text
    tokens = {h.get("Authorization") for _, h in kubelet.requests}
    assert f"Bearer {kubelet.token_file.read_text().strip()}" in tokens


async def test_broken_source_isolated(kubelet, aiohttp_client):
    kubelet.forbidden_paths.add("/metrics/probes")
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    text = (await scrape(client)).decode()
    assert 'kubebridge_source_status{collector="probes",status="not_permitted",cluster="e2e"} 1' in text
    assert 'kubebridge_up{collector="probes",cluster="e2e"} 0' in text
    assert 'kubebridge_up{collector="cadvisor",cluster="e2e"} 1' in text
    assert "container_cpu_usage_seconds_total{" in text
    await kubelet.stop()
    text = (await scrape(client)).decode()
    assert 'kubebridge_source_status{collector="cadvisor",status="down",cluster="e2e"} 1' in text
    assert 'kubebridge_scrape_errors_total{collector="cadvisor",reason="connect",cluster="e2e"} 1' in text
    assert "container_cpu_usage_seconds_total{" not in text


async def test_concurrent_scrapes_share_one_fetch(kubelet, aiohttp_client):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    before = sum(1 for p, _ in kubelet.requests if p == "/metrics/cadvisor")
    bodies = await asyncio.gather(*(scrape(client) for _ in range(5)))
    after = sum(1 for p, _ in kubelet.requests if p == "/metrics/cadvisor")
    assert all(b"container_cpu_usage_seconds_total{" in b for b in bodies)
    assert after - before < 5


async def test_openmetrics_and_gzip(kubelet, aiohttp_client):
    client = await aiohttp_client(build_app(exporter_config(kubelet)))
    await ready(client)
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0",
                                                 "Accept-Encoding": "gzip"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.headers.get("Content-Encoding") == "gzip"
    text = (await resp.read()).decode()
    assert text.endswith("# EOF\n") and "# TYPE container_cpu_usage_seconds counter" in text


async def test_scrape_timeout_header_bounds_a_hung_upstream(aiohttp_server, aiohttp_client):
    from aiohttp import web
    never = asyncio.Event()

    async def hang(request):
        await never.wait()
        return web.Response(text="")
    app = web.Application()
    app.router.add_get("/{tail:.*}", hang)
    upstream = await aiohttp_server(app)
    cfg = config_mod.parse({"kubelet": {"url": str(upstream.make_url("")).rstrip("/")},
                            "collectors": {"kubelet": {"enabled": False}, "probes": {"enabled": False}}},
                           env={})
    client = await aiohttp_client(build_app(cfg))
    text = (await scrape(client, **{"X-Prometheus-Scrape-Timeout-Seconds": "1"})).decode()
    assert 'kubebridge_scrape_errors_total{collector="cadvisor",reason="timeout"} 1' in text
    assert 'kubebridge_up{collector="cadvisor"} 0' in text
    never.set()


@pytest.mark.parametrize("header, ok", [
    ("gzip", True), ("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("*", True),
    ("gzip;q=0", False), ("identity", False), ("", False), ("GZIP", True), ("gzip;q=x", False)])
def test_gzip_is_negotiated_as_http_says(header: str, ok: bool):
    import gzip

    from exporter.bodies import encode_body
    from exporter.expfmt import Family
    from exporter.server import accepts_gzip
    assert accepts_gzip(header) is ok
    fams = [Family("x", "gauge", "An x.", [b'x{i="%d"} 1' % i for i in range(10000)]),
            Family("y", lines=[b"y 2"])]
    text = encode_body(fams, False, False)
    assert text.startswith(b"# HELP x An x.\n# TYPE x gauge\nx{i=\"0\"} 1\n") and text.endswith(b"\ny 2\n")
    assert gzip.decompress(encode_body(fams, False, True)) == text
    assert gzip.decompress(encode_body(fams, True, True)) == encode_body(fams, True, False)
