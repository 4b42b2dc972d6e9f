"""`pip install .` ships what the demo needs: code, certs, captured payloads, the console script."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_contents(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("kubebridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("exporter/cli.py", "collectors/cadvisor.py", "exporter/replay/certs/ca.crt",
                   "exporter/replay/certs/server.key",
                   "exporter/replay/data/nri-k8s-1.35-kubelet-metrics-cadvisor.txt",
                   "exporter/replay/data/nri-k8s-1.35-kubelet-pods.json"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "kubebridge = exporter.cli:main" in text
