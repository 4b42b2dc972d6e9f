"""Error types shared by the framework and the collectors."""
from __future__ import annotations

import os
import re
import ssl


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


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass; `errors` lists them in file order.
    `prefix` (a file name) starts the message."""

    def __init__(self, errors: list[ConfigError], prefix: str = "") -> None:
        lines = "\n".join(f"  {e}" for e in errors)
        head = f"{prefix}: " if prefix else ""
        super().__init__("", f"{head}{len(errors)} error{'s' if len(errors) != 1 else ''}:\n{lines}"
                         if len(errors) != 1 else f"{head}{errors[0]}")
        self.errors = errors


_REPR = re.compile(r"<([A-Za-z_][\w.]*) object at 0x[0-9a-fA-F]+>")


def describe(exc: BaseException) -> str:
    """One line for logs and the landing page: what failed, without object reprs (aiohttp's
    connection errors print `ssl:<ssl.SSLContext object at 0x…>`), secrets or tracebacks."""
    import aiohttp  # (here: the error types above stay importable without it)

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        why = getattr(cert, "verify_message", "") or getattr(cert, "reason", "") or cert.__class__.__name__
        text = f"TLS certificate of {exc.host}:{exc.port} not accepted: {why}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ssl.SSLError):
            why = os_error.reason or os_error.__class__.__name__
        elif os_error.errno:  # (asyncio's strerror is "Connect call failed (address)")
            why = os.strerror(os_error.errno)
        else:
            why = str(os_error) or os_error.__class__.__name__
        text = f"cannot connect to {exc.host}:{exc.port}: {why}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = str(exc) or exc.__class__.__name__
    return scrub_reprs(" ".join(text.split()))


def scrub_reprs(text: str) -> str:
    """`<ssl.SSLContext object at 0x7f…>` -> `SSLContext`."""
    return _REPR.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text)
