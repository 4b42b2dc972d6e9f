"""Configuration: YAML (safe_load) -> validated, immutable `Config`.

Precedence: command-line flags > environment (`KUBEBRIDGE_*`, the downward API's `NODE_NAME`,
`NODE_IP`, `POD_NAMESPACE`) > the config file > built-in defaults. This is the only module that
reads the environment. Every error names its key path and exits the CLI with status 2.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import yaml

from exporter import relabel
from exporter.configvalues import count, duration, http_url, listen_address, size, telemetry_path
from exporter.errors import ConfigError, ConfigErrors
from exporter.nodeinfo import DEFAULT_NODE_LABELS
from exporter.pods import DEFAULT_ALLOWLIST, LabelPolicy
from exporter.registry import Option, Registration, registrations

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    # Follow 3xx answers, and only to the same scheme, host and port (default: refuse them).
    follow_redirects: bool = False


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


CLUSTER_SOURCES = ("node_labels", "gke_metadata")
GKE_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/cluster-name"


@dataclass(frozen=True)
class NodeTopologyConfig:
    """`node_topology`: reading the agent's own Node (docs/topology.md). `enabled` defaults to
    true in a pod (KUBERNETES_SERVICE_HOST set and a service-account token mounted)."""

    enabled: bool = False
    labels: tuple[str, ...] = DEFAULT_NODE_LABELS  # node labels exported as node_label_<name>
    roles: bool = True                             # node_role from node-role.kubernetes.io/<role>
    refresh_interval: float = 300.0
    apiserver: Endpoint = Endpoint("https://kubernetes.default.svc")
    # Where `cluster` comes from when it is not configured, tried in this order.
    cluster_from: tuple[str, ...] = ("node_labels",)
    gke_metadata_url: str = GKE_METADATA_URL


@dataclass(frozen=True)
class ClusterCollectorConfig:
    """`cluster_collector`: the kubelet-facing node collectors run for every node of the
    cluster from a Deployment/StatefulSet, sharded by node (docs/sharding.md)."""

    enabled: bool = False
    shard: int = -1                  # -1: the StatefulSet ordinal of pod_name
    total_shards: int = 1
    pod_name: str = ""               # POD_NAME (downward API metadata.name)
    # `$NODE_IP` (InternalIP), `$KUBELET_PORT` (the Node's kubelet port), `$NODE_NAME`; the
    # `kubelet` section's token, CA and TLS settings apply.
    kubelet_url: str = "https://$NODE_IP:$KUBELET_PORT"
    apiserver: Endpoint = Endpoint("https://kubernetes.default.svc")  # the Node and Pod watches
    kubeconfig: str = ""
    # "static": shard/total_shards (sha256 mod total); "ready_pods": the Ready pods of
    # peer_selector in pod_namespace share the nodes by rendezvous hashing (docs/sharding.md).
    membership: str = "static"
    peer_selector: str = "app.kubernetes.io/component=cluster-collector"


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
    # The node_exporter-style web flags (also config keys): where /metrics is served, whether
    # process_*/python_* are left out, and the exporter-toolkit web config (TLS, basic auth).
    telemetry_path: str = "/metrics"
    disable_exporter_metrics: bool = False
    web_config_file: str = ""
    node_topology: NodeTopologyConfig = NodeTopologyConfig()
    cluster_collector: ClusterCollectorConfig = ClusterCollectorConfig()
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
    errors = []
    for key in keys:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            errors.append(ConfigError(_join(path, str(key)), f"unknown key{extra}"))
    _raise(errors)


def _raise(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


class _Errors:
    """Collects every ConfigError of a section instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def check(self, fn: Any, *args: Any, default: Any = None) -> Any:
        """fn(*args), or `default` with its error(s) recorded."""
        try:
            return fn(*args)
        except ConfigErrors as exc:
            self.errors.extend(exc.errors)
        except ConfigError as exc:
            self.errors.append(exc)
        return default

    def done(self) -> None:
        """Raise what was collected (one error as itself, several as ConfigErrors)."""
        _raise(self.errors)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _map(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be a mapping, not {type(raw).__name__}")
    return raw


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
    errs = _Errors()
    errs.check(_unknown, section, list(fields), path)
    values = {}
    for k, v in section.items():
        if k in fields:
            got = errs.check(_typed, v, getattr(default, k), _join(path, k), default=errs)
            if got is not errs:
                values[k] = got
    if "url" in values:
        values["url"] = errs.check(http_url, values["url"], _join(path, "url"), default=default.url)
    for k in ("token_file", "ca_file", "cert_file", "key_file"):
        if values.get(k) and not Path(values[k]).exists():
            errs.errors.append(ConfigError(_join(path, k), f"file not found: {values[k]}"))
    errs.done()
    url = values.get("url", default.url)
    if url.startswith("http://") and "token_file" not in values:
        # Plain http (the kubelet's read-only port): the default service-account token would
        # travel in clear text, so it is only sent when token_file is set explicitly.
        values["token_file"] = ""
    return replace(default, **values)


def _collector(reg: Registration, raw: Any, path: str, env: Mapping[str, str],
               default_enabled: bool) -> CollectorConfig:
    section = _map(raw, path)
    common = ("enabled", "relabel_configs", "timeout", "max_body_size", "series_limit")
    errs = _Errors()
    errs.check(_unknown, section, [*common, *reg.options], path)
    enabled = errs.check(_typed, section.get("enabled", default_enabled), True, _join(path, "enabled"),
                         default=False)
    rules = errs.check(relabel.parse_rules, section.get("relabel_configs") or [],
                       _join(path, "relabel_configs"), default=())
    timeout = errs.check(duration, section["timeout"], _join(path, "timeout"), default=0.0) \
        if "timeout" in section else 0.0
    options: dict[str, Any] = {}
    for key, opt in reg.options.items():
        options[key] = errs.check(_option, key, opt, section, path, env, default=opt.default)
    body = errs.check(size, section["max_body_size"], _join(path, "max_body_size"), default=0) \
        if "max_body_size" in section else 0
    series = errs.check(count, section["series_limit"], _join(path, "series_limit"), default=0) \
        if "series_limit" in section else 0
    errs.done()
    return CollectorConfig(reg.name, enabled, rules, timeout, body, series, MappingProxyType(options))


def _option(key: str, opt: Option, section: Mapping[str, Any], path: str, env: Mapping[str, str]) -> Any:
    """One collector-specific option, validated."""
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
    return value


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
            "relabel_configs", "kubelet", "collectors", "telemetry_path",
            "disable_exporter_metrics", "web_config_file", "node_topology", "cluster_collector",
            "max_body_size", "source_series_limit", "series_limit", "series_ttl")
