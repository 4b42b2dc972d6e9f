"""bench.soak runs end to end and reports what issue 13 asks for (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> list[dict]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "bench.soak", *args, "--json"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)  # exactly one JSON list on stdout


def test_burst_and_soak_report() -> None:
    burst, = _run("--burst", "3", "--rounds", "1")
    assert burst["mode"] == "burst" and burst["concurrent"] == 3
    assert burst["scrapes"] + burst["failures"] == 3 and burst["failures"] == 0
    assert burst["p99_s"] >= burst["p50_s"] > 0
    assert burst["rss_peak_mib"] >= burst["rss_start_mib"] > 0
    soak, = _run("--duration", "4", "--scrapers", "2", "--churn", "1")
    assert soak["mode"] == "soak" and soak["scrapes"] > 0 and soak["failures"] == 0
    assert soak["rss_end_mib"] > 0 and soak["rss_peak_mib"] > 0
