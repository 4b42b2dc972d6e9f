"""Tests for exporter.relabel.

RELABEL_CASES is a port of TestRelabel in prometheus/prometheus model/relabel/relabel_test.go: each Go
`Config` struct becomes the equivalent YAML dict (fields the Go test leaves empty get the same defaults
from parse_rules that the Go test harness fills in). The Validate, target-validity and benchmark-config
tables are ported further down.
"""
from __future__ import annotations

import hashlib

import pytest
import yaml

from exporter.errors import ConfigError
from exporter.relabel import apply, parse_rules, uses_name


def rules(*raw: dict) -> tuple:
    return parse_rules(list(raw), "relabel_configs")


# (input labels, relabel configs, expected output or None when dropped)
RELABEL_CASES = [
    pytest.param(
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "separator": ";",
          "replacement": "ch${1}-ch${1}", "action": "replace"}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "choo-choo"},
        id="replace-braced-group"),
    pytest.param(
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["a", "b"], "regex": "f(.*);(.*)r", "target_label": "a", "separator": ";",
          "replacement": "b${1}${2}m", "action": "replace"},  # boobam
         {"source_labels": ["c", "a"], "regex": "(b).*b(.*)ba(.*)", "target_label": "d", "separator": ";",
          "replacement": "$1$2$2$3", "action": "replace"}],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
        id="replace-chained"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"},
         {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "separator": ";",
          "replacement": "ch$1-ch$1", "action": "replace"}],
        None,
        id="drop-stops-processing"),
    pytest.param(
        {"a": "foo", "b": "bar"},
        [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}],
        None,
        id="drop-match"),
    pytest.param(
        {"a": "abc"},
        [{"source_labels": ["a"], "regex": ".*(b).*", "target_label": "d", "separator": ";",
          "replacement": "$1", "action": "replace"}],
        {"a": "abc", "d": "b"},
        id="replace-inner-group"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "no-match", "action": "drop"}],
        {"a": "foo"},
        id="drop-no-match"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "f|o", "action": "drop"}],
        {"a": "foo"},
        id="drop-regex-is-anchored"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}],
        None,
        id="keep-no-match"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}],
        {"a": "foo"},
        id="keep-match"),
    pytest.param(  # No replacement must be applied if there is no match.
        {"a": "boo"},
        [{"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar",
          "action": "replace"}],
        {"a": "boo"},
        id="replace-no-match"),
    pytest.param(  # Blank replacement should delete the label.
        {"a": "foo", "f": "baz"},
        [{"source_labels": ["a"], "regex": "(f).*", "target_label": "$1", "replacement": "$2",
          "action": "replace"}],
        {"a": "foo"},
        id="replace-blank-deletes"),
    pytest.param(
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["c"], "target_label": "d", "separator": ";", "action": "hashmod",
          "modulus": 1000}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "976"},
        id="hashmod"),
    pytest.param(
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "separator": ";", "action": "hashmod",
          "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
        id="hashmod-newline"),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
        id="labelmap-prefix"),
    pytest.param(
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc",
         "my_bar": "aaa", "my_baz": "bbb"},
        id="labelmap-meta"),
    pytest.param(  # valid case
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
          "replacement": "${2}", "target_label": "${1}"}],
        {"a": "some-name-value", "name": "value"},
        id="replace-templated-target"),
    pytest.param(  # invalid replacement ""
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
          "replacement": "${3}", "target_label": "${1}"}],
        {"a": "some-name-value"},
        id="replace-unknown-group-empty"),
    pytest.param(  # invalid target_labels
        {"a": "some-name-0"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
          "replacement": "${1}", "target_label": "${3}"},
         {"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
          "replacement": "${1}", "target_label": "${3}"},
         {"source_labels": ["a"], "regex": "some-([^-]+)(-[^,]+)", "action": "replace",
          "replacement": "${1}", "target_label": "${3}"}],
        {"a": "some-name-0"},
        id="replace-invalid-expanded-target"),
    pytest.param(  # more complex real-life like usecase
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [{"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)path:(/[^,]+).*", "action": "replace",
          "replacement": "${1}", "target_label": "__metrics_path__"},
         {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)job:([^,]+).*", "action": "replace",
          "replacement": "${1}", "target_label": "job"},
         {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
          "action": "replace", "replacement": "${2}", "target_label": "${1}"}],
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar", "__metrics_path__": "/secret",
         "job": "some-job", "foo": "bar"},
        id="real-life-tags"),
    pytest.param(  # From https://github.com/prometheus/prometheus/issues/12283
        {"__meta_kubernetes_pod_container_port_name": "foo",
         "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091"},
        [{"regex": "^__meta_kubernetes_pod_container_port_name$", "action": "labeldrop"},
         {"source_labels": ["__meta_kubernetes_pod_annotation_XXX_metrics_port"], "regex": "(.+)",
          "action": "replace", "replacement": "metrics",
          "target_label": "__meta_kubernetes_pod_container_port_name"},
         {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "^metrics$",
          "action": "keep"}],
        {"__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
         "__meta_kubernetes_pod_container_port_name": "metrics"},
        id="issue-12283"),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
        id="labelkeep"),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labeldrop"}],
        {"a": "foo"},
        id="labeldrop"),
    pytest.param(
        {"foo": "bAr123Foo"},
        [{"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
         {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"}],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
        id="upper-lower"),
    pytest.param(
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        id="keepequal-equal"),
    pytest.param(
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}],
        None,
        id="dropequal-equal"),
    pytest.param(
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        id="dropequal-different"),
    pytest.param(
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}],
        None,
        id="keepequal-different"),
    pytest.param(
        {"a": "line1\nline2", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "line1.*line2", "target_label": "d", "separator": ";",
          "replacement": "match${1}", "action": "replace"}],
        {"a": "line1\nline2", "b": "bar", "c": "baz", "d": "match"},
        id="dot-matches-newline"),
    # Not ported (Prometheus 3 UTF-8 label names; this module uses the legacy name rule, so parse_rules
    # rejects them — see the "utf8-source-label" / "utf8-target-label" error cases below):
    #   "Replace on source label with UTF-8 characters"            (source_labels: [utf-8.label])
    #   "Replace targetLabel with UTF-8 characters"                (target_label: utf-8.label)
    #   "Replace targetLabel with UTF-8 characters and $variable"  (target_label: utf-8.label${1})
    # "Replace targetLabel with UTF-8 characters and various $var styles": only its name mentions UTF-8.
    pytest.param(
        {"a": "line1\nline2", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "(line1).*(?<second>line2)", "target_label": "label1_${1}",
          "separator": ";", "replacement": "val_${second}", "action": "replace"},
         {"source_labels": ["a"], "regex": "(line1).*(?<second>line2)", "target_label": "label2_$1",
          "separator": ";", "replacement": "val_$second", "action": "replace"}],
        {"a": "line1\nline2", "b": "bar", "c": "baz",
         "label1_line1": "val_line2", "label2_line1": "val_line2"},
        id="named-groups-var-styles"),
    pytest.param(
        {"__name__": "http_requests_total"},
        [{"source_labels": ["__name__"], "regex": ".*_total$", "target_label": "__type__",
          "replacement": "counter", "action": "replace"}],
        {"__name__": "http_requests_total", "__type__": "counter"},
        id="name-to-type"),
    pytest.param(
        {"__name__": "disk_usage_bytes"},
        [{"source_labels": ["__name__"], "regex": ".*_bytes$", "target_label": "__unit__",
          "replacement": "bytes", "action": "replace"}],
        {"__name__": "disk_usage_bytes", "__unit__": "bytes"},
        id="name-to-unit"),
]

