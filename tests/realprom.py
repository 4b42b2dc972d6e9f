"""Helpers to run a real Prometheus (Debian's `prometheus`) against kubebridge in tests."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


@contextmanager
def demo(port: int, cluster: str = "demo") -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo",
                             "--web.listen-address", f"127.0.0.1:{port}", "--duration", "180",
                             "--cluster", cluster],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def prometheus(tmp: Path, targets: list[str], interval: str = "1s",
               jobs: list[dict[str, Any]] | None = None, rule_files: tuple[Path, ...] = ()) -> Iterator[str]:
    """A Prometheus scraping `targets` (job kubebridge), plus any extra scrape configs `jobs`,
    evaluating `rule_files` as often."""
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [*([{"job_name": "kubebridge", "static_configs": [{"targets": targets}]}]
                             if targets else []), *(jobs or [])]}
    with prometheus_process(tmp, "prometheus", config, f"--storage.tsdb.path={tmp / 'data'}") as url:
        yield url


@contextmanager
def prometheus_process(tmp: Path, name: str, config: dict[str, Any], *flags: str) -> Iterator[str]:
    """Prometheus with `config` and extra `flags` (storage, agent mode, the remote-write receiver)
    on a loopback port, its stderr in tmp/<name>.log; yields its URL once ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (CI installs Debian's prometheus)")
    port = free_port()
    cfg = tmp / f"{name}.yml"
    cfg.write_text(json.dumps(config))
    argv = [binary, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}", *flags]
    with (tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query, evaluated now or at `at` (Unix seconds)."""
    q = urllib.parse.urlencode({"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def poll(url: str, promql: str, deadline: float = 30.0) -> list[dict[str, Any]]:
    """Wait until a query returns something (the first sample takes 5-6 s to appear)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        res = query(url, promql)
        if res:
            return res
        time.sleep(0.5)
    raise AssertionError(f"no result for {promql}")


def targets(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as r:
        return json.load(r)["data"]["activeTargets"]
