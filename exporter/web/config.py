"""`--web.config.file`: the Prometheus exporter-toolkit web configuration format.

Contract: a file that exporter-toolkit (node_exporter, etc.) accepts is accepted here with the
same meaning, except `client_auth_type: RequireAnyClientCert` (Python's TLS cannot require a
certificate without verifying it: rejected, not silently weakened). Unknown keys, unknown
header names, unparseable bcrypt hashes and unknown TLS names are errors, all reported at
once. Relative file names are relative to the web config file's directory, as in the toolkit.
Accepted but without effect here: `http_server_config.http2` (aiohttp serves HTTP/1.1),
`curve_preferences` (checked; OpenSSL's default group order is kept).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exporter.errors import ConfigError, ConfigErrors

# Go crypto/tls names (tls.CipherSuites(): the ones exporter-toolkit accepts) -> OpenSSL names.
# TLS 1.3 suites are not configurable in Go either: accepted and listed as None.
CIPHERS: Mapping[str, str | None] = MappingProxyType({
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
})
CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")
VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")  # in order
CLIENT_AUTH = ("NoClientCert", "RequestClientCert", "VerifyClientCertIfGiven",
               "RequireAndVerifyClientCert")
# Header -> the values allowed (empty: any), as exporter-toolkit's validateHeaderConfig.
HEADERS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (),
    "Content-Security-Policy": (),
})
_BCRYPT = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_GO_DURATION = re.compile(r"^(?:([0-9]+(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h))+$")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
             "client_ca_file", "client_allowed_sans", "min_version", "max_version",
             "cipher_suites", "prefer_server_cipher_suites", "curve_preferences")


@dataclass(frozen=True)
class TLSServerConfig:
    """`tls_server_config`, paths made absolute; inline PEM in `cert`/`key`/`client_ca`."""

    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = field(default="", repr=False)
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        """The files a context is built from (watched for renewal)."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class RateLimit:
    """`rate_limit`: a token bucket; interval 0 disables it."""

    interval: float = 0.0
    burst: int = 0


@dataclass(frozen=True)
class WebConfig:
    """The whole web configuration. `tls` None: plain HTTP."""

    path: str = ""
    tls: TLSServerConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # user -> bcrypt hash
    http2: bool = True
    rate_limit: RateLimit = RateLimit()


class _Problems:
    """Collects every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    def unknown(self, section: Mapping[Any, Any], known: tuple[str, ...], path: str) -> None:
        for key in section:
            if key not in known:
                self.add(f"{path}.{key}" if path else str(key), "unknown key")


def go_duration(raw: Any) -> float | None:
    """A Go duration (`0`, `1s`, `1m30s`, `250ms`) in seconds; None if not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return float(raw) * 1e-9 if raw == 0 else None  # yaml.v2: bare ints are nanoseconds; only 0 is sane
    text = str(raw).strip()
    if text == "0":
        return 0.0
    if not _GO_DURATION.match(text):
        return None
    parts = re.findall(r"([0-9]+(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)", text)
    return sum(float(n) * _GO_UNIT[u] for n, u in parts)