# Cases beyond upstream, pinning Prometheus semantics the upstream table does not exercise.
EXTRA_CASES = [
    pytest.param({"a": "", "b": "x"}, [{"source_labels": ["a"], "regex": "", "action": "keep"}],
                 {"b": "x"}, id="empty-value-is-missing"),
    pytest.param({"a": "x"}, [{"source_labels": ["zz"], "target_label": "a"}],
                 {}, id="replace-empty-source-deletes-target"),
    pytest.param({"a": "x"}, [{"source_labels": ["a"], "target_label": "b",
                               "replacement": "$$1-$1x-${1}x-${"}],
                 {"a": "x", "b": "$1--xx-${"}, id="expand-dollar-escape-and-malformed"),
    pytest.param({"a": "x"}, [{"source_labels": ["a"], "regex": "(?P<n>.)", "target_label": "b",
                               "replacement": "$0/$n/${n}/$01/$2"}],
                 {"a": "x", "b": "x/x/x//"}, id="expand-whole-named-leading-zero-missing"),
    pytest.param({"a": "FOO"}, [{"source_labels": ["a"], "regex": "(?i)foo|bar", "action": "keep"}],
                 {"a": "FOO"}, id="case-insensitive-flag"),
    pytest.param({"a": "bar"}, [{"source_labels": ["a"], "regex": "x(?i)y|BAR", "action": "keep"}],
                 {"a": "bar"}, id="inline-flag-extends-over-alternation"),
    pytest.param({"a": "x\n"}, [{"source_labels": ["a"], "regex": "x$\n", "action": "keep"}],
                 None, id="dollar-is-end-of-text"),
    pytest.param({"a": "x\ny"}, [{"source_labels": ["a"], "regex": "(?m)x$\ny", "action": "keep"}],
                 {"a": "x\ny"}, id="multiline-dollar"),
    pytest.param({"a": "a{,2}"}, [{"source_labels": ["a"], "regex": "a{,2}", "action": "keep"}],
                 {"a": "a{,2}"}, id="re2-literal-brace"),
    pytest.param({"a": "Ab9"}, [{"source_labels": ["a"], "regex": "[[:alpha:]]+[[:digit:]]",
                                 "action": "keep"}],
                 {"a": "Ab9"}, id="posix-class"),
    pytest.param({"a": "\u0663"}, [{"source_labels": ["a"], "regex": r"\d", "action": "drop"}],
                 {"a": "\u0663"}, id="digit-class-is-ascii"),
    pytest.param({"a": "a.b"}, [{"source_labels": ["a"], "regex": r"\Qa.b\E", "target_label": "b",
                                 "replacement": r"\x{41}"}],
                 {"a": "a.b", "b": r"\x{41}"}, id="quoted-literal"),
    pytest.param({"a": "straße"}, [{"source_labels": ["a"], "target_label": "b", "action": "uppercase"}],
                 {"a": "straße", "b": "STRAßE"}, id="uppercase-rune-by-rune"),
    pytest.param({"a": "x"}, [{"source_labels": ["a", "missing"], "target_label": "b", "action": "lowercase"},
                              {"source_labels": ["missing"], "target_label": "a", "action": "lowercase"}],
                 {"b": "x;"}, id="lowercase-empty-deletes"),
    pytest.param({"a": "1"}, [{"source_labels": ["nope"], "target_label": "other", "action": "keepequal"}],
                 {"a": "1"}, id="keepequal-both-missing"),
    pytest.param({"a": "x"}, [{"source_labels": ["a"], "target_label": "h", "action": "hashmod",
                               "modulus": 2**64 - 1}],
                 {"a": "x", "h": str(int.from_bytes(hashlib.md5(b"x").digest()[8:], "big") % (2**64 - 1))},
                 id="hashmod-uint64"),
    pytest.param({"a": "1", "a1": "2", "ab": "3"},
                 [{"regex": "a(.*)", "replacement": "$1", "action": "labelmap"}],
                 {"a": "1", "a1": "2", "ab": "3", "b": "3"}, id="labelmap-skips-invalid-names"),
    pytest.param({"a": "1", "b": "2"}, [{"regex": "a|b", "replacement": "c", "action": "labelmap"}],
                 {"a": "1", "b": "2", "c": "2"}, id="labelmap-last-sorted-wins"),
    pytest.param({"a": "x"}, [{"source_labels": ["a"], "action": "DROP"}],
                 None, id="action-case-insensitive"),
]


