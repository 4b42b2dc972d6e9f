"""statsd_exporter's mapping configuration, accepted as it is where possible.

A document `{defaults: {...}, mappings: [{match, name, labels, ...}]}`. Supported per rule:
`match`, `match_type` (glob, regex), `name`, `labels`, `action` (map, drop), `match_metric_type`
(counter, gauge, observer), `observer_type` (histogram, summary; the old `timer_type` too),
`histogram_options.buckets` (the old `buckets` too), `summary_options.quantiles` (the old
`quantiles` too; their `error` is ignored) and `summary_options.max_age`, `ttl`, `help`.
Accepted and ignored: `honor_labels`, `scale`, `glob_disable_ordering`, `age_buckets`,
`buf_cap`, native histogram options.

Semantics follow statsd_exporter: glob rules are tried before regex rules, each in file order,
and the first match wins; in a glob `*` matches within one dot-separated component; `$1`,
`${1}` (and `${name}` for regex groups) in `name` and label values are replaced by captures.
Unmatched names are escaped (invalid characters to `_`, a leading digit gets `_` first).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import yaml

from exporter.expfmt import LABEL_NAME, METRIC_NAME

DEFAULT_QUANTILES = (0.5, 0.9, 0.99)   # statsd_exporter's default objectives
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # client_golang's
_RULE_KEYS = frozenset({"match", "match_type", "name", "labels", "action", "match_metric_type",
                        "observer_type", "timer_type", "histogram_options", "buckets", "ttl", "help",
                        "honor_labels", "summary_options", "quantiles", "scale"})
_DEFAULT_KEYS = frozenset({"observer_type", "timer_type", "match_type", "glob_disable_ordering", "ttl",
                           "summary_options", "histogram_options", "buckets", "quantiles"})
_KIND = {"c": "counter", "g": "gauge", "s": "gauge", "ms": "observer", "h": "observer", "d": "observer"}
_TEMPLATE = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")
_GLOB = re.compile(r"^[a-zA-Z_*][a-zA-Z0-9_\-*]*(\.[a-zA-Z0-9_\-*]+)*$")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class MappingError(ValueError):
    """An invalid mapping document (the message names the rule)."""


@dataclass(frozen=True, slots=True)
class Mapped:
    """A StatsD name's Prometheus form."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    summary: bool = False                       # observer_type summary
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    max_age: float = 600.0                      # seconds of observations a summary's quantiles cover
    buckets: tuple[float, ...] | None = None    # None: the collector's default for the name
    ttl: float | None = None                    # None: the collector's default
    help: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    regex: re.Pattern[str]
    glob: bool
    name: str
    labels: tuple[tuple[str, str], ...]
    drop: bool
    metric_type: str
    summary: bool
    quantiles: tuple[float, ...]
    max_age: float
    buckets: tuple[float, ...] | None
    ttl: float | None
    help: str


def escape_name(name: str) -> str:
    """statsd_exporter's EscapeMetricName: invalid characters become `_` (the second of a `--`
    is dropped), a leading digit gets a `_` before it."""
    out = []
    prev = ""
    for c in name:
        if c.isascii() and (c.isalnum() or c == "_"):
            out.append(c)
        elif not (c == "-" and prev == "-"):
            out.append("_")
        prev = c
    text = "".join(out)
    return "_" + text if text[:1].isdigit() else text


def _expand(template: str, m: re.Match[str]) -> str:
    def one(t: re.Match[str]) -> str:
        if t.group(3):
            return "$"
        key = t.group(1) or t.group(2)
        try:
            got = m.group(int(key) if key.isdigit() else key)
        except IndexError:
            return ""
        return got or ""
    return _TEMPLATE.sub(one, template)


def _seconds(raw: Any, where: str) -> float | None:
    if raw is None or raw == 0 or raw == "0":
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        return float(raw)
    m = _DURATION.match(str(raw))
    if not m:
        raise MappingError(f"{where}: not a duration: {raw!r}")
    return float(m.group(1)) * _SCALE[m.group(2)]


def _buckets(section: Mapping[str, Any], where: str) -> tuple[float, ...] | None:
    raw = (section.get("histogram_options") or {}).get("buckets") or section.get("buckets")
    return check_buckets(raw, where) if raw else None


