"""Prometheus `relabel_configs` semantics (model/relabel/relabel.go), as pure functions.

Label names follow the legacy rule `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 2.x `model.LabelName.IsValid`);
Prometheus 3 accepts any UTF-8 name, which an exposition-format exporter cannot emit.

Regexes are RE2 in Prometheus and are translated to Python `re` (see `_translate`). Not covered:
Unicode classes (`\\p{..}`, rejected), Unicode case folding under `(?i)` and `\\s` matching `\\v`
(re.ASCII is used for RE2's ASCII `\\d \\w \\s \\b`), negated POSIX classes (rejected), the 1000
repeat-count limit, a `}` quantifier followed by `+` (possessive in Python, nested repeat in RE2), and
non-decimal Unicode digits in `$name` template references (Python `\\w`, Go letters/digits only).
"""
from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

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
_POSIX = {"alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
          "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
          "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
          "xdigit": "0-9A-Fa-f"}


@dataclass(frozen=True)
class Rule:
    """One validated relabel_configs entry; `regex` is anchored (use fullmatch)."""

    action: str
    source_labels: tuple[str, ...]
    separator: str
    regex: re.Pattern[str]
    target_label: str
    replacement: str
    modulus: int


_SAME_ESCAPES = frozenset("afnrtvdDsSwW")  # same meaning in Python under re.ASCII
_ANCHOR_ESCAPES = {"b": r"\b", "B": r"\B", "A": r"\A", "z": r"\Z"}
_NUMERIC_ESCAPE = re.compile(r"x\{[0-9A-Fa-f]{1,6}\}|x[0-9A-Fa-f]{2}|0[0-7]{0,2}|[1-7][0-7]{1,2}")
_ESC = r"\\(x\{[0-9A-Fa-f]{1,6}\}|x[0-9A-Fa-f]{2}|[0-7]{1,3}|.?)"
_CLASS_TOKEN = re.compile(r"\[:(\^?)([a-z]+):\]|" + _ESC + "|.", re.S)
_TOKEN = re.compile(r"\\Q(?P<quote>.*?)(?:\\E|\Z)|" + _ESC.replace("(", "(?P<esc>", 1)
                    + r"|\[(?P<cls>\^?\]?(?:\[:\^?[a-z]+:\]|\\.|[^\]\\])*)\]"
                    + r"|\((?P<group>\?P?<[A-Za-z0-9_]+>|\?[imsU]*(?:-[imsU]+)?[:)]|\?.?.?)?"
                    + r"|(?P<quant>[*+?]\+|\{,\d*\})|.", re.S)


def _escape(e: str, in_class: bool) -> str:
    """Translate the RE2 escape `\\e`."""
    if _NUMERIC_ESCAPE.fullmatch(e):  # RE2 octal (\0, \12, \123: never a backreference) and \x{10FFFF}
        code = int(e.strip("x{}"), 16) if e[0] == "x" else int(e, 8)
        if code <= 0x10FFFF:
            return re.escape(chr(code))
    elif len(e) == 1 and e.isascii() and not e.isalnum() or e in _SAME_ESCAPES:
        return "\\" + e
    elif e in _ANCHOR_ESCAPES and not in_class:
        return _ANCHOR_ESCAPES[e]
    elif e.isdigit():
        raise ValueError(f"backreference \\{e} is not supported (RE2)")
    elif e in ("p", "P"):
        raise ValueError(f"Unicode class \\{e} is not supported")
    raise ValueError(f"invalid escape sequence \\{e}" if e else "trailing backslash at end of expression")


def _char_class(body: str) -> str:
    out = ["[^" if body.startswith("^") else "["]
    for m in _CLASS_TOKEN.finditer(body[body.startswith("^"):]):
        if m[2]:
            if m[1] or m[2] not in _POSIX:
                raise ValueError(f"unsupported character class {m[0]}")
            out.append(_POSIX[m[2]])
        elif m[3] is not None:
            out.append(_escape(m[3], in_class=True))
        else:  # escape what Python reads as a nested set or set operation
            out.append("\\" + m[0] if m[0] in "[]&~|" else m[0])
    return "".join(out) + "]"


def _translate(src: str) -> str:
    """RE2 syntax -> Python `re` syntax with the same meaning, or ValueError."""
    out: list[str] = []
    # One frame per open group: ([multiline], flag scopes opened by a bare "(?i)" in it).
    # RE2's "(?i)" lasts to the end of the enclosing group; Python only allows it at the start,
    # so it becomes "(?i:" closed at the group's "|" and ")" (and reopened after "|").
    frames: list[tuple[list[bool], list[str]]] = [([False], [])]
    for m in _TOKEN.finditer(src):
        tok, (mode, scopes) = m[0], frames[-1]
        group = m["group"] or ""
        if m["quote"] is not None:
            out.append(re.escape(m["quote"]))
        elif m["esc"] is not None:
            out.append(_escape(m["esc"], in_class=False))
        elif m["cls"] is not None:
            out.append(_char_class(m["cls"]))
        elif m["quant"] and tok[0] == "{":
            out.append("\\" + tok)  # RE2 reads "{,n}" literally, Python as {0,n}
        elif m["quant"]:
            raise ValueError("possessive quantifiers are not supported (RE2)")
        elif tok[0] == "(" and (not group or group[-1] == ">"):
            frames.append(([mode[0]], []))
            out.append("(" + group.replace("?<", "?P<", 1))
        elif tok[0] == "(" and (f := re.fullmatch(r"\?([imsU]*)(?:-([imsU]+))?([:)])", group)):
            on, off = f[1], f[2] or ""
            if "U" in on + off:
                raise ValueError("flag U (ungreedy) is not supported")
            multiline = "m" in on or ("m" not in off and mode[0])
            flags = on + ("-" + off if off else "")
            if f[3] == ":":
                frames.append(([multiline], []))
                out.append(f"(?{flags}:")
            elif flags:
                mode[0] = multiline
                scopes.append(flags)
                out.append(f"(?{flags}:")
        elif tok[0] == "(":
            if group[1:2] in ("=", "!") or group[1:3] in ("<=", "<!"):
                raise ValueError("lookaround assertions are not supported (RE2)")
            raise ValueError(f"invalid or unsupported group '({group}'")
        elif tok == ")":
            if len(frames) == 1:
                raise ValueError("unexpected )")
            out.append(")" * (len(scopes) + 1))
            frames.pop()
        elif tok == "|":
            out.append(")" * len(scopes) + "|" + "".join(f"(?{f}:" for f in scopes))
        elif tok == "$":  # RE2 "$" is end of text only; Python's also matches before a final "\n"
            out.append("$" if mode[0] else r"\Z")
        else:
            out.append(tok)
    return "".join(out) + ")" * len(frames[0][1])


def compile_regex(regex: str) -> re.Pattern[str]:
    """Compile like Prometheus' NewRegexp: anchored "^(?s:regex)$"."""
    return re.compile(r"\A(?s:(?:" + _translate(regex) + r"))\Z", re.ASCII)


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
    except (ValueError, re.error) as err:
        reason = getattr(err, "msg", err)
        raise ConfigError(f"{path}.regex", f"invalid regex '{regex_src}': {reason}") from None
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


def _expand(template: str, m: re.Match[str]) -> str:
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