@pytest.mark.parametrize(("labels", "configs", "expected"), RELABEL_CASES + EXTRA_CASES)
def test_relabel(labels: dict[str, str], configs: list[dict], expected: dict[str, str] | None) -> None:
    before = dict(labels)
    assert apply(rules(*configs), labels) == expected
    assert labels == before  # never mutates its input


def test_apply_returns_new_dict() -> None:
    labels = {"a": "x"}
    result = apply((), labels)
    assert result == labels and result is not labels


# TestRelabelValidate, the cases that apply with legacy label names (the UTF-8-only "valid" variants of
# "${3}" for lowercase and "0${3}" / "-${3}" for replace are the opposite under legacy validation, and are
# taken from the Prometheus 2.x version of the table). Config{} maps to an explicit null action.
VALIDATE_CASES = [
    pytest.param({"action": None}, "action", "relabel action cannot be empty", id="empty-action"),
    pytest.param({"action": "replace"}, "target_label",
                 "relabel configuration for replace action requires 'target_label' value",
                 id="replace-no-target"),
    pytest.param({"action": "lowercase"}, "target_label",
                 "relabel configuration for lowercase action requires 'target_label' value",
                 id="lowercase-no-target"),
    pytest.param({"action": "lowercase", "replacement": "$1", "target_label": "${3}"}, "target_label",
                 "'${3}' is invalid 'target_label' for lowercase action", id="lowercase-templated-target"),
    pytest.param({"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
                  "replacement": "${1}", "target_label": "${3}"}, None, None, id="replace-templated-target"),
    pytest.param({"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
                  "replacement": "${1}", "target_label": "0${3}"}, "target_label",
                 "'0${3}' is invalid 'target_label' for replace action", id="replace-digit-first"),
    pytest.param({"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "action": "replace",
                  "replacement": "${1}", "target_label": "-${3}"}, "target_label",
                 "'-${3}' is invalid 'target_label' for replace action", id="replace-dash-first"),
    pytest.param({"regex": "__meta_kubernetes_pod_label_(strimzi_io_.+)", "action": "labelmap",
                  "replacement": "$1"}, None, None, id="labelmap-dollar"),
    pytest.param({"regex": "__meta_(.+)", "action": "labelmap", "replacement": "${1}"}, None, None,
                 id="labelmap-braced"),
]


