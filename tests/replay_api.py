"""Test helpers for the cluster-agent collectors: a running ReplayApiserver, collectors
configured against it, polling with a deadline, and exposition parsing."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from exporter import config as config_mod
from exporter.deps import Deps
from exporter.expfmt import encode_text
from exporter.registry import get
from exporter.replay.apiserver import ReplayApiserver
from tests.conftest import FIXTURES, Fixtures

TOKEN = "replay-apiserver-token"
EVENT = json.loads((Fixtures("events") / "k9s-event.json").read_text())
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@contextlib.asynccontextmanager
async def replay(tmp_path: Path, **kwargs: Any) -> AsyncIterator[ReplayApiserver]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    srv = ReplayApiserver(FIXTURES, token, **kwargs)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def config(srv: ReplayApiserver, name: str, tmp_path: Path, *, token_file: Path | None = None,
           kubeconfig: bool = False, top: dict | None = None, **options: Any) -> config_mod.Config:
    section: dict[str, Any] = {"enabled": True, **options}
    if kubeconfig:
        section["kubeconfig"] = str(srv.kubeconfig_path(tmp_path))
    else:
        section["endpoint"] = {"url": srv.base_url, "ca_file": str(srv.ca_file),
                               "token_file": str(token_file or srv.token_file)}
    return config_mod.parse({**(top or {}), "collectors": {name: section}}, env={})


def collector(cfg: config_mod.Config, name: str, session: aiohttp.ClientSession | None = None) -> Any:
    return get(name).factory(Deps(cfg, session, None), cfg.collectors[name])


def fast(c: Any) -> Any:
    """Short backoff and watch timeouts so reconnects happen within a test."""
    c.backoff, c.watch_timeout = (0.05, 0.2), 30.0
    return c


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def background(c: Any) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(c.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def samples(families: Any) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value} of an exposition (families or text)."""
    text = encode_text(families).decode() if not isinstance(families, (str, bytes)) else (
        families.decode() if isinstance(families, bytes) else families)
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), frozenset(_PAIR.findall(m.group(2) or "")))] = float(m.group(3))
    return out


def value(families: Any, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (families or `samples()`)."""
    if not isinstance(families, dict):
        families = samples([f for f in families if f.name == name])
    want = set(labels.items())
    return sum(v for (n, ls), v in families.items() if n == name and want <= ls)


def event(name: str, reason: str, *, kind: str = "Pod", involved: str = "web-7d9f8c6b5d-x2x4z",
          namespace: str = "default", count: int = 1, type_: str = "Warning") -> dict:
    """An event built from a real captured one (k9s-event.json), renamed."""
    ev = copy.deepcopy(EVENT)
    meta = ev["metadata"]
    meta.update(name=name, namespace=namespace)
    for k in ("uid", "resourceVersion", "selfLink"):
        meta.pop(k, None)
    ev["involvedObject"].update(kind=kind, name=involved, namespace=namespace if kind != "Node" else "")
    ev.update(reason=reason, count=count, type=type_)
    return ev
