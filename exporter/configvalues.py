"""Scalar values of the configuration: durations, sizes, counts, URLs, ports, addresses and
paths, each read strictly (ConfigError names the key path and what is expected)."""
from __future__ import annotations

import re
from typing import Any

from exporter.errors import ConfigError

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(raw: Any, path: str) -> float:
    """`10`, `2.5`, `500ms`, `30s`, `5m` -> seconds (> 0)."""
    if isinstance(raw, bool):
        raise ConfigError(path, "must be a duration like 10s")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = _DURATION.match(str(raw).strip())
        if not m:
            raise ConfigError(path, f"not a duration: {raw!r} (use e.g. 500ms, 10s, 5m)")
        value = float(m.group(1)) * _SCALE[m.group(2)]
    if value <= 0:
        raise ConfigError(path, "must be positive")
    return value


_SIZE = re.compile(r"^([0-9]+)\s*(|k|Ki|KiB|M|Mi|MiB|G|Gi|GiB|kB|MB|GB)$")
_SIZE_SCALE = {"": 1, "k": 1000, "kB": 1000, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
               "Ki": 1 << 10, "KiB": 1 << 10, "Mi": 1 << 20, "MiB": 1 << 20, "Gi": 1 << 30, "GiB": 1 << 30}


def size(raw: Any, path: str) -> int:
    """`1048576`, `64Mi`, `32MiB`, `1G` -> bytes (> 0)."""
    if isinstance(raw, bool):
        raise ConfigError(path, "must be a size like 32Mi")
    m = _SIZE.match(str(raw).strip()) if isinstance(raw, (int, str)) else None
    if not m:
        raise ConfigError(path, f"not a size: {raw!r} (use e.g. 32Mi, 64MB, 1048576)")
    value = int(m.group(1)) * _SIZE_SCALE[m.group(2)]
    if value <= 0:
        raise ConfigError(path, "must be positive")
    return value


def count(raw: Any, path: str) -> int:
    """A positive whole number."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ConfigError(path, "must be a positive whole number")
    return raw


def http_url(raw: Any, path: str) -> str:
    """An http(s) URL with a host, and a port in 1..65535 if it names one."""
    if not isinstance(raw, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", raw):
        raise ConfigError(path, "not an http(s) URL")
    authority = raw.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    host, sep, port = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if sep:
        port_number(port, path)
    if not (host if sep else authority).strip("[]"):
        raise ConfigError(path, "URL has no host")
    return raw.rstrip("/")


def port_number(raw: str, path: str, lowest: int = 1) -> int:
    """A TCP port: ASCII digits, `lowest`..65535 (a listener may ask for 0: any free port)."""
    if not (raw.isascii() and raw.isdigit()) or not lowest <= int(raw) <= 65535:
        raise ConfigError(path, f"port {raw!r} out of range ({lowest}-65535)")
    return int(raw)


def listen_address(raw: str, path: str = "listen_address") -> str:
    """HOST:PORT (`[::1]:9500` too), the port in 1..65535."""
    m = re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s\[\]]*):([^:]*)$", raw)
    if not m:
        raise ConfigError(path, "must be HOST:PORT (e.g. 0.0.0.0:9500)")
    port_number(m.group(2), path, lowest=0)
    return raw


def telemetry_path(raw: str, path: str = "telemetry_path") -> str:
    """An absolute URL path other than the probe and landing paths."""
    if not re.match(r"^/[A-Za-z0-9._~/-]*$", raw) or raw in ("/", "/healthz", "/readyz"):
        raise ConfigError(path, "must be a path like /metrics (not /, /healthz or /readyz)")
    return raw
