"""bench.node runs end to end and reports what the issue asks for (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
