"""The `docker` collector: payload rules, offline goldens, a fake daemon for timeouts and error
mapping, and a real dockerd (started here, no bridge, no iptables) for states, stats, the pod
join, events and a daemon that goes away."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiodocker.exceptions import DockerError
from aiohttp import web

from collectors import _docker as dp
from exporter import cli
from exporter import config as config_mod
from exporter.deps import Deps
from exporter.errors import ConfigError, NotPermittedError
from exporter.expfmt import Family, encode_text, parse_line
from exporter.merge import merge
from exporter.registry import get
from exporter.runner import Source, collect_all
from tests.conftest import FIXTURES, GOLDEN, pod_index

FIX = FIXTURES / "docker"
IMAGE = "kb-busybox:1.35"
POD = "web-7d9f8-abcde"
SANDBOX, APP = f"k8s_POD_{POD}_default_uid-{POD}_0", f"k8s_app_{POD}_default_uid-{POD}_0"
GHOST = "k8s_app_ghost_default_uid-ghost_0"  # a pod the index does not know
PODS = {"items": [{
    "metadata": {"name": POD, "namespace": "default", "uid": "uid-web",
                 "labels": {"app": "web", "pod-template-hash": "7d9f8"},
                 "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8", "controller": True}]},
    "spec": {"nodeName": "n1"}}]}


def collector(socket_url: str = "unix:///nonexistent/docker.sock", **options: Any) -> Any:
    """A docker collector on `socket_url`, joining against a PodIndex holding POD."""
    cfg = config_mod.parse({"collectors": {"docker": {"socket": socket_url, **options}}}, env={})
    return get("docker").factory(Deps(cfg, None, pod_index(PODS, cfg)), cfg.collectors["docker"])


def samples(families: list[Family]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """family name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in families:
        for line in fam.lines:
            s = parse_line(line)
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(families: list[Family], metric: str, /, **labels: str) -> float | None:
    """The one sample of `metric` whose labels include `labels` (None if there is none)."""
    found = [v for lab, v in samples(families).get(metric, []) if labels.items() <= lab.items()]
    assert len(found) <= 1, (metric, labels, found)
    return found[0] if found else None


