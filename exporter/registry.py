"""The collector protocol and registry: the one extension point.

A collector is one class in `collectors/<name>.py`, registered under `<name>` when an entry
point imports the plug-ins (`exporter.plugins.load()`; this module never imports them). That
one word is its module, `--collector.<name>` flag, `collectors.<name>` config key, `collector` label value,
fixture folder and test module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from collections.abc import Callable, Mapping, Sequence

from exporter.expfmt import Family
from exporter.transform.result import Result


class Collector(Protocol):
    """Fetch and convert. Raise on failure; the runner isolates and reports it."""

    async def collect(self, budget: float) -> Sequence[Family]: ...


@runtime_checkable
class Offline(Protocol):
    """A collector that can transform saved payloads (`kubebridge transform`): the same
    families as `collect` makes of those upstream answers, with its counts."""

    def process(self, *payloads: bytes) -> Result: ...


@runtime_checkable
class Background(Protocol):
    """A long-lived loop (watches, refreshes), started once with the server."""

    async def run(self) -> None: ...


@dataclass(frozen=True)
class Option:
    """One collector-specific config key: its default and a checker that returns an error
    message (or None). The default's type is the accepted type, except for `kind`
    "endpoint" (one `Endpoint` section) and "endpoints" (a list of them)."""

    default: Any
    check: Callable[[Any], str | None] | None = None
    help: str = ""
    kind: str = "value"


@dataclass(frozen=True)
class Registration:
    """What `@register` records."""

    name: str
    factory: Callable[..., Collector]
    default_enabled: bool
    scope: str                       # "node" (DaemonSet), "cluster" (Deployment), "pod" (sidecar)
    options: Mapping[str, Option]
    help: str
    # The source's default body cap if smaller than the global one (bytes; 0: the global one).
    # JSON sources declare one: their bodies become Python objects several times their size.
    max_body: int = 0


_REGISTRY: dict[str, Registration] = {}


def register(name: str, *, default_enabled: bool, scope: str = "node",
             options: Mapping[str, Option] | None = None, help: str = "",
             max_body: int = 0) -> Callable[[Callable[..., Collector]], Callable[..., Collector]]:
    """Class decorator registering a collector under `name`."""
    def decorate(factory: Callable[..., Collector]) -> Callable[..., Collector]:
        if name in _REGISTRY:
            raise ValueError(f"collector {name!r} registered twice")
        _REGISTRY[name] = Registration(name, factory, default_enabled, scope,
                                       dict(options or {}), help or (factory.__doc__ or "").strip(),
                                       max_body)
        return factory
    return decorate


def registrations() -> list[Registration]:
    """Every registered collector, sorted by name."""
    return [_registry()[n] for n in sorted(_REGISTRY)]


def get(name: str) -> Registration:
    """One registration by name (KeyError if unknown)."""
    return _registry()[name]


def _registry() -> dict[str, Registration]:
    """The collectors register when imported; the framework never imports them itself."""
    if not _REGISTRY:
        raise RuntimeError("no collector is registered: an entry point calls exporter.plugins.load() first")
    return _REGISTRY
