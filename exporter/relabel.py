"""Prometheus `relabel_configs` semantics (model/relabel/relabel.go), as pure functions.

Label names follow the legacy rule `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 2.x `model.LabelName.IsValid`);
Prometheus 3 accepts any UTF-8 name, which an exposition-format exporter cannot emit.

Regexes are RE2, as in Prometheus (Go's regexp is RE2): compiled by google-re2, so matching is
linear in the input whatever the pattern, and what Go rejects is rejected. Not covered:
non-decimal Unicode digits in `$name` template references (Python `\\w`, Go letters/digits only).
"""
from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import re2  # type: ignore[import-untyped]

from exporter.errors import ConfigError

ACTIONS = frozenset({"replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap",
                     "labeldrop", "labelkeep", "lowercase", "uppercase"})
_KEYS = ("source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action")
_NO_REPLACEMENT = frozenset({"lowercase", "uppercase", "keepequal", "dropequal"})
_NEEDS_TARGET = _NO_REPLACEMENT | {"replace", "hashmod"}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# relabelTargetLegacy: a label name that may contain $1 / ${name} templates.
_TEMPLATED_NAME = re.compile(r"(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+", re.ASCII)
_TEMPLATE_REF = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))?")
class Pattern(Protocol):
    """The part of a compiled RE2 pattern (google-re2's `re2._Regexp`) that relabeling uses."""

    groups: int
    groupindex: Mapping[str, int]

    def fullmatch(self, text: str) -> Match | None: ...


class Match(Protocol):
    re: Pattern

    def group(self, index: int | str) -> str | None: ...


@dataclass(frozen=True)
class Rule:
    """One validated relabel_configs entry; `regex` is anchored (use fullmatch)."""

    action: str
    source_labels: tuple[str, ...]
    separator: str
    regex: Pattern
    target_label: str
    replacement: str
    modulus: int


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid regex is reported as a ConfigError, not on stderr
MAX_REGEX_LENGTH = 4096


def compile_regex(regex: str) -> Pattern:
    """Compile like Prometheus' NewRegexp: anchored "^(?s:regex)$", RE2 semantics.

    RE2 runs in time linear in the input and rejects what Go's regexp rejects (backreferences,
    lookaround, possessive quantifiers, repeats over 1000), so a rule from a pod annotation
    cannot stall the event loop. ValueError on an invalid or oversized regex.
    """
    if len(regex) > MAX_REGEX_LENGTH:
        raise ValueError(f"longer than {MAX_REGEX_LENGTH} characters")
    anchored = r"^(?s:(?:" + regex + r"))$"
    try:
        compiled: Pattern = re2.compile(anchored, _RE2_OPTIONS)
    except re2.error as err:
        raise ValueError(_re2_reason(err, anchored)) from None
    return compiled


def _re2_reason(err: Exception, anchored: str) -> str:
    """RE2's message ("missing ): <whole pattern>") without our anchoring."""
    reason = err.args[0] if err.args else err
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return text.removesuffix(": " + anchored)


_DEFAULT_REGEX = compile_regex("(.*)")


def _string(item: dict[object, object], key: str, default: str, path: str) -> str:
    if key not in item:
        return default
    value = item[key]
    if value is None:  # YAML null decodes to the zero value in Prometheus (yaml.v2)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{path}.{key}", "must be a string")
    return str(value)