async def _until(deadline: float, check: Any) -> None:
    """Poll `check` (sync or async) until true, failing after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not ((await r) if asyncio.iscoroutine(r := check()) else r):
        assert time.monotonic() < end, "deadline passed"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- payload rules (pure)

@pytest.mark.parametrize("ref,short", [
    ("busybox", "busybox"),
    ("nginx:1.25", "nginx:1.25"),
    ("nginx:latest", "nginx"),
    ("docker.io/library/nginx:1.25@sha256:" + "a" * 64, "nginx:1.25"),
    ("index.docker.io/grafana/grafana:10.0", "grafana/grafana:10.0"),
    ("k8s.gcr.io/pause:3.1", "k8s.gcr.io/pause:3.1"),
    ("localhost:5000/team/app@sha256:" + "b" * 64, "localhost:5000/team/app"),
    ("sha256:0cb40641836c461bc97c793971d84d758371ed682042457523e4ae701efe7ec9", "0cb40641836c"),
    ("", ""),
])
def test_short_image(ref, short):
    assert dp.short_image(ref) == short


@pytest.mark.parametrize("container,state", [
    ({"State": "running", "Status": "Up 2 hours"}, "running"),
    ({"State": "paused"}, "paused"),
    ({"State": "stopped"}, "exited"),          # podman
    ({"State": "weird"}, "other"),
    ({"Status": "Up Less than a second"}, "running"),   # API 1.22: no State
    ({"Status": "Up 3 minutes (Paused)"}, "paused"),
    ({"Status": "Exited (0) 2 days ago"}, "exited"),
    ({"Status": "Created"}, "created"),
    ({"Status": "Restarting (1) 5 seconds ago"}, "restarting"),
    ({"Status": "Dead"}, "dead"),
    ({"Status": "Removal In Progress"}, "removing"),
    ({}, "other"),
])
def test_state_of(container, state):
    assert dp.state_of(container) == state


@pytest.mark.parametrize("event,key", [
    ({"Type": "container", "Action": "exec_start: sh -c ls /"}, ("container", "exec_start")),
    ({"Type": "container", "Action": "health_status: healthy"}, ("container", "health_status")),
    ({"Type": "container", "Action": "frobnicate"}, ("container", "other")),
    ({"Type": "gizmo", "Action": "start"}, ("other", "start")),
    ({"status": "die", "id": "x", "from": "busybox", "time": 1}, ("container", "die")),  # API < 1.22
    ({"status": "untag", "id": "sha256:x", "time": 1}, ("image", "untag")),
])
def test_event_key_is_bounded(event, key):
    assert dp.event_key(event) == key


def test_event_time_in_nanoseconds():
    assert dp.event_time({"time": 12, "timeNano": 12_000_000_345}) == 12_000_000_345
    assert dp.event_time({"time": 12}) == 12_000_000_000


SANDBOX_LABELS = {"io.kubernetes.docker.type": "podsandbox", "io.kubernetes.pod.namespace": "default",
                  "io.kubernetes.pod.name": "web"}
APP_LABELS = {"io.kubernetes.docker.type": "container", "io.kubernetes.container.name": "app",
              "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.name": "web"}


@pytest.mark.parametrize("name,labels,expected", [
    ("k8s_POD_web_default_uid_0", SANDBOX_LABELS, ("default", "web", "POD", "pause")),
    ("k8s_POD_web_default_uid_0", {**SANDBOX_LABELS, "io.kubernetes.docker.type": ""},  # name only
     ("default", "web", "POD", "pause")),
    ("x", {**APP_LABELS, "io.kubernetes.container.name": "POD", "io.kubernetes.docker.type": ""},
     ("default", "web", "POD", "pause")),
    ("k8s_app_web_default_uid_0", APP_LABELS, ("default", "web", "app", "container")),
    ("k8s_POD_lookalike", {}, ("", "", "", "container")),  # not Kubernetes: no labels
])
def test_pod_of(name, labels, expected):
    assert dp.pod_of(name, labels) == expected


V1 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
      "memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300, "inactive_file": 100}},
      "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
      "blkio_stats": {"io_service_bytes_recursive": [
          {"major": 8, "minor": 0, "op": "Read", "value": 4096},
          {"major": 8, "minor": 0, "op": "Write", "value": 8},
          {"major": 8, "minor": 16, "op": "Read", "value": 4},
          {"major": 8, "minor": 0, "op": "Total", "value": 4104}]},
      "pids_stats": {"current": 3}}
V2 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000_000}},
      "memory_stats": {"usage": 1000, "stats": {"inactive_file": 100, "file": 400}},
      "blkio_stats": {"io_service_bytes_recursive": None}, "pids_stats": {"current": 1}}


def _stat_values(st: dict, os_type: str = "linux") -> dict[tuple[str, str], float]:
    return {(m.name.removeprefix("kubebridge_docker_container_"), extra.get("interface", "")): v
            for m, v, extra in dp.stats_samples(st, os_type)}


def test_stats_cgroup_v1():
    assert _stat_values(V1) == {
        ("cpu_usage_seconds_total", ""): 2.5, ("memory_usage_bytes", ""): 1000,
        ("memory_working_set_bytes", ""): 700,  # hierarchical total_inactive_file wins on v1
        ("network_receive_bytes_total", "eth0"): 10, ("network_transmit_bytes_total", "eth0"): 20,
        ("network_receive_bytes_total", "eth1"): 1, ("network_transmit_bytes_total", "eth1"): 2,
        ("blkio_read_bytes_total", ""): 4100, ("blkio_write_bytes_total", ""): 8, ("pids", ""): 3}


def test_stats_cgroup_v2_and_missing_parts():
    # No networks (network none / shared netns), blkio null (no io controller): no series.
    assert _stat_values(V2) == {("cpu_usage_seconds_total", ""): 0.001, ("memory_usage_bytes", ""): 1000,
                                ("memory_working_set_bytes", ""): 900, ("pids", ""): 1}
    assert dp.working_set(100, {"inactive_file": 500}) == 100  # never negative
    assert _stat_values({}) == {}
    assert _stat_values({"cpu_stats": {"cpu_usage": {"total_usage": 10_000_000}}}, "windows") == {
        ("cpu_usage_seconds_total", ""): 1.0}  # 100 ns units


@pytest.mark.parametrize("path", sorted(FIX.glob("*info*.json")), ids=lambda p: p.stem)
def test_info_tolerates_every_shape(path):
    labels = dp.info_labels(None, json.loads(path.read_text()))
    assert set(labels) <= set(dp.INFO_LABELS) and all(isinstance(v, str) and v for v in labels.values())
    assert labels["version"] and labels["storage_driver"] and labels["os_type"]
    assert "api_version" not in labels  # only /version has it: left out, not empty


# ---------------------------------------------------------------- offline (kubebridge transform)

OFFLINE = sorted(p for p in FIX.iterdir() if p.suffix in (".json", ".jsonl"))


@pytest.mark.parametrize("path", OFFLINE, ids=lambda p: p.stem)
def test_offline_golden(path, golden):
    res = collector().process(path.read_bytes())
    assert res.families and not res.malformed
    golden(f"docker-{path.stem}.txt", encode_text(merge([("docker", res.families)])[0]))


def test_offline_capture_golden_with_pod_join(golden):
    # A real dockerd's answers (version, info, listing, two stats, events) in one transform: the
    # stats series get their pod labels from the listing and the join from the pod index.
    c = collector()
    res = c.process(*(p.read_bytes() for p in sorted(FIX.glob("dockerd-20.10-cgv1-*"))))
    assert res.join_misses == 0
    fams = res.families
    for name, kind in ((APP, "container"), (SANDBOX, "pause")):
        assert value(fams, "kubebridge_docker_container_memory_working_set_bytes", name=name, pod=POD,
                     workload="web", cgroup_kind=kind) > 0
    assert value(fams, "kubebridge_docker_events_total", type="container", action="exec_start") == 1
    golden("docker-dockerd-20.10-cgv1-all.txt", encode_text(merge([("docker", fams)])[0]))


def test_offline_synthetic_stats_golden(golden):
    # No live capture can show network counters (tests keep containers off any network), so the
    # v1 shape above (interfaces, per-device blkio) goes through the offline path too. SYNTHETIC.
    listing = [{"Id": "c1", "Names": ["/web"], "Image": "docker.io/library/nginx:1.25", "State": "running"}]
    stats = {**V1, "id": "c1", "name": "/web"}
    res = collector().process(json.dumps(stats).encode(), json.dumps(listing).encode())
    golden("docker-synthetic-stats-v1.txt", encode_text(merge([("docker", res.families)])[0]))


def test_no_golden_has_an_empty_label_value():
    # Prometheus reads an empty label as absent: the collector leaves such labels out.
    goldens = sorted(GOLDEN.glob("docker-*.txt"))
    assert len(goldens) == len(OFFLINE) + 2  # every offline golden, the capture's and the synthetic one
    for path in goldens:
        assert not re.search(r'[{,][a-zA-Z_][a-zA-Z0-9_]*=""', path.read_text()), path.name


def test_transform_cli_matches_process(capsysbinary):
    payloads = [FIX / "docker-java-1.22-info-aufs.json", FIX / "docker-java-1.22-containers-json.json",
                FIX / "otel-dockerstats-events-mock.jsonl"]
    assert cli.main(["transform", "--source", "docker", *map(str, payloads)]) == 0
    res = collector().process(*(p.read_bytes() for p in reversed(payloads)))  # order does not matter
    assert capsysbinary.readouterr().out == encode_text(merge([("docker", res.families)])[0])


def test_version_payload_fills_api_version():
    version = json.dumps({"Version": "20.10.24", "ApiVersion": "1.41", "Os": "linux"}).encode()
    fams = collector().process(version)
    assert value(fams.families, "kubebridge_docker_info", version="20.10.24", api_version="1.41",
                 os_type="linux") == 1
    (labels, _), = samples(fams.families)["kubebridge_docker_info"]
    assert "storage_driver" not in labels  # only /info has it: left out, not empty


def test_options_are_checked():
    for bad in ({"socket": "tcp://1.2.3.4:2375"}, {"max_concurrency": 0}, {"stats_timeout": -1.0}):
        with pytest.raises(ConfigError):
            config_mod.parse({"collectors": {"docker": bad}}, env={})
    reg = get("docker")
    assert (reg.default_enabled, reg.scope) == (False, "node")


# ---------------------------------------------------------------- a fake daemon on a unix socket

@contextlib.asynccontextmanager
async def fake_daemon(handlers: dict[str, Any]) -> AsyncIterator[str]:
    """An aiohttp server on a unix socket answering Engine API paths (any /vX.Y prefix)."""
    app = web.Application()
    for path, handler in handlers.items():
        app.router.add_get(path, handler)
        app.router.add_get("/{ver}" + path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    root = Path(tempfile.mkdtemp(prefix="kb-fake-"))  # short: unix socket paths are limited
    try:
        await web.UnixSite(runner, str(root / "d.sock")).start()
        yield f"unix://{root / 'd.sock'}"
    finally:
        await runner.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _json(doc: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(doc)
    return handler


def _status(code: int) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"message": f"status {code}"}, status=code)
    return handler


@pytest.mark.parametrize("code,status,reason", [(403, "not_permitted", "not_permitted"),
                                                (401, "not_permitted", "not_permitted"),
                                                (500, "down", "http_status")])
async def test_daemon_errors_map_to_source_status(code, status, reason):
    handlers = {"/version": _json({"ApiVersion": "1.41", "Version": "fake"}), "/info": _status(code)}
    async with fake_daemon(handlers) as url:
        c = collector(url)
        try:
            out = await Source("docker", c).collect(5.0)
        finally:
            await c.close()
    assert (out.status, out.reason) == (status, reason)


@pytest.mark.parametrize("api,one_shot", [("1.41", "1"), ("1.40", None)])
async def test_stats_bounded_concurrency_timeout_and_gone(api, one_shot):
    never = asyncio.Event()
    inflight, peak, seen_params = 0, 0, []
    ids = [f"c{i}" for i in range(6)] + ["hang", "gone"]

    async def stats(request: web.Request) -> web.Response:
        nonlocal inflight, peak
        cid = request.match_info["id"]
        seen_params.append(request.query.get("one-shot"))
        if cid == "gone":
            return web.json_response({"message": "No such container"}, status=404)
        inflight += 1
        peak = max(peak, inflight)
        try:
            if cid == "hang":
                await never.wait()  # a stats call that never answers
            for _ in range(5):
                await asyncio.sleep(0)  # let the other calls in, if the collector allowed them
            return web.json_response({"cpu_stats": {"cpu_usage": {"total_usage": 10**9}},
                                      "pids_stats": {"current": 1}})
        finally:
            inflight -= 1

    listing = [{"Id": cid, "Names": [f"/{cid}"], "Image": "busybox", "State": "running"} for cid in ids]
    listing.append({"Id": "p", "Names": ["/p"], "Image": "busybox", "State": "paused"})
    handlers = {"/version": _json({"ApiVersion": api, "Version": "fake"}),
                "/info": _json({"OSType": "linux"}),
                "/containers/json": _json(listing), "/containers/{id}/stats": stats}
    async with fake_daemon(handlers) as url:
        c = collector(url, max_concurrency=2, stats_timeout=0.3)
        try:
            fams = list(await c.collect(10.0))
        finally:
            await c.close()
            never.set()  # let the hung handler finish, or the server's cleanup waits for it
    assert peak <= 2
    assert set(seen_params) == {one_shot}
    cpu = samples(fams)["kubebridge_docker_container_cpu_usage_seconds_total"]
    assert sorted(lab["name"] for lab, _ in cpu) == [f"c{i}" for i in range(6)]  # not hang/gone/paused
    assert value(fams, "kubebridge_docker_stats_failures", reason="timeout") == 1
    assert value(fams, "kubebridge_docker_stats_failures", reason="gone") == 1
    assert value(fams, "kubebridge_docker_containers", state="running") == 8


async def test_events_resume_after_a_broken_stream_without_double_counting():
    never = asyncio.Event()
    t0 = time.time_ns() + 10**9  # after run() starts: not history
    first = [{"Type": "container", "Action": "start", "timeNano": t0},
             {"Type": "container", "Action": "exec_start: sh -c 'echo hi'", "timeNano": t0 + 5}]
    sinces: list[int] = []

    async def events(request: web.Request) -> web.StreamResponse:
        sec, _, ns = request.query["since"].partition(".")
        sinces.append(int(sec) * 10**9 + int(ns))
        resp = web.StreamResponse()
        await resp.prepare(request)
        # Worst case: the daemon replays everything it has, whatever `since` says.
        later = [{"Type": "container", "Action": "die", "timeNano": t0 + 9}] if len(sinces) > 1 else []
        for ev in [*first, *later]:
            await resp.write(json.dumps(ev).encode() + b"\n")
        if len(sinces) > 1:
            await never.wait()
        return resp  # the first stream just ends (a daemon restart)

    async with fake_daemon({"/version": _json({"ApiVersion": "1.41"}), "/events": events}) as url:
        c = collector(url)
        c.backoff_min = 0.01
        task = asyncio.create_task(c.run())
        try:
            await _until(10, lambda: c.events is not None and c.events[("container", "die")] == 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            never.set()
    assert sinces[0] < t0 and sinces[1] == t0 + 6  # resumed right after the last event counted
    assert {k: v for k, v in c.events.items() if v} == {
        ("container", "start"): 1, ("container", "exec_start"): 1, ("container", "die"): 1}


class _Refused(Exception):
    """Stands for aiohttp's ClientConnectorError, which carries the socket's OSError."""

    def __init__(self, err: OSError) -> None:
        self.os_error = err


@pytest.mark.parametrize("err,expected", [
    (PermissionError(13, "Permission denied"), NotPermittedError),
    (ConnectionRefusedError(111, "Connection refused"), ConnectionError)])
def test_socket_errors_are_mapped(err, expected):
    # aiodocker turns a failed connect into DockerError(900) raised while handling the OSError.
    with pytest.raises(expected):
        with dp.mapped("unix:///run/docker.sock"):
            try:
                raise _Refused(err)
            except _Refused as refused:
                raise DockerError(900, "Cannot connect to Docker Engine") from refused


async def test_missing_socket_is_no_data_and_client_is_lazy():
    c = collector("unix:///nonexistent/kb/docker.sock")
    out = await Source("docker", c).collect(1.0)
    assert out.status == "no_data" and c.docker is None


# ---------------------------------------------------------------- a real dockerd

DOCKERD, DOCKER = shutil.which("dockerd"), shutil.which("docker")


class Dockerd:
    """A private dockerd: own socket, data and exec roots; no bridge, no iptables."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = 30.0) -> None:
        (self.root / "exec").mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [DOCKERD, "--host", self.url, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "exec" / "dockerd.pid"),
                 "--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--userland-proxy=false", "--shutdown-timeout", "2"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("dockerd did not start:\n" + self.log.read_text()[-2000:])
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.sock))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:  # its own session: takes its containerd along
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def cli(self, *args: str) -> str:
        """Run the docker CLI against this daemon."""
        res = subprocess.run([DOCKER, "-H", self.url, *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout.strip()

    async def acli(self, *args: str) -> str:
        """The same, without blocking the event loop (the events stream is read meanwhile)."""
        proc = await asyncio.create_subprocess_exec(DOCKER, "-H", self.url, *args,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, (args, err)
        return out.decode().strip()


def start_or_skip(d: Dockerd) -> None:
    """Start `d`, or skip when this machine cannot run dockerd at all."""
    if not DOCKERD or not DOCKER:
        pytest.skip("dockerd/docker not installed (apt-get install -y --no-install-recommends docker.io); "
                    "the podman fallback is not implemented")
    try:
        d.start()
    except RuntimeError as exc:
        pytest.skip(f"dockerd cannot run on this machine (podman fallback not implemented): {exc}")


@contextlib.contextmanager
def dockerd_at(root: Path, started: bool = True) -> Iterator[Dockerd]:
    """A Dockerd in `root` (started unless told otherwise), stopped and removed afterwards."""
    d = Dockerd(root)
    try:
        if started:
            start_or_skip(d)
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs tarball of Debian's static busybox (no registry needed), built once a session."""
    if not DOCKERD:
        pytest.skip("dockerd not installed (apt-get install -y --no-install-recommends docker.io)")
    work = tmp_path_factory.mktemp("busybox")
    res = subprocess.run(["apt-get", "download", "busybox-static"], cwd=work, capture_output=True,
                         text=True, timeout=300)
    debs = sorted(work.glob("busybox-static_*.deb"))
    assert debs, f"apt-get download busybox-static failed: {res.stderr[-1000:]}"
    rootfs = work / "rootfs"
    subprocess.run(["dpkg", "-x", str(debs[0]), str(rootfs)], check=True)
    shutil.rmtree(rootfs / "usr" / "share", ignore_errors=True)
    for d in ("tmp", "proc", "sys", "dev", "etc"):
        (rootfs / d).mkdir(exist_ok=True)
    for cmd in ("sh", "sleep", "echo"):
        (rootfs / "bin" / cmd).symlink_to("busybox")
    tar = work / "busybox.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    return tar


def _pod_labels(container: str, sandbox: bool = False, pod: str = POD) -> list[str]:
    labels = {"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.name": pod,
              "io.kubernetes.pod.uid": f"uid-{pod}"}
    if sandbox:
        labels["io.kubernetes.docker.type"] = "podsandbox"
    else:
        labels.update({"io.kubernetes.docker.type": "container", "io.kubernetes.container.name": container})
    return [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]


@pytest.fixture(scope="module")
def scene(busybox_tar: Path) -> Iterator[Dockerd]:
    """A dockerd with a pod imitation (pause + app), a pod unknown to the index, and plain
    containers running, paused, exited and created. Left in the same state by every test."""
    with dockerd_at(Path(tempfile.mkdtemp(prefix="kb-docker-"))) as d:
        d.cli("import", str(busybox_tar), IMAGE)
        run = ("run", "-d", "--init", "--network", "none")
        d.cli(*run, "--name", SANDBOX, *_pod_labels("POD", sandbox=True), IMAGE, "sleep", "600")
        d.cli(*run, "--name", APP, *_pod_labels("app"), IMAGE, "sleep", "600")
        d.cli(*run, "--name", GHOST, *_pod_labels("app", pod="ghost"), IMAGE, "sleep", "600")
        d.cli(*run, "--name", "plain", IMAGE, "sleep", "600")
        d.cli(*run, "--name", "paused-one", IMAGE, "sleep", "600")
        d.cli(*run, "--name", "stopped-one", IMAGE, "sleep", "600")
        d.cli("create", "--init", "--network", "none", "--name", "created-one", IMAGE, "sleep", "600")
        d.cli("pause", "paused-one")
        d.cli("stop", "stopped-one")
        yield d


async def test_states_stats_and_pod_join(scene):
    c = collector(scene.url)
    assert c.docker is None  # created lazily
    try:
        fams = list(await c.collect(30.0))
    finally:
        await c.close()
    assert c.docker is None
    assert value(fams, "kubebridge_docker_up") == 1
    info = samples(fams)["kubebridge_docker_info"][0][0]
    assert info["version"], info
    assert info["api_version"] and info["storage_driver"] and info["os_type"] == "linux"
    assert info["cgroup_version"] in ("1", "2") and info["cgroup_driver"] in ("cgroupfs", "systemd")
    states = {(lab["state"], lab.get("namespace", ""), lab["image"]): v
              for lab, v in samples(fams)["kubebridge_docker_containers"]}
    assert states == {("running", "default", IMAGE): 3, ("running", "", IMAGE): 1,
                      ("paused", "", IMAGE): 1, ("exited", "", IMAGE): 1, ("created", "", IMAGE): 1}

    cpu_samples = samples(fams)["kubebridge_docker_container_cpu_usage_seconds_total"]
    cpu = {lab["name"]: lab for lab, _ in cpu_samples}
    app, pause = APP, SANDBOX
    assert set(cpu) == {app, pause, GHOST, "plain"}  # running only
    joined = {"namespace": "default", "pod": POD, "image": IMAGE, "label_app": "web",
              "workload": "web", "workload_kind": "Deployment", "node": "n1", "collector": "docker"}
    assert cpu[app].items() >= {**joined, "container": "app", "cgroup_kind": "container"}.items()
    assert cpu[pause].items() >= {**joined, "container": "POD", "cgroup_kind": "pause"}.items()
    assert "workload" not in cpu[GHOST]  # unknown pod: no join ...
    assert c.stats["join_misses"] == 1                                  # ... and counted
    assert cpu["plain"]["cgroup_kind"] == "container"
    assert not {"namespace", "pod", "container"} & cpu["plain"].keys()  # empty labels are left out
    for name in (app, "plain"):
        assert value(fams, "kubebridge_docker_container_memory_usage_bytes", name=name) > 0
        assert 0 < value(fams, "kubebridge_docker_container_memory_working_set_bytes", name=name) <= \
            value(fams, "kubebridge_docker_container_memory_usage_bytes", name=name)
        assert value(fams, "kubebridge_docker_container_pids", name=name) >= 1  # tini + sleep
        assert value(fams, "kubebridge_docker_container_cpu_usage_seconds_total", name=name) >= 0
        assert value(fams, "kubebridge_docker_container_blkio_read_bytes_total", name=name) >= 0
    assert value(fams, "kubebridge_docker_stats_failures", reason="timeout") == 0
    assert not any("id" in lab for lab in cpu.values())  # names, never churning ids


async def test_live_exposition_lints_clean(scene):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    c = collector(scene.url)
    try:
        fams, _ = merge([("docker", list(await c.collect(30.0)))])
    finally:
        await c.close()
    res = subprocess.run([promtool, "check", "metrics"], input=encode_text(fams), capture_output=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    assert b'=""' not in encode_text(fams)  # empty labels are left out


async def _events(c: Any) -> dict[tuple[str, str], float]:
    return {(lab["type"], lab["action"]): v
            for lab, v in samples(list(await c.collect(30.0))).get("kubebridge_docker_events_total", [])}


async def test_events_counted_from_subscription_only(scene):
    # The scene's history (6 starts, a pause, a stop...) happened before run(): never counted.
    c = collector(scene.url)
    task = asyncio.create_task(c.run())
    try:
        await _until(10, c.subscribed.is_set)
        await scene.acli("unpause", "paused-one")
        await scene.acli("pause", "paused-one")
        await scene.acli("start", "stopped-one")
        await scene.acli("exec", "stopped-one", "sh", "-c", "echo hi")
        await scene.acli("stop", "stopped-one")
        await _until(10, lambda: _has(c, ("container", "stop")))
        ev = await _events(c)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert c.docker is None  # closed when the loop stops
    for action in ("start", "stop", "die", "pause", "unpause", "exec_start", "exec_create"):
        assert ev[("container", action)] == 1, (action, ev)
    assert ev[("container", "create")] == 0 and ev[("container", "destroy")] == 0  # zero, not absent
    assert all(a in dp.EVENT_ACTIONS or a == "other" for _, a in ev)


async def _has(c: Any, key: tuple[str, str]) -> bool:
    return (await _events(c)).get(key, 0) >= 1


class Steady:
    """Another source, to show one Docker outage leaves the rest of a scrape alone."""

    async def collect(self, budget: float) -> list[Family]:
        return [Family("steady", "gauge", None, [b"steady 1"])]


async def test_daemon_down_is_source_down_and_everything_recovers():
    with dockerd_at(Path(tempfile.mkdtemp(prefix="kb-docker-")), started=False) as d:
        c = collector(d.url)  # the socket does not exist yet: "no Docker here"
        c.backoff_min, c.backoff_max = 0.05, 0.2
        sources = [Source("docker", c), Source("steady", Steady())]
        assert [o.status for o in await collect_all(sources, 10.0)] == ["no_data", "ok"]
        task = asyncio.create_task(c.run())
        try:
            start_or_skip(d)
            await _until(20, c.subscribed.is_set)
            assert [o.status for o in await collect_all(sources, 10.0)] == ["ok", "ok"]
            d.stop()  # dockerd removes its socket: after it was seen, that is an outage
            out = await collect_all(sources, 10.0)
            assert [(o.status, o.reason) for o in out] == [("down", "connect"), ("ok", "")]
            assert out[1].families and sources[0].errors == {"connect": 1}
            assert not task.done()  # the events loop keeps retrying
            d.start()
            await _until(20, c.subscribed.is_set)
            await d.acli("volume", "create", "kb-vol")
            await _until(10, lambda: _has(c, ("volume", "create")))
            assert [o.status for o in await collect_all(sources, 10.0)] == ["ok", "ok"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert c.docker is None
