"""Captures are kept once: tests/fixtures/, tests/golden/ and the package data share no file,
and each tests/fixtures/ or package data file has its provenance row (with the right sha256)."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

from exporter.replay import paths
from tests.conftest import FIXTURES, GOLDEN, Fixtures

DATA = paths.data_file(paths.PODS.format(version="1.35")).parent


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"
                  and "__pycache__" not in p.parts)


def _rows(provenance: Path) -> dict[str, str]:
    """`our path` -> `sha256[:16]`, from a PROVENANCE.md table."""
    rows = {}
    for line in provenance.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[7].strip("`")
    return rows


def test_no_data_file_is_kept_twice():
    by_digest = defaultdict(list)
    for path in [*_files(FIXTURES), *_files(GOLDEN), *_files(DATA)]:
        by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append(str(path))
    assert [names for names in by_digest.values() if len(names) > 1] == []


def test_shipped_fixtures_are_the_package_data():
    shipped = [name for names in paths.SHIPPED_FIXTURES.values() for name in names]
    assert sorted(shipped) == sorted(p.name for p in _files(DATA))
    for folder, names in paths.SHIPPED_FIXTURES.items():
        for name in names:
            assert not (FIXTURES / folder / name).exists(), f"{folder}/{name} is package data"
            assert Fixtures(folder) / name == paths.data_file(name)
            assert paths.data_file(name) in Fixtures(folder).glob("*")


@pytest.mark.parametrize("root", [FIXTURES, DATA], ids=["tests-fixtures", "package-data"])
def test_every_file_has_its_provenance_row(root: Path):
    rows = _rows(root / "PROVENANCE.md")
    files = {str(p.relative_to(root)): p for p in _files(root)}
    assert sorted(rows) == sorted(files)
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == rows[name], name
