"""Configuration: YAML (safe_load) -> validated, immutable `Config`.

Precedence: command-line flags > environment (`KUBEBRIDGE_*`, the downward API's `NODE_NAME`,
`NODE_IP`, `POD_NAMESPACE`) > the config file > built-in defaults. This is the only module that
reads the environment. Every error names its key path and exits the CLI with status 2.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from exporter import relabel
from exporter.errors import ConfigError
from exporter.pods import DEFAULT_ALLOWLIST, LabelPolicy
from exporter.registry import Option, Registration, registrations

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LOG_LEVELS = ("debug", "info", "warning", "error")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Endpoint:
    """How to reach one upstream (the kubelet, the apiserver, an etcd member)."""

    url: str
    token_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class CollectorConfig:
    """One collector's section: the common keys plus its own declared options."""

    name: str
    enabled: bool
    relabel_configs: tuple[relabel.Rule, ...] = ()
    timeout: float = 0.0  # 0: use the scrape budget
    max_body_size: int = 0  # bytes; 0: the global max_body_size
    series_limit: int = 0  # series; 0: the global source_series_limit
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration."""

    listen_address: str = "0.0.0.0:9500"
    log_level: str = "info"
    log_format: str = "text"
    cluster: str = ""
    node_name: str = ""
    pod_namespace: str = ""
    scrape_timeout: float = 10.0
    pod_refresh_interval: float = 60.0
    label_allowlist: tuple[str, ...] = DEFAULT_ALLOWLIST
    label_denylist: tuple[str, ...] = ()
    relabel_configs: tuple[relabel.Rule, ...] = ()
    kubelet: Endpoint = Endpoint("https://127.0.0.1:10250")
    collectors: Mapping[str, CollectorConfig] = field(default_factory=dict)
    # Memory and cardinality budget (docs/performance.md derives the defaults from the
    # DaemonSet's memory limit).
    max_body_size: int = 24 << 20  # bytes per upstream body, decompressed
    source_series_limit: int = 75_000  # series per source
    series_limit: int = 150_000  # series over all sources
    series_ttl: float = 600.0  # a series unseen this long no longer counts against a budget

    def body_limit(self, c: CollectorConfig) -> int:
        """A source's body cap: its own, else the smaller of the global one and the default its
        collector declares (`register(max_body=...)`)."""
        declared = next((r.max_body for r in registrations() if r.name == c.name), 0)
        return c.max_body_size or min(self.max_body_size, declared or self.max_body_size)

    def source_limit(self, c: CollectorConfig) -> int:
        """A source's series cap."""
        return c.series_limit or self.source_series_limit

    @property
    def label_policy(self) -> LabelPolicy:
        """The pod-label allow/deny policy."""
        return LabelPolicy(frozenset(self.label_allowlist), frozenset(self.label_denylist))

    def enabled(self) -> list[CollectorConfig]:
        """Enabled collectors, sorted by name."""
        return [c for n, c in sorted(self.collectors.items()) if c.enabled]


