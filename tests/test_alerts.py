"""Alert rules: promtool accepts them, each alert fires in a unit test, and the managed-control-
plane case (sources not_permitted) fires none of the "down" alerts."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_dashboards import JOINS, METRIC_REF, PROMQL_WORDS, known_names

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "kubebridge.rules.yaml"
UNIT_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yaml"))
# Alerts whose series name a workload: their description must say which.
WORKLOAD_ALERTS = {"KubePodCrashLooping", "KubePodNotReady", "KubeContainerWaiting", "CPUThrottlingHigh"}
# What a managed control plane (sources not_permitted) must never page for.
DOWN_ALERTS = {"KubeAPIDown", "KubebridgeSourceDown", "etcdNoLeader", "etcdMembersDown",
               "etcdInsufficientMembers"}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def unit_tests() -> list[tuple[Path, dict]]:
    return [(p, t) for p in UNIT_TESTS for t in yaml.safe_load(p.read_text())["tests"]]


def promtool() -> str:
    return shutil.which("promtool") or pytest.skip("promtool not installed (apt-get install prometheus)")


def test_promtool_check_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.stem)
def test_promtool_unit_tests(path: Path) -> None:
    out = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True,
                         cwd=path.parent)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("rule", [r for r in rules() if "alert" in r], ids=lambda r: r["alert"])
def test_rule_shape(rule: dict) -> None:
    name, expr = rule["alert"], rule["expr"]
    assert rule.get("for"), f"{name}: needs a `for`"
    assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
    assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert not JOINS.search(expr), f"{name}: kubebridge series are pre-joined; no on()/ignoring()/group_*"
    assert not re.search(r"kubebridge_up\b[^\n]*==\s*0", expr), \
        f"{name}: use kubebridge_source_status{{status=\"down\"}}"
    known = known_names()
    for metric in METRIC_REF.findall(expr):
        if metric not in PROMQL_WORDS:
            assert metric in known, \
                f"{name}: {metric} is not exposed (golden, metric table or PENDING_FAMILIES)"
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        if not m.group(1).startswith("kubebridge_"):
            assert re.search(r'\bcollector=~?"', m.group(2)), \
                f"{name}: {m.group(1)} needs a collector matcher"
    if name in WORKLOAD_ALERTS:
        assert "$labels.workload" in rule["annotations"]["description"], name


def test_every_alert_is_proven_to_fire() -> None:
    fired = {at["alertname"] for _, t in unit_tests() for at in t["alert_rule_test"] if at["exp_alerts"]}
    names = {r["alert"] for r in rules() if "alert" in r}
    assert names - fired == set(), "alerts without a unit test that fires them"


def test_down_alerts_use_source_status_down() -> None:
    """Never kubebridge_up == 0, which is also 0 for not_permitted sources."""
    by_name = {r["alert"]: r["expr"] for r in rules() if "alert" in r}
    for name in ("KubeAPIDown", "KubebridgeSourceDown"):
        assert 'kubebridge_source_status{' in by_name[name] and 'status="down"' in by_name[name], name
    # The kubelet answering at all is data of the healthz source (absent when not permitted).
    assert by_name["KubeletDown"].strip() == 'kubebridge_healthz_up{collector="healthz"} == 0'


def test_not_permitted_does_not_fire() -> None:
    """alerts/tests/managed.yaml feeds not_permitted sources (kubebridge_up 0) for 2 hours and
    expects none of the down alerts; promtool runs it in test_promtool_unit_tests."""
    (path, test), = [(p, t) for p, t in unit_tests() if p.stem == "managed"]
    assert any('status="not_permitted"' in s["series"] and s["values"].startswith("1")
               for s in test["input_series"])
    assert any(s["series"].startswith("kubebridge_up{") and s["values"].startswith("0")
               for s in test["input_series"])
    quiet = {at["alertname"] for at in test["alert_rule_test"] if at["exp_alerts"] == []}
    assert DOWN_ALERTS <= quiet