@pytest.mark.parametrize(("config", "key", "message"), VALIDATE_CASES)
def test_validate(config: dict, key: str | None, message: str | None) -> None:
    if key is None:
        rules(config)
        return
    with pytest.raises(ConfigError) as err:
        rules(config)
    assert (err.value.path, err.value.message) == (f"relabel_configs[0].{key}", message)


# TestTargetLabelLegacyValidity (relabelTargetLegacy), checked through a replace rule's target_label.
@pytest.mark.parametrize(("target", "valid"), [
    ("-label", False), ("label", True), ("label${1}", True), ("${1}label", True), ("${1}", True),
    ("${", False), ("$", False), ("${}", False), ("foo${", False), ("$1", True), ("asd$2asd", True),
    ("-foo${1}bar-", False), ("bar.foo${1}bar", False), ("_${1}_", True), ("foo${bar}foo", True),
])
def test_target_label_legacy_validity(target: str, valid: bool) -> None:
    if valid:
        rules({"target_label": target})
    else:
        with pytest.raises(ConfigError, match="is invalid 'target_label' for replace action"):
            rules({"target_label": target})


P = "collectors.cadvisor.relabel_configs"
PARSE_ERRORS = [
    pytest.param({"a": 1}, P, "must be a list of relabel rules", id="not-a-list"),
    pytest.param(["keep"], f"{P}[0]", "must be a mapping", id="rule-not-a-mapping"),
    pytest.param([{"target_label": "a"}, {"action": "keep"}, {"action": "foo"}], f"{P}[2].action",
                 "unknown action 'foo'", id="unknown-action"),
    pytest.param([{"action": ""}], f"{P}[0].action", "relabel action cannot be empty", id="empty-action"),
    pytest.param([{"target": "x"}], f"{P}[0].target", "unknown key 'target', did you mean 'target_label'?",
                 id="unknown-key-hint"),
    pytest.param([{"sourcelabels": ["a"]}], f"{P}[0].sourcelabels",
                 "unknown key 'sourcelabels', did you mean 'source_labels'?", id="unknown-key-hint-2"),
    pytest.param([{"zzz": 1}], f"{P}[0].zzz", "unknown key 'zzz'", id="unknown-key"),
    pytest.param([{"action": "hashmod", "target_label": "h"}], f"{P}[0].modulus",
                 "relabel configuration for hashmod requires non-zero modulus", id="hashmod-no-modulus"),
    pytest.param([{"action": "hashmod", "modulus": 3}], f"{P}[0].target_label",
                 "relabel configuration for hashmod action requires 'target_label' value",
                 id="hashmod-no-target"),
    pytest.param([{"action": "hashmod", "modulus": 3, "target_label": "a-b"}], f"{P}[0].target_label",
                 "'a-b' is invalid 'target_label' for hashmod action", id="hashmod-bad-target"),
    pytest.param([{"action": "hashmod", "modulus": -1, "target_label": "h"}], f"{P}[0].modulus",
                 "must be a non-negative integer", id="negative-modulus"),
    pytest.param([{"action": "hashmod", "modulus": "3", "target_label": "h"}], f"{P}[0].modulus",
                 "must be a non-negative integer", id="string-modulus"),
    pytest.param([{"target_label": "foo-bar"}], f"{P}[0].target_label",
                 "'foo-bar' is invalid 'target_label' for replace action", id="replace-bad-target"),
    pytest.param([{"target_label": "utf-8.label"}], f"{P}[0].target_label",
                 "'utf-8.label' is invalid 'target_label' for replace action", id="utf8-target-label"),
    pytest.param([{"source_labels": ["ok", "utf-8.label"], "target_label": "d"}], f"{P}[0].source_labels[1]",
                 "'utf-8.label' is not a valid label name", id="utf8-source-label"),
    pytest.param([{"source_labels": "a", "target_label": "d"}], f"{P}[0].source_labels",
                 "must be a list of label names", id="source-labels-not-list"),
    pytest.param([{"separator": [";"], "target_label": "d"}], f"{P}[0].separator", "must be a string",
                 id="separator-not-string"),
    pytest.param([{"action": "keepequal", "target_label": "a-b"}], f"{P}[0].target_label",
                 "'a-b' is invalid 'target_label' for keepequal action", id="keepequal-bad-target"),
    pytest.param([{"action": "uppercase", "target_label": "u", "replacement": "x"}], f"{P}[0].replacement",
                 "'replacement' can not be set for uppercase action", id="uppercase-replacement"),
    pytest.param([{"action": "labelmap", "replacement": "foo-$1"}], f"{P}[0].replacement",
                 "'foo-$1' is invalid 'replacement' for labelmap action", id="labelmap-bad-replacement"),
    pytest.param([{"action": "keepequal", "target_label": "t", "regex": "(.*)"}], f"{P}[0].regex",
                 "keepequal action requires only 'source_labels' and 'target_label', and no other fields",
                 id="keepequal-regex"),
    pytest.param([{"action": "dropequal", "target_label": "t", "separator": ","}], f"{P}[0].separator",
                 "dropequal action requires only 'source_labels' and 'target_label', and no other fields",
                 id="dropequal-separator"),
    pytest.param([{"action": "labeldrop", "regex": "x", "source_labels": ["a"]}], f"{P}[0].source_labels",
                 "labeldrop action requires only 'regex', and no other fields", id="labeldrop-source-labels"),
    pytest.param([{"action": "labelkeep", "regex": "x", "target_label": "t"}], f"{P}[0].target_label",
                 "labelkeep action requires only 'regex', and no other fields", id="labelkeep-target"),
    pytest.param([{"action": "labelkeep", "regex": "x", "replacement": "y"}], f"{P}[0].replacement",
                 "labelkeep action requires only 'regex', and no other fields", id="labelkeep-replacement"),
    pytest.param([{"action": "drop", "regex": "("}], f"{P}[0].regex",
                 "invalid regex '(': missing )", id="regex-syntax"),
    pytest.param([{"action": "drop", "regex": "a)"}], f"{P}[0].regex", "invalid regex 'a)': unexpected )",
                 id="regex-unbalanced"),
    pytest.param([{"action": "drop", "regex": "foo(?=bar)"}], f"{P}[0].regex",
                 "invalid regex 'foo(?=bar)': invalid perl operator: (?=", id="lookahead"),
    pytest.param([{"action": "drop", "regex": "(?<!a)b"}], f"{P}[0].regex",
                 "invalid regex '(?<!a)b': invalid perl operator: (?<!", id="lookbehind"),
    pytest.param([{"action": "drop", "regex": r"(a)\1"}], f"{P}[0].regex",
                 r"invalid regex '(a)\1': invalid escape sequence: \1", id="backreference"),
    pytest.param([{"action": "drop", "regex": "(?P<n>a)(?P=n)"}], f"{P}[0].regex",
                 "invalid regex '(?P<n>a)(?P=n)': invalid perl operator: (?P", id="named-backreference"),
    pytest.param([{"action": "drop", "regex": "a++"}], f"{P}[0].regex",
                 "invalid regex 'a++': bad repetition operator: ++", id="possessive"),
    pytest.param([{"action": "drop", "regex": r"a\Z"}], f"{P}[0].regex",
                 r"invalid regex 'a\Z': invalid escape sequence: \Z", id="python-only-escape"),
    pytest.param([{"action": "drop", "regex": "(?x)a"}], f"{P}[0].regex",
                 "invalid regex '(?x)a': invalid perl operator: (?x", id="python-only-flag"),
    pytest.param([{"action": "drop", "regex": "[[:nope:]]"}], f"{P}[0].regex",
                 "invalid regex '[[:nope:]]': invalid character class range: [:nope:]", id="posix-unknown"),
    pytest.param([{"action": "drop", "regex": "x{1001}"}], f"{P}[0].regex",
                 "invalid regex 'x{1001}': invalid repetition size: {1001}", id="repeat-limit"),
    pytest.param([{"action": "drop", "regex": "a" * 4097}], f"{P}[0].regex",
                 f"invalid regex '{'a' * 4097}': longer than 4096 characters", id="too-long"),
]


