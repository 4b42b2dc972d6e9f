"""The landing page in a real headless Chromium: DOM assertions on what the browser built
(`--dump-dom`) and a screenshot kept as a test artifact (tmp/artifacts/, or
$KUBEBRIDGE_TEST_ARTIFACTS)."""
from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter import __version__, config as config_mod
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.realprom import free_port

ARTIFACTS = Path(os.environ.get("KUBEBRIDGE_TEST_ARTIFACTS",
                                Path(__file__).parent.parent / "tmp" / "artifacts"))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed (scripts/test installs Debian's chromium)")


async def browse(url: str, *mode: str) -> bytes:
    """Headless Chromium on `url` (run as a subprocess: the server keeps serving meanwhile)."""
    with tempfile.TemporaryDirectory(prefix="kb-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--window-size=1200,800", *mode, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


_VOID = {"meta", "br", "input", "img", "link", "hr", "wbr", "source", "col"}


class Dom(HTMLParser):
    """What the test reads from the dumped DOM: source rows (cells by class), links, and the
    text of every element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.links: list[str] = []
        self.ids: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of the open elements
        self._row: str | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "source" in classes:
            self._row = a.get("data-collector") or ""
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            self._cell = classes[0] if classes else "name"
            self.rows[self._row][self._cell] = ""
            if self._cell == "status":
                self.rows[self._row]["status-class"] = classes[-1]
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag not in _VOID:
            self._open.append((tag, a.get("id")))
            if a.get("id"):
                self.ids[a["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self.rows[self._row][self._cell] += data
        for _tag, ident in self._open:
            if ident:
                self.ids[ident] += data


async def test_landing_page_in_chromium(replay: ReplayKubelet, aiohttp_client):
    etcd_port = free_port()  # nothing listens: the etcd source is down with a reason
    cfg = config_mod.parse({
        "cluster": "demo", "node_name": replay.node_name, "pod_refresh_interval": "0.2s",
        "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                    "ca_file": str(replay.ca_file)},
        "collectors": {"etcd": {"enabled": True, "members": [{"url": f"http://127.0.0.1:{etcd_port}"}]}}},
        env={})
    client = await aiohttp_client(build_app(cfg))
    for _ in range(400):
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.05)
    assert (await client.get("/metrics")).status == 200  # one scrape: every source has a state
    url = str(client.make_url("/"))

    dom = Dom()
    dom.feed((await browse(url, "--dump-dom")).decode())
    assert dom.ids["version"] == __version__
    assert {"metrics", "healthz", "readyz"} <= set(dom.links), dom.links
    cad = dom.rows["cadvisor"]
    assert cad["status"] == "ok" and cad["status-class"] == "ok", cad
    assert int(cad["series-in"].replace(",", "")) > 1000 and int(cad["series-out"].replace(",", "")) > 1000
    assert cad["last-ok"].endswith("s ago"), cad
    assert cad["reason"] == "" and cad["detail"] == ""
    etcd = dom.rows["etcd"]
    assert etcd["status"] == "down" and etcd["status-class"] == "down", etcd
    assert etcd["last-ok"] == "never"
    assert etcd["reason"] == "connect", etcd
    assert f"cannot connect to 127.0.0.1:{etcd_port}: Connection refused" in etcd["detail"], etcd
    assert "object at 0x" not in str(dom.rows)
    assert "ok" in dom.ids["pod-index"] and "pods" in dom.ids["pod-index"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "landing-page.png"
    shot.unlink(missing_ok=True)
    await browse(url, f"--screenshot={shot}")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (1200, 800), (width, height)
