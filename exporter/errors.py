"""Error types shared by the framework and the collectors."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong. `path` is the dotted key path, e.g. `collectors.kubelet.url`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class NoDataError(Exception):
    """The source is legitimately absent (404, v2 API disabled, no socket): not a failure."""


class NotPermittedError(Exception):
    """The upstream answered 401/403: reported as `not_permitted`, distinct from down."""


class ParseError(ValueError):
    """A payload could not be parsed; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
