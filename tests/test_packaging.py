"""`pip install .` ships what the demo needs (code, captured payloads, the console script) and
nothing secret: no private key, no certificate (the demo makes its own at start, see
exporter/replay/democerts.py), plus the LICENSE. The image's dependency lock covers setup.cfg."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out_dir = tmp_path_factory.mktemp("wheel")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(out_dir), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (path,) = out_dir.glob("kubebridge-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contents(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for needed in ("exporter/cli.py", "collectors/cadvisor.py", "exporter/replay/democerts.py",
                   "exporter/replay/data/nri-k8s-1.35-kubelet-metrics-cadvisor.txt",
                   "exporter/replay/data/nri-k8s-1.35-kubelet-pods.json"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kubebridge = exporter.cli:main" in wheel.read(entry).decode()


def test_wheel_ships_no_keys_or_certificates(wheel: zipfile.ZipFile) -> None:
    secret = [n for n in wheel.namelist()
              if n.endswith((".key", ".pem", ".crt", ".p12", ".pfx")) or "/certs/" in n]
    assert not secret, f"keys or certificates in the wheel: {secret}"
    for name in wheel.namelist():
        if name.endswith((".py", ".txt", ".json", ".yaml", ".md")):
            assert b"PRIVATE KEY-----" not in wheel.read(name), f"{name} embeds a private key"


def test_wheel_carries_the_apache_license(wheel: zipfile.ZipFile) -> None:
    (license_file,) = [n for n in wheel.namelist() if re.search(r"\.dist-info/(licenses/)?LICENSE$", n)]
    text = wheel.read(license_file).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text, "the full text"
    assert text == (ROOT / "LICENSE").read_text()
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^License: Apache-2\.0$", metadata, re.M)
    # The demo's certificate maker is optional: `pip install 'kubebridge[demo]'`.
    assert re.search(r"^Requires-Dist: trustme.*extra == .demo.", metadata, re.M)
    assert not re.search(r"^Requires-Dist: (trustme|cryptography)[^;]*$", metadata, re.M), \
        "the exporter needs neither at run time"


def install_requires() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [re.split(r"[<>=!~ \[]", r.strip())[0].lower().replace("_", "-")
            for r in cfg["options"]["install_requires"].split("\n") if r.strip()]


def test_requirements_lock_pins_every_runtime_dependency() -> None:
    """The image installs with `-c requirements.lock` (scripts/lock-requirements writes it)."""
    lines = [ln for ln in (ROOT / "requirements.lock").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    pins = {}
    for ln in lines:
        m = re.fullmatch(r"([a-z0-9][a-z0-9.-]*)==([0-9][0-9A-Za-z.+-]*)", ln)
        assert m, f"requirements.lock: {ln!r} is not name==version"
        pins[m.group(1)] = m.group(2)
    for name in install_requires():
        assert name in pins, f"{name} (setup.cfg install_requires) is not pinned in requirements.lock"
    assert "kubebridge" not in pins and "trustme" not in pins and "cryptography" not in pins


def test_demo_certificates_are_made_not_shipped(tmp_path: Path) -> None:
    """A fresh process makes its own CA and leaves, private to it, and cleans them up at exit."""
    code = ("from exporter.replay import paths; import ssl; p = paths.cert_file('server.key'); "
            "c = ssl.create_default_context(cafile=str(paths.cert_file('ca.crt'))); "
            "c.load_cert_chain(paths.cert_file('client.crt'), paths.cert_file('client.key')); "
            "print(p.parent)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           timeout=120) for _ in range(2)]
    for out in runs:
        assert out.returncode == 0, out.stderr
    first, second = (Path(r.stdout.strip()) for r in runs)
    assert first != second, "each process its own"
    assert not first.exists() and not second.exists(), "removed at exit"


def test_build_image_script() -> None:
    """scripts/build-image parses, names the Dockerfile's pinned base, and documents pushing."""
    script = ROOT / "scripts" / "build-image"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    out = subprocess.run([str(script), "--print-base"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    base = out.stdout.strip()
    assert re.fullmatch(r"python:3\.11-slim\S*@sha256:[0-9a-f]{64}", base)
    assert f"ARG BASE={base}" in (ROOT / "Dockerfile").read_text()
    text = script.read_text()
    assert "push" in text and "image.registry" in text and "image.digest" in text
