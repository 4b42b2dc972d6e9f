"""bench.node runs end to end and reports what the issue asks for (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.node import load_capture, perturb

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("series", "bytes", "baseline_ms", "cold_ms", "warm_ms", "floor_ms", "peak_rss_bytes")


def _samples(payload: bytes) -> list[bytes]:
    return [ln for ln in payload.split(b"\n") if ln and not ln.startswith(b"#")]


def _series(line: bytes) -> tuple[bytes, bytes]:
    """(name and labels, `value [timestamp]`)."""
    key, sep, rest = line.rpartition(b"} ")
    return (key, rest) if sep else tuple(line.split(b" ", 1))  # type: ignore[return-value]


def test_json_report_for_a_small_node() -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "bench.node", "--pods", "5", "--json", "--repeat", "1"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    for key in KEYS:
        assert isinstance(report[key], (int, float)) and not isinstance(report[key], bool), key
        assert report[key] > 0, key
    assert report["series"] > 0 and report["pods"] == 5
    # kubebridge's output is counted and, warm, byte for byte what a fresh collector produces.
    assert report["series_out"] > 0 and report["baseline_series_out"] == report["series"]
    assert report["warm_matches_cold"] is True


def test_variants_keep_every_series_and_change_values() -> None:
    payload, _ = load_capture()
    variant = perturb(payload, 1)
    before, after = _samples(payload), _samples(variant)
    assert len(before) == len(after) > 0
    assert perturb(payload, 1) == variant  # deterministic
    changed_values = stamped = 0
    for a, b in zip(before, after):
        (key_a, rest_a), (key_b, rest_b) = _series(a), _series(b)
        assert key_a == key_b  # same series
        if b" " in rest_a:  # stamped (usage) sample: the line must differ, as in a next scrape
            stamped += 1
            assert rest_a != rest_b
            changed_values += rest_a.split(b" ")[0] != rest_b.split(b" ")[0]
        else:  # unstamped spec/machine sample: constant between real scrapes too
            assert a == b
    assert stamped > len(before) * 0.9
    assert changed_values > 0
    # Comments (HELP/TYPE) are untouched.
    assert [ln for ln in payload.split(b"\n") if ln.startswith(b"#")] == \
        [ln for ln in variant.split(b"\n") if ln.startswith(b"#")]


E2E_KEYS = ("raw_ms", "kb_ms", "ratio", "kb_peak_rss_bytes", "kb_idle_rss_bytes", "series_raw", "series_kb",
            "pods", "duration_s", "interval_s", "scrapes", "prometheus_version")


def test_e2e_json_report_for_a_small_node() -> None:
    """bench.e2e runs a fake kubelet, kubebridge and a real Prometheus and reports; no timing asserted."""
    if not os.access("/usr/bin/prometheus", os.X_OK):
        pytest.skip("/usr/bin/prometheus not installed (apt-get install -y prometheus)")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "bench.e2e", "--pods", "3", "--duration", "12",
                           "--interval", "2", "--json"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    missing = [key for key in E2E_KEYS if key not in report]
    assert not missing, missing
    assert report["pods"] == 3 and report["interval_s"] == 2
    # kubebridge serves more sources than raw cAdvisor (kubelet, probes, stats, pods, healthz, itself).
    assert report["series_kb"] > report["series_raw"] > 0
    assert report["up"] == {"raw": True, "kubebridge": True}, report["last_error"]
    assert report["scrapes"] > 0 and report["scrapes_by_job"]["kubebridge"] > 0
    assert report["ratio"] > 0
    assert report["kb_peak_rss_bytes"] > 0 and report["kb_idle_rss_bytes"] > 0
    assert report["prometheus_version"]
