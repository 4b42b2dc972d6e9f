"""Tests for the replay cluster: ReplayKubelet's protocol and the synthetic node generator."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.replay import paths, synth
from exporter.replay.democerts import demo_certs
from exporter.replay.kubelet import ReplayKubelet
from tests.conftest import FIXTURES, Fixtures

KUBELET = Fixtures("kubelet")
CADVISOR = Fixtures("cadvisor") / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"
PODS = KUBELET / "nri-k8s-1.35-kubelet-pods.json"
SUMMARY = KUBELET / "nri-k8s-1.35-kubelet-stats-summary.json"
TOKEN = "replay-token-1"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POD_LABEL = re.compile(r'[{,]namespace="([^"]*)".*[{,]pod="([^"]*)"')
CONTAINER_ID = re.compile(r"(?<![0-9a-f])(?<!sha256:)[0-9a-f]{64}(?![0-9a-f])")  # not image digests

# Measured sizes (see exporter/replay/synth.py); asserted with a little slack.
SIZES = {110: (24_956, 8_377_642), 250: (55_848, 18_900_507)}


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[ReplayKubelet, str, ssl.SSLContext]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # trailing newline: the server must strip it
    kubelet = ReplayKubelet.from_fixtures(FIXTURES, token_file=token_file, **kwargs)
    url = await kubelet.start()
    try:
        yield kubelet, url, ssl.create_default_context(cafile=str(kubelet.ca_file))
    finally:
        await kubelet.stop()


async def get(
    url: str,
    tls: ssl.SSLContext | bool,
    token: str | None = TOKEN,
    headers: Mapping[str, str] | None = None,
    auto_decompress: bool = True,
) -> tuple[int, Mapping[str, str], bytes]:
    sent = {"Authorization": f"Bearer {token}"} if token is not None else {}
    sent.update(headers or {})
    async with aiohttp.ClientSession(auto_decompress=auto_decompress) as session:
        async with session.get(url, ssl=tls, headers=sent) as response:
            return response.status, response.headers, await response.read()


def series_lines(payload: bytes) -> list[str]:
    return [line for line in payload.decode().split("\n") if line and not line.startswith("#")]


# -- authentication and TLS ----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("token", [None, "wrong", ""])
async def test_missing_or_wrong_token_is_401(tmp_path: Path, token: str | None) -> None:
    async with running(tmp_path) as (_, url, tls):
        status, headers, body = await get(url + "/pods", tls, token=token)
    assert (status, body) == (401, b"Unauthorized")


@pytest.mark.asyncio
async def test_token_rotation_rereads_the_file(tmp_path: Path) -> None:
    async with running(tmp_path) as (kubelet, url, tls):
        assert (await get(url + "/healthz", tls))[0] == 200
        kubelet.token_file.write_text("rotated-token\n")
        assert (await get(url + "/healthz", tls))[0] == 401
        assert (await get(url + "/healthz", tls, token="rotated-token"))[0] == 200


@pytest.mark.asyncio
async def test_tls_verifies_with_the_demo_ca_only(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, url, tls):
        assert (await get(url + "/healthz", tls))[0] == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(url + "/healthz", ssl.create_default_context())  # system trust store
        assert url.startswith("https://127.0.0.1:")


@pytest.mark.asyncio
async def test_forbidden_paths_are_403_after_authentication(tmp_path: Path) -> None:
    async with running(tmp_path, forbidden_paths={"/metrics/cadvisor"}) as (_, url, tls):
        status, _, body = await get(url + "/metrics/cadvisor", tls)
        assert status == 403 and b"subresource=metrics" in body
        assert (await get(url + "/metrics/cadvisor", tls, token="wrong"))[0] == 401
        assert (await get(url + "/metrics", tls))[0] == 200


@pytest.mark.asyncio
async def test_requests_are_recorded_with_headers(tmp_path: Path) -> None:
    async with running(tmp_path) as (kubelet, url, tls):
        await get(url + "/healthz?verbose", tls, headers={"User-Agent": "kubebridge-test"})
        await get(url + "/pods", tls, token=None)
    (path1, headers1), (path2, headers2) = kubelet.requests
    assert (path1, headers1["Authorization"], headers1["User-Agent"]) == (
        "/healthz?verbose",
        f"Bearer {TOKEN}",
        "kubebridge-test",
    )
    assert path2 == "/pods" and "Authorization" not in headers2


# -- endpoints ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "fixture", "content_type"),
    [
        ("/metrics/cadvisor", CADVISOR, METRICS_TYPE),
        ("/metrics", KUBELET / "dd-kubelet-1.10-kubelet_metrics.txt", METRICS_TYPE),
        ("/metrics/probes", KUBELET / "dd-kubelet-metrics-probes.txt", METRICS_TYPE),
        ("/metrics/slis", KUBELET / "dd-agent-kubelet-metrics-slis.txt", METRICS_TYPE),
        ("/pods", PODS, "application/json"),
        ("/stats/summary", SUMMARY, "application/json"),
    ],
)
async def test_endpoints_serve_the_captured_bytes(
    tmp_path: Path, path: str, fixture: Path, content_type: str
) -> None:
    async with running(tmp_path) as (_, url, tls):
        status, headers, body = await get(url + path, tls)
        # Metrics are gzipped when offered, as promhttp does; identity otherwise.
        raw = await get(url + path, tls, headers={"Accept-Encoding": "identity"}, auto_decompress=False)
        zipped = await get(url + path, tls, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert (status, headers["Content-Type"], body) == (200, content_type, fixture.read_bytes())
    assert raw[2] == fixture.read_bytes() and "Content-Encoding" not in raw[1]
    if path.startswith("/metrics"):
        assert zipped[1]["Content-Encoding"] == "gzip" and gzip.decompress(zipped[2]) == fixture.read_bytes()
    else:  # go-restful JSON endpoints are not compressed by the kubelet
        assert "Content-Encoding" not in zipped[1] and zipped[2] == fixture.read_bytes()


@pytest.mark.asyncio
async def test_healthz_plain_verbose_and_failing(tmp_path: Path) -> None:
    async with running(tmp_path) as (kubelet, url, tls):
        assert (await get(url + "/healthz", tls))[::2] == (200, b"ok")
        status, headers, body = await get(url + "/healthz?verbose", tls)
        assert (status, body) == (200, b"[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        kubelet.healthz_failures["syncloop"] = "PLEG is not healthy"
        status, _, body = await get(url + "/healthz", tls)
    assert status == 500
    assert body == b"[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"


@pytest.mark.asyncio
async def test_metrics_resource_is_derived_from_the_summary(tmp_path: Path) -> None:
    summary = json.loads(SUMMARY.read_bytes())
    async with running(tmp_path) as (_, url, tls):
        status, headers, body = await get(url + "/metrics/resource", tls)
    assert (status, headers["Content-Type"]) == (200, METRICS_TYPE)
    text = body.decode()
    help_line = (
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container"
    )
    assert help_line + " in core-seconds\n" in text
    assert "# TYPE container_cpu_usage_seconds_total counter\n" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        *(
            "container_cpu_usage_seconds",
            "container_memory_working_set_bytes",
            "container_start_time_seconds",
        ),
        *("pod_cpu_usage_seconds", "pod_memory_working_set_bytes"),
        *("node_cpu_usage_seconds", "node_memory_working_set_bytes", "resource_scrape_error"),
    }
    assert expected <= set(families)
    node = families["node_cpu_usage_seconds"].samples[0]
    assert node.value == summary["node"]["cpu"]["usageCoreNanoSeconds"] / 1e9 and node.timestamp is not None
    pods = {
        (s.labels["namespace"], s.labels["pod"]) for s in families["pod_memory_working_set_bytes"].samples
    }
    assert pods == {(p["podRef"]["namespace"], p["podRef"]["name"]) for p in summary["pods"]}
    assert "node_cpu_usage_seconds_total 62.148052 1782468875000\n" in text


# -- churn --------------------------------------------------------------------------


async def snapshot(url: str, tls: ssl.SSLContext) -> tuple[dict, bytes, dict, bytes]:
    pods, cadvisor, summary, resource = [
        (await get(url + p, tls))[2]
        for p in ("/pods", "/metrics/cadvisor", "/stats/summary", "/metrics/resource")
    ]
    return json.loads(pods), cadvisor, json.loads(summary), resource


@pytest.mark.asyncio
async def test_add_and_remove_pod_change_every_view_consistently(tmp_path: Path) -> None:
    async with running(tmp_path) as (kubelet, url, tls):
        namespace, name = kubelet.add_pod("scraper/e2e-deployment-79967c5968-8bnn8")
        assert re.fullmatch(r"e2e-deployment-79967c5968-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
        pods, cadvisor, summary, resource = await snapshot(url, tls)
        [pod] = [p for p in pods["items"] if p["metadata"]["name"] == name]
        assert pod["metadata"]["ownerReferences"][0]["name"] == "e2e-deployment-79967c5968"
        uid = pod["metadata"]["uid"]
        container_id = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
        mine = [line for line in series_lines(cadvisor) if f'pod="{name}"' in line]
        assert len(mine) == 234 and all(f"/pod{uid}" in line for line in mine)
        assert any(f'name="{container_id}"' in line for line in mine)
        assert {"name": name, "namespace": namespace, "uid": uid} in [p["podRef"] for p in summary["pods"]]
        assert f'pod="{name}"'.encode() in resource
        assert kubelet.add_pod("e2e-statefulset-0") == ("scraper", "e2e-statefulset-2")

        kubelet.remove_pod(namespace, name)
        pods, cadvisor, summary, resource = await snapshot(url, tls)
        assert name not in json.dumps(pods) and uid not in json.dumps(summary)
        assert (
            name.encode() not in cadvisor and uid.encode() not in cadvisor and name.encode() not in resource
        )
        with pytest.raises(KeyError):
            kubelet.remove_pod(namespace, name)


@pytest.mark.asyncio
async def test_set_pods_scales_the_served_node(tmp_path: Path) -> None:
    async with running(tmp_path) as (kubelet, url, tls):
        keys = kubelet.set_pods(30, seed=7)
        pods, cadvisor, summary, _ = await snapshot(url, tls)
    assert len(keys) == len(pods["items"]) == 30
    assert {tuple(m) for m in POD_LABEL.findall(cadvisor.decode())} - {("", "")} == set(keys)
    # e2e-container-creating (crash-looping, only its pause container runs) has no summary
    # entry in the capture, so neither have its clones.
    in_summary = {(p["podRef"]["namespace"], p["podRef"]["name"]) for p in summary["pods"]}
    assert in_summary == {k for k in keys if not k[1].startswith("e2e-container-creating")}


def test_package_data_is_found_via_importlib_resources_and_certs_are_made(tmp_path: Path) -> None:
    root = files("exporter.replay")
    assert not (root / "certs").is_dir(), "no private key ships in the package"
    made = paths.cert_file("ca.crt").parent
    for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"):
        assert paths.cert_file(name) == made / name and (made / name).is_file()
    assert (made.stat().st_mode & 0o077) == 0, "a private directory"
    assert paths.cert_file("server.key") == demo_certs().server_key, "made once per process"
    for fixture in (CADVISOR, PODS, SUMMARY):
        assert (root / "data" / fixture.name).read_bytes() == fixture.read_bytes()
    kubelet = ReplayKubelet.from_package_data(tmp_path / "token")
    assert kubelet.node_name == "datagen-1-35" and len(kubelet.podlist["items"]) == 24


@pytest.mark.asyncio
async def test_client_certificate_chains_to_the_demo_ca() -> None:
    certs = demo_certs()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca_cert))
    server.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(certs.ca_cert))
    client.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    peer: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.set_result(writer.get_extra_info("peercert"))
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("localhost", port, ssl=client)  # DNS:localhost SAN
    subject = dict(x[0] for x in (await asyncio.wait_for(peer, 5))["subject"])
    writer.close()
    listener.close()
    await listener.wait_closed()
    assert subject["commonName"] == "kubebridge-replay-client"
    assert subject["organizationName"] == "system:masters"


# -- synthetic nodes ------------------------------------------------------------------


@functools.cache
def cloned(count: int, seed: int = 0) -> tuple[bytes, dict]:
    return synth.clone_pods(CADVISOR.read_bytes(), json.loads(PODS.read_bytes()), count, seed)


@pytest.mark.parametrize("count", [110, 250])
def test_synth_sizes_and_parse(count: int) -> None:
    payload, podlist = cloned(count)
    series, size = SIZES[count]
    assert len(podlist["items"]) == count
    assert abs(len(series_lines(payload)) - series) <= series * 0.02
    assert abs(len(payload) - size) <= size * 0.02
    parsed = sum(len(f.samples) for f in text_string_to_metric_families(payload.decode()))
    assert parsed == len(series_lines(payload))
    assert re.search(r"} \S+ 1782468\d{6}\n", payload.decode())  # sample timestamps kept


def test_synth_keeps_families_contiguous_and_sorted() -> None:
    payload, _ = cloned(110)
    seen: set[str] = set()
    current, previous = None, ""
    for line in payload.decode().splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in seen, f"{current} has two HELP blocks"
            seen.add(current)
            previous = ""
        elif not line.startswith("#"):
            assert re.split(r"[{ ]", line, maxsplit=1)[0] == current and line > previous
            previous = line
    original = {line.split()[2] for line in CADVISOR.read_text().splitlines() if line.startswith("# HELP ")}
    assert seen == original


def test_synth_pods_and_series_match_and_identities_are_fresh() -> None:
    payload, podlist = cloned(110)
    original = json.loads(PODS.read_bytes())["items"]
    originals = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in original}
    old_tokens = {p["metadata"]["uid"] for p in original} | set(CONTAINER_ID.findall(CADVISOR.read_text()))
    old_tokens |= {t.replace("-", "_") for t in old_tokens}
    old_re = re.compile("|".join(map(re.escape, old_tokens)))
    by_key = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in podlist["items"]}
    assert len(by_key) == 110
    lines_by_pod: dict[tuple[str, str], list[str]] = {}
    for line in series_lines(payload):
        match = POD_LABEL.search(line)
        if match and match.group(2):
            lines_by_pod.setdefault((match.group(1), match.group(2)), []).append(line)
    assert set(lines_by_pod) == set(by_key)  # every pod has series and vice versa
    for key, pod in by_key.items():
        uid = pod["metadata"]["uid"]
        assert all(f"/pod{uid}" in line for line in lines_by_pod[key] if 'id="/kubepods' in line)
        if key not in originals:
            assert not any(old_re.search(line) for line in lines_by_pod[key]), key
            assert not old_re.search(json.dumps(pod["status"])) and uid not in old_tokens
    digest = "metrics-server@sha256:b2d2efaf5ac3b366ed0f839d2412a2c4279d4fc2a2a733f12c52133faed36c41"
    copies = sum(1 for k in by_key if k[1].startswith("metrics-server-"))
    assert copies > 1 and payload.decode().count(digest) == copies * CADVISOR.read_text().count(
        digest
    )  # image kept
    names = [k[1] for k in by_key]
    assert "e2e-statefulset-2" in names and any(
        re.fullmatch(r"kube-apiserver-\w{5}-datagen-1-35", n) for n in names
    )


def test_synth_is_deterministic_per_seed() -> None:
    assert synth.clone_pods(CADVISOR.read_bytes(), json.loads(PODS.read_bytes()), 40, seed=3) == cloned(40, 3)
    assert cloned(40, 3)[0] != cloned(40, 4)[0]
    assert cloned(18)[0] == CADVISOR.read_bytes()  # the captured pods themselves are untouched


def test_synth_rewrites_systemd_cgroup_shapes() -> None:
    # The captures use the cgroupfs driver; build the systemd-driver shape of the same
    # payload (a test-only transformation) to check both id shapes are rewritten.
    def systemd(match: re.Match[str]) -> str:
        qos, uid, container = match.group(1) or "", match.group(2).replace("-", "_"), match.group(3)
        slices = "/kubepods.slice" + (
            f"/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice" if qos else f"/kubepods-pod{uid}.slice"
        )
        return f'id="{slices}' + (f"/cri-containerd-{container}.scope" if container else "") + '"'

    shaped = re.sub(
        r'id="/kubepods/(?:(besteffort|burstable)/)?pod([0-9a-f-]+)(?:/([0-9a-f]{64}))?"',
        systemd,
        CADVISOR.read_text(),
    )
    payload, podlist = synth.clone_pods(shaped.encode(), json.loads(PODS.read_bytes()), 36)
    clone = podlist["items"][-1]
    uid = clone["metadata"]["uid"].replace("-", "_")
    container_id = clone["status"]["containerStatuses"][0]["containerID"].split("//")[1]
    text = payload.decode()
    assert f"pod{uid}.slice/cri-containerd-{container_id}.scope" in text
    assert text.count(f'pod="{clone["metadata"]["name"]}"') == shaped.count(
        'pod="e2e-deployment-79967c5968-zjslc"'
    )


def test_synth_on_the_real_systemd_docker_capture() -> None:
    # The 1.16 capture is a real systemd-driver + docker node: ids like
    # kubepods-besteffort-pod<uid_>.slice/docker-<id>.scope, names k8s_<c>_<pod>_<ns>_<uid>_<n>.
    cadvisor = (Fixtures("cadvisor") / "nri-k8s-1.16-kubelet-metrics-cadvisor.txt").read_bytes()
    pods = json.loads((KUBELET / "nri-k8s-1.16-kubelet-pods.json").read_bytes())
    payload, podlist = synth.clone_pods(cadvisor, pods, 40)
    old = {p["metadata"]["uid"] for p in pods["items"]} | set(CONTAINER_ID.findall(cadvisor.decode()))
    old_re = re.compile("|".join(map(re.escape, old | {t.replace("-", "_") for t in old})))
    clone = podlist["items"][-1]
    name, uid = clone["metadata"]["name"], clone["metadata"]["uid"]
    mine = [line for line in series_lines(payload) if f'pod="{name}"' in line]
    assert mine and not any(old_re.search(line) for line in mine)
    assert any(f"-pod{uid.replace('-', '_')}.slice/docker-" in line for line in mine)
    assert any(f"_{name}_{clone['metadata']['namespace']}_{uid}_" in line for line in mine)
    assert sum(len(f.samples) for f in text_string_to_metric_families(payload.decode())) == len(
        series_lines(payload)
    )


def test_remove_pod_functions() -> None:
    payload = synth.remove_pod(CADVISOR.read_bytes(), "kube-system", "coredns-7d764666f9-qdcxt")
    assert b"coredns-7d764666f9-qdcxt" not in payload
    assert len(series_lines(payload)) == len(series_lines(CADVISOR.read_bytes())) - 214
    podlist = synth.remove_pod_from_podlist(
        json.loads(PODS.read_bytes()), "kube-system", "coredns-7d764666f9-qdcxt"
    )
    assert len(podlist["items"]) == 23
    summary = synth.remove_pod_from_summary(
        json.loads(SUMMARY.read_bytes()), "kube-system", "coredns-7d764666f9-qdcxt"
    )
    assert len(summary["pods"]) == 16


async def test_demo_etcd_without_the_binary_serves_the_recordings(tmp_path):
    """Where no `etcd` binary is installed, the demo's etcd answers from the recorded payloads."""
    from exporter.replay.etcd import ReplayEtcd
    from exporter.replay.paths import data_file

    etcd = ReplayEtcd(tmp_path)
    etcd.real = False
    url = await etcd.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/metrics") as r:
                assert r.content_type == "text/plain"
                assert await r.read() == data_file("nri-k8s-1.35-etcd-metrics.txt").read_bytes()
            async with s.get(f"{url}/health") as r:
                assert await r.json() == {"health": "true", "reason": ""}
            for part in ("self", "store", "leader"):
                async with s.get(f"{url}/v2/stats/{part}") as r:
                    assert r.content_type == "application/json"
                    assert await r.read() == data_file(f"beats-etcd-v2-stats-{part}.json").read_bytes()
            async with s.post(f"{url}/v3/maintenance/status") as r:
                assert (await r.json())["version"] == "3.6.6"
    finally:
        await etcd.stop()