def _str(p: _Problems, raw: Any, path: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        p.add(path, "must be a string")
        return ""
    return raw


def _strings(p: _Problems, raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        p.add(path, "must be a list of strings")
        return ()
    return tuple(raw)


def _mapping(p: _Problems, raw: Any, path: str) -> Mapping[Any, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.add(path, f"must be a mapping, not {type(raw).__name__}")
        return {}
    return raw


def _tls(p: _Problems, raw: Mapping[Any, Any], base: Path) -> TLSServerConfig | None:
    path = "tls_server_config"
    p.unknown(raw, _TLS_KEYS, path)
    s = {k: _str(p, raw.get(k), f"{path}.{k}") for k in
         ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
          "min_version", "max_version")}
    lists = {k: _strings(p, raw.get(k), f"{path}.{k}") for k in
             ("client_allowed_sans", "cipher_suites", "curve_preferences")}
    if not any(s[k] for k in ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
                               "client_auth_type")):
        return None  # exporter-toolkit's IsEnabled(): nothing set, no TLS
    for k in ("cert_file", "key_file", "client_ca_file"):
        if s[k]:
            f = Path(s[k]) if Path(s[k]).is_absolute() else base / s[k]
            s[k] = str(f)
            if not f.is_file():
                p.add(f"{path}.{k}", f"file not found: {f}")
    if not (s["cert"] or s["cert_file"]):
        p.add(path, "missing one of cert or cert_file")
    if not (s["key"] or s["key_file"]):
        p.add(path, "missing one of key or key_file")
    for a, b in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if s[a] and s[b]:
            p.add(f"{path}.{a}", f"set either {a} or {b}, not both")
    auth = s["client_auth_type"] or "NoClientCert"
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        p.add(f"{path}.client_auth_type", f"{auth} (a certificate required but not verified) is "
              "not supported: use RequireAndVerifyClientCert with client_ca_file")
    elif auth not in CLIENT_AUTH:
        p.add(f"{path}.client_auth_type", f"invalid ClientAuth: {auth} (one of {', '.join(CLIENT_AUTH)})")
    elif (s["client_ca"] or s["client_ca_file"]) and auth == "NoClientCert":
        p.add(f"{path}.client_auth_type", "client CA's have been configured without a Client Auth Policy")
    elif auth in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven") and not (
            s["client_ca"] or s["client_ca_file"]):
        p.add(f"{path}.client_ca_file", f"required for {auth}")
    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        versions[k] = s[k] or default
        if versions[k] not in VERSIONS:
            p.add(f"{path}.{k}", f"unknown TLS version: {versions[k]} (one of {', '.join(VERSIONS)})")
    if (all(v in VERSIONS for v in versions.values())
            and VERSIONS.index(versions["min_version"]) > VERSIONS.index(versions["max_version"])):
        p.add(f"{path}.min_version", "is above max_version")
    for name in lists["cipher_suites"]:
        if name not in CIPHERS:
            p.add(f"{path}.cipher_suites", f"unknown cipher: {name}")
    for name in lists["curve_preferences"]:
        if name not in CURVES:
            p.add(f"{path}.curve_preferences", f"unknown curve: {name}")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        p.add(f"{path}.prefer_server_cipher_suites", "must be true or false")
        prefer = True
    return TLSServerConfig(
        cert_file=s["cert_file"], key_file=s["key_file"], cert=s["cert"], key=s["key"],
        client_ca_file=s["client_ca_file"], client_ca=s["client_ca"], client_auth_type=auth,
        client_allowed_sans=lists["client_allowed_sans"], min_version=versions["min_version"],
        max_version=versions["max_version"], cipher_suites=lists["cipher_suites"],
        prefer_server_cipher_suites=prefer, curve_preferences=lists["curve_preferences"])


def _http(p: _Problems, raw: Mapping[Any, Any]) -> tuple[bool, dict[str, str]]:
    path = "http_server_config"
    p.unknown(raw, ("http2", "headers"), path)
    http2 = raw.get("http2", True)
    if not isinstance(http2, bool):
        p.add(f"{path}.http2", "must be true or false")
    headers: dict[str, str] = {}
    for name, value in _mapping(p, raw.get("headers"), f"{path}.headers").items():
        hpath = f"{path}.headers.{name}"
        allowed = HEADERS.get(str(name))
        if allowed is None:
            p.add(hpath, f"HTTP header {name!r} can not be configured")
        elif not isinstance(value, str) or "\n" in value or "\r" in value:
            p.add(hpath, "must be a one-line string")
        elif allowed and value not in allowed:
            p.add(hpath, f"invalid value {value!r}: expected one of {', '.join(allowed)}")
        elif value:  # blank: unset, as in the toolkit
            headers[str(name)] = value
    return http2 is True, headers


def _users(p: _Problems, raw: Any) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(p, raw, "basic_auth_users").items():
        upath = f"basic_auth_users.{user}"
        if not isinstance(user, str) or ":" in user:
            p.add(upath, "a user name is a string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            p.add(upath, "not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        else:
            users[user] = hashed.encode()
    return users


def _rate_limit(p: _Problems, raw: Mapping[Any, Any]) -> RateLimit:
    p.unknown(raw, ("interval", "burst"), "rate_limit")
    interval = go_duration(raw.get("interval", "0"))
    if interval is None:
        p.add("rate_limit.interval", f"not a duration: {raw.get('interval')!r} (e.g. 1s, 100ms)")
        interval = 0.0
    burst = raw.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        p.add("rate_limit.burst", "must be a non-negative integer")
        burst = 0
    if interval > 0 and burst == 0:
        p.add("rate_limit.burst", "must be at least 1 when interval is set (0 would refuse everything)")
    return RateLimit(interval, burst)


def parse(doc: Any, path: str = "") -> WebConfig:
    """Validate a loaded web config document; ConfigErrors lists every problem."""
    p = _Problems()
    raw = _mapping(p, doc, "")
    p.unknown(raw, ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"), "")
    base = Path(path).parent if path else Path(".")
    tls = _tls(p, _mapping(p, raw.get("tls_server_config"), "tls_server_config"), base)
    http2, headers = _http(p, _mapping(p, raw.get("http_server_config"), "http_server_config"))
    users = _users(p, raw.get("basic_auth_users"))
    rate = _rate_limit(p, _mapping(p, raw.get("rate_limit"), "rate_limit"))
    if p.errors:
        raise ConfigErrors(p.errors, prefix=path)
    return WebConfig(path, tls, MappingProxyType(headers), MappingProxyType(users), http2, rate)


def load(path: str | Path) -> WebConfig:
    """Read and validate a web config file (TLS material is loaded by `tls.server_context`)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read web config {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"{path}: invalid YAML{where}") from None
    return parse(doc if doc is not None else {}, str(path))
