"""Shared test helpers: golden files, fixtures, offline collectors."""
from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from exporter import config as config_mod, plugins
from exporter.deps import Deps
from exporter.podindex import PodIndex
from exporter.pods import parse_podlist
from exporter.registry import get
from exporter.replay import paths
from exporter.replay.kubelet import ReplayKubelet

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
GOLDEN = TESTS / "golden"

plugins.load()  # the tests are an entry point: they register the collectors, as `kubebridge` does


class Fixtures:
    """tests/fixtures/<folder>/ as the tests see it: its own files, plus the captures the package
    ships for the demo, which are kept only there (exporter.replay.paths.SHIPPED_FIXTURES)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __truediv__(self, name: str) -> Path:
        return paths.fixture_path(FIXTURES, self.folder, name)

    def glob(self, pattern: str) -> list[Path]:
        shipped = paths.SHIPPED_FIXTURES.get(self.folder, ())
        found = [*(FIXTURES / self.folder).glob(pattern),
                 *(paths.data_file(name) for name in shipped if fnmatch(name, pattern))]
        return sorted(found, key=lambda p: p.name)


def every_fixture(pattern: str) -> list[Path]:
    """Every capture of every folder whose name matches `pattern`."""
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()} | set(paths.SHIPPED_FIXTURES)
    return [p for folder in sorted(folders) for p in Fixtures(folder).glob(pattern)]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/* from the current output (review the diff)")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str | bytes], None]:
    """golden(name, actual): compare with tests/golden/<name>, or rewrite it with --update-golden."""
    def check(name: str, actual: str | bytes) -> None:
        text = actual.decode() if isinstance(actual, bytes) else actual
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} missing: run pytest --update-golden and review it"
        expected = path.read_text()
        assert text == expected, f"{path} differs; rerun with --update-golden and review the diff"
    return check


def pod_index(pods_json: Path | dict | None, config: config_mod.Config | None = None) -> PodIndex:
    """A PodIndex loaded from a kubelet /pods document."""
    cfg = config or config_mod.parse({}, env={})
    idx = PodIndex(cfg.label_policy)
    if pods_json is not None:
        doc = json.loads(pods_json.read_text()) if isinstance(pods_json, Path) else pods_json
        idx.replace(parse_podlist(doc))
    return idx


def offline(name: str, doc: dict[str, Any] | None = None, pods: Path | dict | None = None) -> Any:
    """A collector built the way `kubebridge transform` builds it (no network)."""
    cfg = config_mod.parse(doc or {}, env={})
    return get(name).factory(Deps(cfg, None, pod_index(pods, cfg)), cfg.collectors[name])


@pytest.fixture
async def replay(tmp_path: Path):
    """A replay kubelet over the test fixtures (HTTPS, a fresh bearer token in tmp_path)."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(16))
    kubelet = ReplayKubelet.from_fixtures(FIXTURES, token_file=token)
    await kubelet.start()
    yield kubelet
    await kubelet.stop()