def check_buckets(raw: Any, where: str) -> tuple[float, ...]:
    """A non-empty, strictly increasing list of finite upper bounds."""
    if not isinstance(raw, (list, tuple)) or not raw or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and b == b and abs(b) != float("inf")
            for b in raw):
        raise MappingError(f"{where}: buckets must be a list of finite numbers")
    out = tuple(float(b) for b in raw)
    if any(b >= c for b, c in zip(out, out[1:])):
        raise MappingError(f"{where}: buckets must increase")
    return out


def _summary(section: Mapping[str, Any], where: str,
             fallback: tuple[tuple[float, ...], float]) -> tuple[tuple[float, ...], float]:
    """(quantiles, max_age) of `summary_options` (or the old top-level `quantiles`)."""
    opts = section.get("summary_options") or {}
    if not isinstance(opts, Mapping):
        raise MappingError(f"{where}.summary_options: must be a mapping")
    raw = opts.get("quantiles") or section.get("quantiles")
    quantiles = fallback[0]
    if raw:
        if not isinstance(raw, list) or not all(
                isinstance(q, Mapping) and isinstance(q.get("quantile"), (int, float))
                and 0 <= q["quantile"] <= 1 for q in raw):
            raise MappingError(f"{where}: quantiles must be a list of {{quantile: 0..1}}")
        quantiles = tuple(sorted({float(q["quantile"]) for q in raw}))
    max_age = _seconds(opts.get("max_age"), f"{where}.summary_options.max_age") or fallback[1]
    return quantiles, max_age


def _glob_regex(match: str) -> str:
    return "^" + r"\.".join("".join("([^.]*)" if ch == "*" else re.escape(ch) for ch in part)
                            for part in match.split(".")) + "$"


def _rule(raw: Any, i: int, defaults: Mapping[str, Any]) -> Rule:
    where = f"mappings[{i}]"
    if not isinstance(raw, Mapping):
        raise MappingError(f"{where}: must be a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    match, name = raw.get("match"), raw.get("name")
    action = raw.get("action", "map")
    if action not in ("map", "drop"):
        raise MappingError(f"{where}.action: must be map or drop")
    if not isinstance(match, str) or not match:
        raise MappingError(f"{where}.match: required")
    if action == "map" and (not isinstance(name, str) or not name):
        raise MappingError(f"{where}.name: required")
    mtype = raw.get("match_type") or defaults.get("match_type") or "glob"
    if mtype not in ("glob", "regex"):
        raise MappingError(f"{where}.match_type: must be glob or regex")
    if mtype == "glob":
        if not _GLOB.match(match):
            raise MappingError(f"{where}.match: invalid glob {match!r}")
        pattern = _glob_regex(match)
    else:
        pattern = match
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise MappingError(f"{where}.match: invalid regex: {exc}") from None
    labels = raw.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and LABEL_NAME.match(k) and isinstance(v, (str, int, float))
            for k, v in labels.items()):
        raise MappingError(f"{where}.labels: label names must be valid, values strings")
    if action == "map" and "$" not in str(name) and not METRIC_NAME.match(str(name)):
        raise MappingError(f"{where}.name: invalid metric name {name!r}")
    metric_type = raw.get("match_metric_type") or ""
    if metric_type not in ("", "counter", "gauge", "observer", "timer"):
        raise MappingError(f"{where}.match_metric_type: must be counter, gauge or observer")
    observer = raw.get("observer_type") or raw.get("timer_type") or defaults.get("observer_type") \
        or defaults.get("timer_type") or "histogram"
    if observer not in ("histogram", "summary", "default"):
        raise MappingError(f"{where}.observer_type: must be histogram or summary")
    ttl = _seconds(raw.get("ttl"), f"{where}.ttl")
    quantiles, max_age = _summary(raw, where, _summary(defaults, "defaults", (DEFAULT_QUANTILES, 600.0)))
    return Rule(regex, mtype == "glob", str(name or ""), tuple((k, str(v)) for k, v in labels.items()),
                action == "drop", "observer" if metric_type == "timer" else metric_type,
                observer == "summary", quantiles, max_age,
                _buckets(raw, where) or _buckets(defaults, "defaults"),
                ttl if ttl is not None else _seconds(defaults.get("ttl"), "defaults.ttl"),
                str(raw.get("help") or ""))


