"""The import graph: the framework never imports its plug-ins, and the big optional clients
(kubernetes-asyncio: about 37 MiB resident; aiodocker) and the StatsD engine (about 0.8 MiB)
load only with a collector that uses them. Each check runs in a fresh interpreter, since this
test process has imported everything.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.registry import registrations

ROOT = Path(__file__).parent.parent
OPTIONAL = ("kubernetes_asyncio", "aiodocker", "exporter.statsd")

# Starts the app as `kubebridge run` builds it (argv[1]: the collectors section, null for the
# defaults), scrapes /metrics twice and prints which optional clients were imported.
SERVE = r"""
import asyncio, json, sys
from aiohttp.test_utils import TestClient, TestServer
from exporter import cli, commands, config, plugins, server  # noqa: F401  (what `kubebridge run` imports)

plugins.load()
section = json.loads(sys.argv[1])
doc = {"kubelet": {"url": "http://127.0.0.1:9"}}  # nothing listens: every source reads down
if section is not None:
    doc["collectors"] = section
cfg = config.parse(doc, env={})

async def main():
    async with TestClient(TestServer(server.build_app(cfg))) as client:
        for _ in range(2):
            resp = await client.get("/metrics")
            assert resp.status == 200, resp.status
            await resp.read()
        await asyncio.sleep(0.2)  # background loops (watches, event streams) have started

asyncio.run(main())
print(json.dumps(sorted(m for m in OPTIONAL if m in sys.modules)))
""".replace("OPTIONAL", repr(OPTIONAL))


def loaded(section: dict | None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SERVE, json.dumps(section)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def every(enabled: bool) -> dict:
    return {r.name: {"enabled": enabled} for r in registrations()}


def test_idle_exporter_imports_no_optional_client():
    assert loaded(every(False)) == []


def test_node_agent_imports_no_optional_client():
    assert loaded(None) == []  # the defaults: cadvisor, kubelet, probes, ... (no docker)


@pytest.mark.parametrize("name, section, expected", [
    ("docker", {"socket": "unix:///dev/null"}, ["aiodocker"]),  # exists, refuses: the client is built
    ("events", {"endpoint": {"url": "http://127.0.0.1:9"}}, ["kubernetes_asyncio"]),
    ("kube_system", {"endpoint": {"url": "http://127.0.0.1:9"}}, ["kubernetes_asyncio"]),
    ("statsd", {"udp_address": "127.0.0.1:0"}, ["exporter.statsd"]),
])
def test_a_collector_imports_its_client(name, section, expected):
    collectors = {**every(False), name: {"enabled": True, **section}}
    assert loaded(collectors) == expected


def test_framework_never_imports_the_plugins():
    """Only exporter/plugins.py names the `collectors` package (entry points call its load())."""
    offenders = []
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        if path == ROOT / "exporter" / "plugins.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n == "collectors" or n.startswith("collectors.")]
    assert offenders == []


def test_framework_modules_load_without_plugins():
    code = ("import sys, exporter.server, exporter.commands, exporter.config, exporter.registry; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'collectors'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