def _parse_rule(item: object, path: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(path, "must be a mapping")
    for key in item:
        if key not in _KEYS:
            hint = difflib.get_close_matches(str(key), _KEYS, n=1)
            raise ConfigError(f"{path}.{key}", f"unknown key '{key}'"
                              + (f", did you mean '{hint[0]}'?" if hint else ""))
    action = _string(item, "action", "replace", path)
    if action.lower() not in ACTIONS and action:
        raise ConfigError(f"{path}.action", f"unknown action '{action}'")
    action = action.lower()
    sources = item.get("source_labels") or []
    if not isinstance(sources, list):
        raise ConfigError(f"{path}.source_labels", "must be a list of label names")
    for j, name in enumerate(sources):
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise ConfigError(f"{path}.source_labels[{j}]", f"'{name}' is not a valid label name")
    regex_src = _string(item, "regex", "(.*)", path)
    try:
        regex = _DEFAULT_REGEX if "regex" not in item else compile_regex(regex_src)
    except ValueError as err:
        raise ConfigError(f"{path}.regex", f"invalid regex '{regex_src}': {err}") from None
    modulus = item.get("modulus") or 0
    if isinstance(modulus, bool) or not isinstance(modulus, int) or not 0 <= modulus < 2**64:
        raise ConfigError(f"{path}.modulus", "must be a non-negative integer")
    rule = Rule(action, tuple(sources), _string(item, "separator", ";", path), regex,
                _string(item, "target_label", "", path), _string(item, "replacement", "$1", path), modulus)
    _validate(rule, "regex" in item, path)
    return rule


def _validate(r: Rule, regex_set: bool, path: str) -> None:
    """Config.Validate, in Prometheus' order of checks."""
    a, target = r.action, r.target_label
    bad_target = ConfigError(f"{path}.target_label", f"'{target}' is invalid 'target_label' for {a} action")
    if not a:
        raise ConfigError(f"{path}.action", "relabel action cannot be empty")
    if a == "hashmod" and r.modulus == 0:
        raise ConfigError(f"{path}.modulus", "relabel configuration for hashmod requires non-zero modulus")
    if a in _NEEDS_TARGET and not target:
        raise ConfigError(f"{path}.target_label",
                          f"relabel configuration for {a} action requires 'target_label' value")
    if a == "replace" and not (_TEMPLATED_NAME if "$" in target else _LABEL_NAME).fullmatch(target):
        raise bad_target
    if (a in _NO_REPLACEMENT or a == "hashmod") and not _LABEL_NAME.fullmatch(target):
        raise bad_target
    if a in _NO_REPLACEMENT and r.replacement != "$1":
        raise ConfigError(f"{path}.replacement", f"'replacement' can not be set for {a} action")
    if a == "labelmap" and not _TEMPLATED_NAME.fullmatch(r.replacement):
        raise ConfigError(f"{path}.replacement", f"'{r.replacement}' is invalid 'replacement' for {a} action")
    if a in ("keepequal", "dropequal"):
        extra = {"regex": regex_set, "modulus": r.modulus != 0, "separator": r.separator != ";"}
        message = f"{a} action requires only 'source_labels' and 'target_label', and no other fields"
    elif a in ("labeldrop", "labelkeep"):
        extra = {"source_labels": bool(r.source_labels), "target_label": target != "",
                 "modulus": r.modulus != 0, "separator": r.separator != ";",
                 "replacement": r.replacement != "$1"}
        message = f"{a} action requires only 'regex', and no other fields"
    else:
        return
    for key, is_set in extra.items():
        if is_set:
            raise ConfigError(f"{path}.{key}", message)


def parse_rules(raw: object, path: str) -> tuple[Rule, ...]:
    """Parse a YAML-loaded `relabel_configs` list; ConfigError carries the offending key's path."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, "must be a list of relabel rules")
    return tuple(_parse_rule(item, f"{path}[{i}]") for i, item in enumerate(raw))


def _expand(template: str, m: Match) -> str:
    """Go's Regexp.ExpandString: $1 ${1} $name ${name}; "$$" is "$"; unknown groups expand to ""."""
    def ref(r: re.Match[str]) -> str:
        name = r[1] or r[2]
        if not name:
            return "$"  # "$$", or a malformed reference that Go keeps as text
        numeric = name.isascii() and name.isdigit() and len(name) < 10 and (name == "0" or name[0] != "0")
        group = int(name) if numeric else m.re.groupindex.get(name)
        return (m.group(group) or "") if group is not None and group <= m.re.groups else ""
    return _TEMPLATE_REF.sub(ref, template)


def _set(labels: dict[str, str], name: str, value: str) -> None:
    if value:
        labels[name] = value
    else:
        labels.pop(name, None)


def _change_case(value: str, upper: bool) -> str:
    # Go maps rune by rune (simple case mapping): "ß".upper() must stay "ß", not become "SS".
    convert = str.upper if upper else str.lower
    if value.isascii():
        return convert(value)
    return "".join(c2 if len(c2 := convert(c)) == 1 else c for c in value)


def apply(rules: Sequence[Rule], labels: dict[str, str]) -> dict[str, str] | None:
    """Relabel a copy of `labels`; None when a rule drops the series. Empty values count as absent."""
    lb = {name: value for name, value in labels.items() if value}
    for r in rules:
        val = r.separator.join(lb.get(name, "") for name in r.source_labels)
        a = r.action
        if a == "drop" or a == "keep":
            if (r.regex.fullmatch(val) is None) == (a == "keep"):
                return None
        elif a == "dropequal" or a == "keepequal":
            if (lb.get(r.target_label, "") == val) == (a == "dropequal"):
                return None
        elif a == "replace":
            if (m := r.regex.fullmatch(val)) is not None:
                target = _expand(r.target_label, m)
                if _LABEL_NAME.fullmatch(target):
                    _set(lb, target, _expand(r.replacement, m))
        elif a == "lowercase" or a == "uppercase":
            _set(lb, r.target_label, _change_case(val, a == "uppercase"))
        elif a == "hashmod":
            digest = hashlib.md5(val.encode()).digest()
            lb[r.target_label] = str(int.from_bytes(digest[8:], "big") % r.modulus)
        elif a == "labelmap":
            # Iterates a sorted snapshot (Go: base labels, then added ones). Unlike Prometheus, which
            # would then fail the whole scrape, an invalid mapped name is skipped as replace does.
            for name, value in sorted(lb.items()):
                if (m := r.regex.fullmatch(name)) is not None:
                    if _LABEL_NAME.fullmatch(new := _expand(r.replacement, m)):
                        lb[new] = value
        elif a == "labeldrop" or a == "labelkeep":
            for name in [n for n in lb if (r.regex.fullmatch(n) is None) == (a == "labelkeep")]:
                del lb[name]
        else:
            raise ValueError(f"unknown relabel action {a!r}")
    return lb


def uses_name(rules: Sequence[Rule]) -> bool:
    """True when the result may depend on, or change, "__name__" (so it cannot be cached per label set)."""
    return any(
        "__name__" in r.source_labels or r.target_label == "__name__"
        or (r.action == "replace" and "$" in r.target_label)  # a template can expand to "__name__"
        or (r.action in ("labelmap", "labeldrop") and r.regex.fullmatch("__name__") is not None)
        or (r.action == "labelmap" and r.replacement == "__name__")
        # labelkeep removes every label its regex does not match, "__name__" included
        or (r.action == "labelkeep" and r.regex.fullmatch("__name__") is None)
        for r in rules)