class Mapper:
    """StatsD name and type -> `Mapped`, remembered per (name, type) up to `cache_size`."""

    def __init__(self, doc: Any = None, cache_size: int = 50_000) -> None:
        doc = doc or {}
        if not isinstance(doc, Mapping):
            raise MappingError("the mapping document must be a mapping")
        unknown = set(doc) - {"defaults", "mappings"}
        if unknown:
            raise MappingError(f"unknown key {sorted(unknown)[0]!r}")
        defaults = doc.get("defaults") or {}
        if not isinstance(defaults, Mapping) or set(defaults) - _DEFAULT_KEYS:
            raise MappingError("defaults: unknown key or not a mapping")
        rules = doc.get("mappings") or []
        if not isinstance(rules, Sequence) or isinstance(rules, str):
            raise MappingError("mappings: must be a list")
        parsed = [_rule(r, i, defaults) for i, r in enumerate(rules)]
        observer = defaults.get("observer_type") or defaults.get("timer_type") or "histogram"
        if observer not in ("histogram", "summary", "default"):
            raise MappingError("defaults.observer_type: must be histogram or summary")
        quantiles, max_age = _summary(defaults, "defaults", (DEFAULT_QUANTILES, 600.0))
        self.defaults = Mapped("", (), False, observer == "summary", quantiles, max_age,
                               _buckets(defaults, "defaults"), _seconds(defaults.get("ttl"), "defaults.ttl"))
        self.rules = [r for r in parsed if r.glob] + [r for r in parsed if not r.glob]
        self._cache: dict[tuple[str, str], Mapped] = {}
        self._cache_size = cache_size

    @classmethod
    def load(cls, path: str, inline: Mapping[str, Any] | None = None) -> Mapper:
        """A statsd_exporter mapping file (if any) and an inline document of the same form: the
        file's rules, then the inline ones; the inline `defaults` keys override the file's."""
        doc: dict[str, Any] = {}
        if path:
            try:
                doc = yaml.safe_load(Path(path).read_text()) or {}
            except OSError as exc:
                raise MappingError(f"{path}: {exc.strerror}") from None
            except yaml.YAMLError:
                raise MappingError(f"{path}: invalid YAML") from None
            if not isinstance(doc, dict):
                raise MappingError(f"{path}: must be a mapping")
        if inline:
            if not isinstance(inline, Mapping):
                raise MappingError("the inline mapping document must be a mapping")
            unknown = set(inline) - {"defaults", "mappings"}
            if unknown:
                raise MappingError(f"unknown key {sorted(unknown)[0]!r}")
            rules = inline.get("mappings") or []
            if not isinstance(rules, list):
                raise MappingError("mappings: must be a list")
            defaults = {**(doc.get("defaults") or {}), **(inline.get("defaults") or {})}
            doc = {**doc, "defaults": defaults, "mappings": [*(doc.get("mappings") or []), *rules]}
        return cls(doc)

    def map(self, name: str, kind: str) -> Mapped:
        """The Prometheus name and labels of a StatsD name of type `kind` (c, g, ms, h, d, s)."""
        key = (name, kind)
        got = self._cache.get(key)
        if got is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            got = self._cache[key] = self._map(name, _KIND[kind])
        return got

    def _map(self, name: str, kind: str) -> Mapped:
        for r in self.rules:
            if r.metric_type and r.metric_type != kind:
                continue
            m = r.regex.fullmatch(name) if r.glob else r.regex.search(name)
            if m is None:
                continue
            if r.drop:
                return Mapped("", drop=True)
            labels = tuple((k, _expand(v, m)) for k, v in r.labels)
            return Mapped(escape_name(_expand(r.name, m)), labels, False, r.summary, r.quantiles, r.max_age,
                          r.buckets, r.ttl, r.help)
        d = self.defaults
        return Mapped(escape_name(name), (), False, d.summary, d.quantiles, d.max_age, d.buckets, d.ttl)