ENV = {  # environment variable -> top-level key
    "KUBEBRIDGE_LISTEN_ADDRESS": "listen_address", "KUBEBRIDGE_LOG_LEVEL": "log_level",
    "KUBEBRIDGE_LOG_FORMAT": "log_format", "KUBEBRIDGE_CLUSTER": "cluster",
    "NODE_NAME": "node_name", "POD_NAMESPACE": "pod_namespace",
}
_FLAG_ONLY = ("collectors", "disable_defaults", "cluster_collector")  # overrides that are not top-level keys


def parse(doc: Any, env: Mapping[str, str] | None = None,
          overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate a loaded YAML document (plus environment and flag overrides); every error is
    reported at once (ConfigErrors when there are several)."""
    env = dict(os.environ if env is None else env)
    over = dict(overrides or {})
    raw = dict(_map(doc, ""))
    errs = _Errors()
    errs.check(_unknown, raw, TOP_KEYS, "")
    for var, key in ENV.items():
        if env.get(var):
            raw[key] = env[var]
    raw.update({k: v for k, v in over.items() if k not in _FLAG_ONLY})
    values: dict[str, Any] = {}
    for key in ("listen_address", "cluster", "node_name", "pod_namespace", "log_level", "log_format",
                "telemetry_path", "web_config_file"):
        if key in raw:
            got = errs.check(_typed, raw[key], "", key, default=errs)
            if got is not errs:
                values[key] = got
    if values.get("log_level", "info") not in LOG_LEVELS:
        errs.errors.append(ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}"))
        values.pop("log_level")
    if values.get("log_format", "text") not in ("text", "json"):
        errs.errors.append(ConfigError("log_format", "must be text or json"))
        values.pop("log_format")
    for key, check in (("listen_address", listen_address), ("telemetry_path", telemetry_path)):
        if key in values and errs.check(check, values[key], default=errs) is errs:
            values.pop(key)
    if values.get("web_config_file") and not Path(values["web_config_file"]).is_file():
        errs.errors.append(ConfigError("web_config_file", f"file not found: {values['web_config_file']}"))
    if "disable_exporter_metrics" in raw:
        values["disable_exporter_metrics"] = errs.check(
            _typed, raw["disable_exporter_metrics"], False, "disable_exporter_metrics", default=False)
    for key in ("scrape_timeout", "pod_refresh_interval"):
        if key in raw:
            got = errs.check(duration, raw[key], key, default=errs)
            if got is not errs:
                values[key] = got
    budget_keys: dict[str, Callable[[Any, str], Any]] = {
        "max_body_size": size, "source_series_limit": count, "series_limit": count, "series_ttl": duration}
    for key, read in budget_keys.items():
        if key in raw:
            got = errs.check(read, raw[key], key, default=errs)
            if got is not errs:
                values[key] = got
    for key in ("label_allowlist", "label_denylist"):
        if key in raw:
            got = errs.check(_typed, raw[key], (), key, default=errs)
            if got is not errs:
                values[key] = got
    values["relabel_configs"] = errs.check(relabel.parse_rules, raw.get("relabel_configs") or [],
                                           "relabel_configs", default=())
    kubelet_default = _endpoint_default(Endpoint("https://$NODE_IP:10250"), env)
    if env.get("KUBEBRIDGE_KUBELET_URL"):
        kubelet_default = replace(kubelet_default, url=env["KUBEBRIDGE_KUBELET_URL"])
    section = raw.get("cluster_collector")
    sharded = (isinstance(section, Mapping) and section.get("enabled") is True) or \
        over.get("cluster_collector", {}).get("enabled") is True
    values["kubelet"] = errs.check(lambda: _node_url(endpoint(raw.get("kubelet"), "kubelet", kubelet_default),
                                                     values.get("node_name", ""), sharded),
                                   default=kubelet_default)
    values["node_topology"] = errs.check(node_topology, raw.get("node_topology"), env,
                                         default=NodeTopologyConfig())
    values["cluster_collector"] = errs.check(cluster_collector, raw.get("cluster_collector"), env,
                                             over.get("cluster_collector", {}),
                                             default=ClusterCollectorConfig())
    values["collectors"] = errs.check(_collectors, raw.get("collectors"), env, over.get("collectors", {}),
                                      over.get("disable_defaults") is True, default={})
    errs.done()
    return Config(**values)


def _node_url(ep: Endpoint, node: str, sharded: bool = False) -> Endpoint:
    """`$NODE_NAME` in the kubelet URL (the API server proxy mode,
    `.../api/v1/nodes/$NODE_NAME/proxy`) becomes the node's name, path-escaped. (A cluster
    collector takes its kubelet URLs from `cluster_collector.kubelet_url`, per node.)"""
    if "$NODE_NAME" not in ep.url or sharded:
        return ep
    if not node:
        raise ConfigError("kubelet.url", "uses $NODE_NAME but node_name is not set (NODE_NAME)")
    return replace(ep, url=ep.url.replace("$NODE_NAME", quote(node, safe="")))


def node_topology(raw: Any, env: Mapping[str, str]) -> NodeTopologyConfig:
    """The `node_topology` section."""
    path = "node_topology"
    section = _map(raw, path)
    base = NodeTopologyConfig()
    _unknown(section, list(NodeTopologyConfig.__dataclass_fields__), path)
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    url = base.apiserver.url
    if host:  # as client-go's in-cluster config: works without cluster DNS (hostNetwork)
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    default = _endpoint_default(Endpoint(url), env)
    values: dict[str, Any] = {"enabled": bool(host and default.token_file)}
    for key in ("enabled", "labels", "roles", "cluster_from", "gke_metadata_url"):
        if key in section:
            values[key] = _typed(section[key], getattr(base, key), _join(path, key))
    if "refresh_interval" in section:
        values["refresh_interval"] = duration(section["refresh_interval"], _join(path, "refresh_interval"))
    bad = [s for s in values.get("cluster_from", ()) if s not in CLUSTER_SOURCES]
    if bad:
        raise ConfigError(_join(path, "cluster_from"),
                          f"unknown source {bad[0]!r} (one of: {', '.join(CLUSTER_SOURCES)})")
    if "gke_metadata_url" in values:
        values["gke_metadata_url"] = http_url(values["gke_metadata_url"], _join(path, "gke_metadata_url"))
    values["apiserver"] = endpoint(section.get("apiserver"), _join(path, "apiserver"), default)
    return replace(base, **values)


def cluster_collector(raw: Any, env: Mapping[str, str], flags: Mapping[str, Any]) -> ClusterCollectorConfig:
    """The `cluster_collector` section; `KUBEBRIDGE_SHARD`, `KUBEBRIDGE_TOTAL_SHARDS` and
    `POD_NAME` override it, `--shard`/`--total-shards` override those."""
    from exporter.shard.membership import resolve

    path = "cluster_collector"
    section = dict(_map(raw, path))
    base = ClusterCollectorConfig()
    _unknown(section, list(ClusterCollectorConfig.__dataclass_fields__), path)
    for var, key in (("KUBEBRIDGE_SHARD", "shard"), ("KUBEBRIDGE_TOTAL_SHARDS", "total_shards")):
        if env.get(var):
            if not env[var].isdigit():
                raise ConfigError(_join(path, key), f"{var}={env[var]!r} is not a number")
            section[key] = int(env[var])
    if env.get("POD_NAME"):
        section["pod_name"] = env["POD_NAME"]
    section.update(flags)
    values: dict[str, Any] = {}
    for key in ("enabled", "shard", "total_shards", "pod_name", "kubelet_url", "kubeconfig", "membership",
                "peer_selector"):
        if key in section:
            values[key] = _typed(section[key], getattr(base, key), _join(path, key))
    for key in ("shard", "total_shards"):
        if not isinstance(values.get(key, 0), int):
            raise ConfigError(_join(path, key), "must be a whole number")
    url = values.get("kubelet_url", base.kubelet_url)
    sample = url.replace("$NODE_IP", "10.0.0.1").replace("$KUBELET_PORT", "10250").replace("$NODE_NAME", "n")
    http_url(sample, _join(path, "kubelet_url"))
    values["kubelet_url"] = url.rstrip("/")
    if values.get("kubeconfig") and not Path(values["kubeconfig"]).is_file():
        raise ConfigError(_join(path, "kubeconfig"), f"file not found: {values['kubeconfig']}")
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    api = base.apiserver.url
    if host:  # as client-go's in-cluster config (and node_topology.apiserver)
        api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    values["apiserver"] = endpoint(section.get("apiserver"), _join(path, "apiserver"),
                                   _endpoint_default(Endpoint(api), env))
    out = replace(base, **values)
    if out.membership not in ("static", "ready_pods"):
        raise ConfigError(_join(path, "membership"), "must be static or ready_pods")
    if out.enabled and out.membership == "static":
        resolve(out.shard, out.total_shards, out.pod_name)  # (a ConfigError when unresolvable)
    elif out.enabled and not out.pod_name:
        raise ConfigError(_join(path, "membership"), "ready_pods needs the pod's name (POD_NAME)")
    return out


def _collectors(raw: Any, env: Mapping[str, str], flags: Mapping[str, bool],
                disable_defaults: bool = False) -> Mapping[str, CollectorConfig]:
    """Every registered collector's section. `disable_defaults` (`--collector.disable-defaults`):
    only the collectors enabled explicitly, by flag or by `enabled: true`, run."""
    section = _map(raw, "collectors")
    regs = {r.name: r for r in registrations()}
    errs = _Errors()
    errs.check(_unknown, section, list(regs), "collectors")
    out = {}
    for name, reg in regs.items():
        default_enabled = reg.default_enabled and not disable_defaults
        cfg = errs.check(_collector, reg, section.get(name), f"collectors.{name}", env, default_enabled)
        if cfg is None:
            continue
        if name in flags:
            cfg = replace(cfg, enabled=flags[name])
        out[name] = cfg
    errs.done()
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