def _unknown(keys: Mapping[str, Any], known: tuple[str, ...] | list[str], path: str) -> None:
    for key in keys:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(_join(path, str(key)), f"unknown key{extra}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _map(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be a mapping, not {type(raw).__name__}")
    return raw


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
    """An http(s) URL with a host."""
    if not isinstance(raw, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", raw):
        raise ConfigError(path, "not an http(s) URL")
    return raw.rstrip("/")


def _typed(raw: Any, default: Any, path: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(raw, bool):
            raise ConfigError(path, "must be true or false")
    elif isinstance(default, (int, float)):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(path, "must be a number")
        return type(default)(raw) if isinstance(default, float) else raw
    elif isinstance(default, str):
        if not isinstance(raw, str):
            raise ConfigError(path, "must be a string")
    elif isinstance(default, (tuple, list)):
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(path, "must be a list of strings")
        return tuple(raw)
    return raw


def endpoint(raw: Any, path: str, default: Endpoint) -> Endpoint:
    """An `Endpoint` section; keys left out keep `default`'s values."""
    section = _map(raw, path)
    fields = Endpoint.__dataclass_fields__
    _unknown(section, list(fields), path)
    values = {k: _typed(v, getattr(default, k), _join(path, k)) for k, v in section.items()}
    if "url" in values:
        values["url"] = http_url(values["url"], _join(path, "url"))
    for k in ("token_file", "ca_file", "cert_file", "key_file"):
        if values.get(k) and not Path(values[k]).exists():
            raise ConfigError(_join(path, k), f"file not found: {values[k]}")
    url = values.get("url", default.url)
    if url.startswith("http://") and "token_file" not in values:
        # Plain http (the kubelet's read-only port): the default service-account token would
        # travel in clear text, so it is only sent when token_file is set explicitly.
        values["token_file"] = ""
    return replace(default, **values)


def _collector(reg: Registration, raw: Any, path: str, env: Mapping[str, str]) -> CollectorConfig:
    section = _map(raw, path)
    common = ("enabled", "relabel_configs", "timeout", "max_body_size", "series_limit")
    _unknown(section, [*common, *reg.options], path)
    enabled = _typed(section.get("enabled", reg.default_enabled), True, _join(path, "enabled"))
    rules = relabel.parse_rules(section.get("relabel_configs") or [], _join(path, "relabel_configs"))
    timeout = duration(section["timeout"], _join(path, "timeout")) if "timeout" in section else 0.0
    options: dict[str, Any] = {}
    for key, opt in reg.options.items():
        kpath = _join(path, key)
        value: Any  # an Endpoint, a tuple of them, or the option's plain value
        if opt.kind == "endpoint":
            value = endpoint(section.get(key), kpath, _endpoint_default(opt.default, env))
        elif opt.kind == "endpoints":
            items = section.get(key, opt.default)
            if not isinstance(items, (list, tuple)):
                raise ConfigError(kpath, "must be a list of endpoints")
            members = tuple(endpoint(item, f"{kpath}[{i}]", Endpoint(""))
                            if not isinstance(item, Endpoint) else item for i, item in enumerate(items))
            bad = next((i for i, ep in enumerate(members) if not ep.url), None)
            if bad is not None:
                raise ConfigError(f"{kpath}[{bad}].url", "required")
            value = members
        else:
            value = _typed(section[key], opt.default, kpath) if key in section else opt.default
        if opt.kind == "value" and key in section and opt.check is not None:
            problem = opt.check(value)
            if problem:
                raise ConfigError(kpath, problem)
        options[key] = value
    body = size(section["max_body_size"], _join(path, "max_body_size")) if "max_body_size" in section else 0
    series = count(section["series_limit"], _join(path, "series_limit")) if "series_limit" in section else 0
    return CollectorConfig(reg.name, enabled, rules, timeout, body, series, MappingProxyType(options))


def _endpoint_default(ep: Endpoint, env: Mapping[str, str]) -> Endpoint:
    # `$NODE_IP` in a default URL comes from the downward API; the service-account token and CA
    # are used when present (in-cluster), so zero config works in a pod.
    url = ep.url.replace("$NODE_IP", env.get("NODE_IP") or env.get("NODE_NAME") or "127.0.0.1")
    sa = Path(env.get("KUBEBRIDGE_SA_DIR", SA_DIR))
    token = ep.token_file or (str(sa / "token") if (sa / "token").exists() else "")
    ca = ep.ca_file or (str(sa / "ca.crt") if (sa / "ca.crt").exists() else "")
    return replace(ep, url=url, token_file=token, ca_file=ca)


TOP_KEYS = ("listen_address", "log_level", "log_format", "cluster", "node_name", "pod_namespace",
            "scrape_timeout", "pod_refresh_interval", "label_allowlist", "label_denylist",
            "relabel_configs", "kubelet", "collectors", "max_body_size", "source_series_limit",
            "series_limit", "series_ttl")
ENV = {  # environment variable -> top-level key
    "KUBEBRIDGE_LISTEN_ADDRESS": "listen_address", "KUBEBRIDGE_LOG_LEVEL": "log_level",
    "KUBEBRIDGE_LOG_FORMAT": "log_format", "KUBEBRIDGE_CLUSTER": "cluster",
    "NODE_NAME": "node_name", "POD_NAMESPACE": "pod_namespace",
}


def parse(doc: Any, env: Mapping[str, str] | None = None,
          overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate a loaded YAML document (plus environment and flag overrides)."""
    env = dict(os.environ if env is None else env)
    raw = dict(_map(doc, ""))
    _unknown(raw, TOP_KEYS, "")
    for var, key in ENV.items():
        if env.get(var):
            raw[key] = env[var]
    raw.update({k: v for k, v in (overrides or {}).items() if k != "collectors"})
    base = Config()
    values: dict[str, Any] = {}
    for key in ("listen_address", "cluster", "node_name", "pod_namespace", "log_level", "log_format"):
        if key in raw:
            values[key] = _typed(raw[key], "", key)
    if values.get("log_level", "info") not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    if values.get("log_format", "text") not in ("text", "json"):
        raise ConfigError("log_format", "must be text or json")
    listen = values.get("listen_address", base.listen_address)
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s]*):[0-9]{1,5}$", listen):
        raise ConfigError("listen_address", "must be HOST:PORT (e.g. 0.0.0.0:9500)")
    for key in ("scrape_timeout", "pod_refresh_interval"):
        if key in raw:
            values[key] = duration(raw[key], key)
    if "max_body_size" in raw:
        values["max_body_size"] = size(raw["max_body_size"], "max_body_size")
    for key in ("source_series_limit", "series_limit"):
        if key in raw:
            values[key] = count(raw[key], key)
    if "series_ttl" in raw:
        values["series_ttl"] = duration(raw["series_ttl"], "series_ttl")
    for key in ("label_allowlist", "label_denylist"):
        if key in raw:
            values[key] = _typed(raw[key], (), key)
    values["relabel_configs"] = relabel.parse_rules(raw.get("relabel_configs") or [], "relabel_configs")
    kubelet_default = _endpoint_default(Endpoint("https://$NODE_IP:10250"), env)
    if env.get("KUBEBRIDGE_KUBELET_URL"):
        kubelet_default = replace(kubelet_default, url=env["KUBEBRIDGE_KUBELET_URL"])
    values["kubelet"] = endpoint(raw.get("kubelet"), "kubelet", kubelet_default)
    values["collectors"] = _collectors(raw.get("collectors"), env, (overrides or {}).get("collectors", {}))
    return Config(**values)


def _collectors(raw: Any, env: Mapping[str, str], flags: Mapping[str, bool]) -> Mapping[str, CollectorConfig]:
    section = _map(raw, "collectors")
    regs = {r.name: r for r in registrations()}
    _unknown(section, list(regs), "collectors")
    out = {}
    for name, reg in regs.items():
        cfg = _collector(reg, section.get(name), f"collectors.{name}", env)
        if name in flags:
            cfg = replace(cfg, enabled=flags[name])
        out[name] = cfg
    return MappingProxyType(out)


def load(path: str | Path | None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config file (None: defaults, environment and flags only)."""
    doc: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError("", f"{path}: invalid YAML{where}") from None
    return parse(doc, env, overrides)


__all__ = ["Config", "CollectorConfig", "ConfigError", "Endpoint", "Option", "load", "parse"]
