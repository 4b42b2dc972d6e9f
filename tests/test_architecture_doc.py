"""docs/architecture.md is the map: every file and every code name it spells in backticks
exists. A rename that leaves the map behind fails here."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import collectors
import exporter

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"
# `transform/plan.py`, `collectors/<name>.py`; `passthrough.Passthrough`, `Upstream.request(...)`
PATH = re.compile(r"^[a-z_/]+/[a-z_]+\.py$")
DOTTED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\(.*\))?$")
PACKAGES = (exporter, collectors)


def spans() -> list[str]:
    return sorted(set(re.findall(r"`([^`\n]+)`", DOC.read_text())))


def modules() -> dict[str, ModuleType]:
    """Every module of the framework and the plug-ins, by full name."""
    out: dict[str, ModuleType] = {}
    for pkg in PACKAGES:
        out[pkg.__name__] = pkg
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not info.name.endswith(".__main__"):  # (running it is the CLI)
                out[info.name] = importlib.import_module(info.name)
    return out


def resolve(name: str, mods: dict[str, ModuleType]) -> bool:
    """Whether `a.b.c` names something: a module by its last dotted parts (`transform.Payload`:
    exporter.transform), or a class of any module (`Passthrough.collect`), then attributes."""
    head, *rest = name.split(".")
    roots: list[object] = [m for full, m in mods.items() if full.split(".")[-1] == head]
    roots += [getattr(m, head) for m in mods.values() if isinstance(getattr(m, head, None), type)]
    for root in roots:
        obj: object = root
        for part in rest:
            sub = getattr(obj, part, None)
            if sub is None and isinstance(obj, ModuleType):  # a submodule not imported by name
                sub = mods.get(f"{obj.__name__}.{part}")
            if sub is None and isinstance(obj, type) and _instance_attribute(obj, part):
                sub = part  # (a leaf: nothing is looked up below it)
            if sub is None:
                break
            obj = sub
        else:
            return True
    return False


def _instance_attribute(cls: type, name: str) -> bool:
    """A dataclass field, or an attribute the class assigns (`self.lock = ...`)."""
    if name in getattr(cls, "__dataclass_fields__", {}):
        return True
    return re.search(rf"\bself\.{name}\b\s*(:[^=]+)?=", inspect.getsource(cls)) is not None


def test_every_file_named_exists():
    """A path from the repository or exporter/ (`transform/plan.py`); a bare name (`scan.py`, in
    the package table) exists in one of the packages."""
    files = {p.name for d in ("exporter", "collectors", "dashboards") for p in (ROOT / d).rglob("*.py")}
    missing = []
    for span in spans():
        if PATH.match(span):
            if "<" not in span and not any(p.is_file() for p in (ROOT / span, ROOT / "exporter" / span)):
                missing.append(span)
        elif re.fullmatch(r"[a-z_]+\.py", span) and span not in files:
            missing.append(span)
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_code_name_resolves():
    mods = modules()
    named, missing = 0, []
    for span in spans():
        m = DOTTED.match(span)
        if span.endswith(".py") or m is None or "." not in span.split("(")[0] and not span[0].isupper():
            continue  # prose in backticks, a label, a path, a plain word
        name = m.group(1) + m.group(2)
        if not (name[0].isupper() or m.group(2)):
            continue
        named += 1
        if not resolve(name, mods):
            missing.append(span)
    assert named > 40, named  # the map names the path's parts (a parse that finds none proves nothing)
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"


@pytest.mark.parametrize("name, exists", [
    ("passthrough.Passthrough", True), ("Passthrough.collect", True), ("transform.Payload", True),
    ("rewrite.LabelRewriter.evict", True), ("Store.lock", True), ("plan.Counts", False),
    ("Transformer.no_such", False), ("Store.no_such", False),
])
def test_resolve_tells_names_apart(name, exists):
    assert resolve(name, modules()) is exists
