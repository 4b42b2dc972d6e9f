"""The plug-ins: the one place the framework names the `collectors` package.

Importing `collectors` imports every collector module, and each registers itself with
`@exporter.registry.register`. The framework (registry, config, server, commands) only reads
the registry and never imports a collector, so the plug-ins depend on the framework and not
the other way round. Entry points call `load()` first: `exporter.cli.main` (behind both
`kubebridge` and `python -m exporter`), and the tests (`tests/conftest.py`).
"""
from __future__ import annotations


def load() -> None:
    """Register every collector (idempotent: a module is imported once)."""
    import collectors  # noqa: F401  (each module's @register runs on import)