@pytest.mark.parametrize(("raw", "path", "message"), PARSE_ERRORS)
def test_parse_errors(raw: object, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(raw, P)
    assert (err.value.path, err.value.message) == (path, message)


def test_parse_defaults_and_nulls() -> None:
    assert parse_rules(None, P) == ()
    (rule,) = rules({"target_label": "t"})
    assert (rule.action, rule.source_labels, rule.separator, rule.replacement, rule.modulus) == (
        "replace", (), ";", "$1", 0)
    assert rule.regex.fullmatch("anything\nat all")
    (null_regex,) = rules({"target_label": "t", "regex": None, "replacement": None, "separator": None})
    # YAML null is Go's zero value: an empty regex (matching only ""), empty replacement and separator.
    assert null_regex.regex.fullmatch("") and not null_regex.regex.fullmatch("x")
    assert (null_regex.replacement, null_regex.separator) == ("", "")


@pytest.mark.parametrize(("regex", "value", "matches"), [
    pytest.param(r"\pL+", "straße", True, id="unicode-class"),
    pytest.param("(?U)(a+)a*", "aaa", True, id="ungreedy-flag"),
    pytest.param("[[:^alpha:]]+", "123", True, id="negated-posix"),
    pytest.param("(?i)STRASSE|straße", "STRAßE", True, id="unicode-case-folding"),
    pytest.param(r"a\s", "a\v", False, id="perl-space-excludes-vt"),
])
def test_re2_syntax_go_accepts(regex: str, value: str, matches: bool) -> None:
    (rule,) = rules({"source_labels": ["a"], "regex": regex, "action": "keep"})
    assert (rule.regex.fullmatch(value) is not None) is matches


def test_pathological_regex_runs_in_linear_time() -> None:
    # (a+)+$ against "aaa…ab" takes exponential time in a backtracking engine: with a pod's own
    # annotation and its own /metrics, that froze the whole agent. RE2 answers at once.
    (rule,) = rules({"source_labels": ["a"], "regex": "(a+)+", "action": "drop"})
    assert apply([rule], {"a": "a" * 100_000 + "b"}) == {"a": "a" * 100_000 + "b"}


def test_regex_is_anchored_even_with_match() -> None:
    (rule,) = rules({"source_labels": ["a"], "regex": "fo", "action": "keep"})
    assert rule.regex.match("foo") is None and rule.regex.search("xfo") is None
    assert rule.regex.fullmatch("fo")


# BenchmarkRelabel's configurations (no expected output upstream; expectations derived by hand).
EXAMPLE_YAML = """
- source_labels: [job, __meta_dns_name]
  regex: "(.*)some-[regex]"
  target_label: job
  replacement: foo-${1}
  # action defaults to 'replace'
- source_labels: [abc]
  target_label: cde
- replacement: static
  target_label: abc
- regex:
  replacement: static
  target_label: abc
"""

KUBERNETES_YAML = r"""
- source_labels: [__meta_kubernetes_pod_container_port_name]
  regex: .*-metrics
  action: keep
- source_labels: [__meta_kubernetes_pod_label_name]
  action: drop
  regex: ""
- source_labels: [__meta_kubernetes_pod_phase]
  regex: Succeeded|Failed
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
  regex: "false"
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
  target_label: __scheme__
  regex: (https?)
  replacement: $1
  action: replace
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
  target_label: __metrics_path__
  regex: (.+)
  replacement: $1
  action: replace
- source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
  target_label: __address__
  regex: (.+?)(\:\d+)?;(\d+)
  replacement: $1:$3
  action: replace
- regex: __meta_kubernetes_pod_annotation_prometheus_io_param_(.+)
  replacement: __param_$1
  action: labelmap
- regex: __meta_kubernetes_pod_label_prometheus_io_label_(.+)
  action: labelmap
- regex: __meta_kubernetes_pod_annotation_prometheus_io_label_(.+)
  action: labelmap
- source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_label_name]
  separator: /
  target_label: job
  replacement: $1
  action: replace
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
  action: replace
- source_labels: [__meta_kubernetes_pod_name]
  target_label: pod
  action: replace
- source_labels: [__meta_kubernetes_pod_container_name]
  target_label: container
  action: replace
- source_labels: [__meta_kubernetes_pod_name, __meta_kubernetes_pod_container_name,
                  __meta_kubernetes_pod_container_port_name]
  separator: ':'
  target_label: instance
  action: replace
- target_label: cluster
  replacement: dev-us-central-0
- source_labels: [__meta_kubernetes_namespace]
  regex: hosted-grafana
  action: drop
- source_labels: [__address__]
  target_label: __tmp_hash
  modulus: 3
  action: hashmod
- source_labels: [__tmp_hash]
  regex: ^0$
  action: keep
- regex: __tmp_hash
  action: labeldrop
"""

KUBERNETES_LABELS = {
    "__address__": "10.132.183.40:80",
    "__meta_kubernetes_namespace": "loki-boltdb-shipper",
    "__meta_kubernetes_pod_annotation_promtail_loki_boltdb_shipper_hash": "50523b9759094a144adcec2eae0aa4ad",
    "__meta_kubernetes_pod_annotationpresent_promtail_loki_boltdb_shipper_hash": "true",
    "__meta_kubernetes_pod_container_init": "false",
    "__meta_kubernetes_pod_container_name": "promtail",
    "__meta_kubernetes_pod_container_port_name": "http-metrics",
    "__meta_kubernetes_pod_container_port_number": "80",
    "__meta_kubernetes_pod_container_port_protocol": "TCP",
    "__meta_kubernetes_pod_controller_kind": "DaemonSet",
    "__meta_kubernetes_pod_controller_name": "promtail-loki-boltdb-shipper",
    "__meta_kubernetes_pod_host_ip": "10.128.0.178",
    "__meta_kubernetes_pod_ip": "10.132.183.40",
    "__meta_kubernetes_pod_label_controller_revision_hash": "555b77cd7d",
    "__meta_kubernetes_pod_label_name": "promtail-loki-boltdb-shipper",
    "__meta_kubernetes_pod_label_pod_template_generation": "45",
    "__meta_kubernetes_pod_labelpresent_controller_revision_hash": "true",
    "__meta_kubernetes_pod_labelpresent_name": "true",
    "__meta_kubernetes_pod_labelpresent_pod_template_generation": "true",
    "__meta_kubernetes_pod_name": "promtail-loki-boltdb-shipper-jgtr7",
    "__meta_kubernetes_pod_node_name": "gke-dev-us-central-0-main-n2s8-2-14d53341-9hkr",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_ready": "true",
    "__meta_kubernetes_pod_uid": "4c586419-7f6c-448d-aeec-ca4fa5b05e60",
    "__metrics_path__": "/metrics",
    "__scheme__": "http",
    "__scrape_interval__": "15s",
    "__scrape_timeout__": "10s",
    "job": "kubernetes-pods",
}

STATIC_PAIR_YAML = """
- replacement: wwwwww
  target_label: wwwwww
- replacement: yyyyyyyyyyyy
  target_label: xxxxxxxxx
- replacement: xxxxxxxxx
  target_label: yyyyyyyyyyyy
- source_labels: ["something"]
  target_label: with_source_labels
  replacement: value
- replacement: dropped
  target_label: ${0}
- replacement: ${0}
  target_label: dropped
"""


def test_benchmark_example_config() -> None:
    labels = {"__meta_dns_name": "example-some-x.com", "abc": "def", "job": "foo"}
    # "(.*)some-[regex]" needs exactly one char after "some-", so job is untouched; "regex:" (null) is "".
    assert apply(parse_rules(yaml.safe_load(EXAMPLE_YAML), P), labels) == {
        "__meta_dns_name": "example-some-x.com", "abc": "static", "cde": "def", "job": "foo"}


def test_benchmark_kubernetes_config() -> None:
    parsed = parse_rules(yaml.safe_load(KUBERNETES_YAML), P)
    assert len(parsed) == 20
    # md5("10.132.183.40:80")[8:] % 3 == 1, so "keep ^0$" drops the target.
    assert apply(parsed, KUBERNETES_LABELS) is None
    assert apply(parsed[:18], KUBERNETES_LABELS) == {
        **KUBERNETES_LABELS,
        "job": "loki-boltdb-shipper/promtail-loki-boltdb-shipper",
        "namespace": "loki-boltdb-shipper",
        "pod": "promtail-loki-boltdb-shipper-jgtr7",
        "container": "promtail",
        "instance": "promtail-loki-boltdb-shipper-jgtr7:promtail:http-metrics",
        "cluster": "dev-us-central-0",
        "__tmp_hash": "1",
    }


def test_benchmark_static_label_pair_config() -> None:
    labels = {f"abcdefg0{i}": f"hijklmn{i}" for i in range(1, 9)} | {"job": "foo"}
    # target "${0}" expands to "" (invalid, skipped); replacement "${0}" is "" (deletes "dropped").
    assert apply(parse_rules(yaml.safe_load(STATIC_PAIR_YAML), P), labels) == {
        **labels, "wwwwww": "wwwwww", "xxxxxxxxx": "yyyyyyyyyyyy", "yyyyyyyyyyyy": "xxxxxxxxx",
        "with_source_labels": "value"}


@pytest.mark.parametrize(("configs", "expected"), [
    pytest.param([], False, id="no-rules"),
    pytest.param([{"source_labels": ["pod"], "target_label": "p"}], False, id="plain-replace"),
    pytest.param([{"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}], True,
                 id="reads-name"),
    pytest.param([{"target_label": "__name__", "replacement": "x"}], True, id="writes-name"),
    pytest.param([{"source_labels": ["a"], "regex": "(.*)", "target_label": "${1}"}], True,
                 id="templated-target"),
    pytest.param([{"source_labels": ["a"], "target_label": "__name__", "action": "lowercase"}], True,
                 id="lowercase-name"),
    pytest.param([{"source_labels": ["a"], "target_label": "__name__", "action": "keepequal"}], True,
                 id="keepequal-name"),
    pytest.param([{"regex": "__meta_(.+)", "action": "labelmap"}], False, id="labelmap-meta"),
    pytest.param([{"regex": "(.*)", "replacement": "x_$1", "action": "labelmap"}], True, id="labelmap-all"),
    pytest.param([{"regex": "a", "replacement": "__name__", "action": "labelmap"}], True,
                 id="labelmap-to-name"),
    pytest.param([{"regex": "pod_.*", "action": "labeldrop"}], False, id="labeldrop-other"),
    pytest.param([{"regex": "__.*", "action": "labeldrop"}], True, id="labeldrop-name"),
    pytest.param([{"regex": "__name__|pod", "action": "labelkeep"}], False, id="labelkeep-keeps-name"),
    pytest.param([{"regex": "pod", "action": "labelkeep"}], True, id="labelkeep-drops-name"),
])
def test_uses_name(configs: list[dict], expected: bool) -> None:
    assert uses_name(rules(*configs)) is expected
