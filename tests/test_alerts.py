"""Alert rules: promtool accepts them, each alert fires in a unit test and stays silent in another,
each has a runbook section, the burn-rate recording rules agree with each other, the etcd rules
select series a real etcd cluster exposes through kubebridge, and the managed-control-plane case
(sources not_permitted) fires none of the "down" alerts."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_dashboards import (JOINS, MATCHER, METRIC_REF, PROMQL_WORDS, SELECTOR, golden_series,
                                   known_names, matches)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "kubebridge.rules.yaml"
UNIT_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
KPS_PAGE = ROOT / "docs" / "kube-prometheus-stack.md"
# Chart.yaml `home`: the runbooks are docs/runbooks.md under it.
RUNBOOK_BASE = "https://kubebridge.invalid/docs/runbooks.md#"
RUNBOOK_PARTS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
# Alerts whose series name a workload: their description must say which.
WORKLOAD_ALERTS = {"KubePodCrashLooping", "KubePodNotReady", "KubeContainerWaiting", "CPUThrottlingHigh",
                   "KubeContainerOOMKilled", "KubeJobPodsFailed", "KubeContainerEphemeralStorageNearLimit"}
# What a managed control plane (sources not_permitted) must never page for.
DOWN_ALERTS = {"KubeAPIDown", "KubebridgeSourceDown", "etcdNoLeader", "etcdMembersDown",
               "etcdInsufficientMembers", "KubebridgeClusterAgentDown"}
# Prometheus' own series about a target (not kubebridge's): no `collector` label.
PROMETHEUS_SERIES = {"up"}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def recorded() -> set[str]:
    """Names of the recording rules' series (alerts may read them)."""
    return {r["record"] for r in rules() if "record" in r}


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


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_rule_shape(rule: dict) -> None:
    name, expr = rule["alert"], rule["expr"]
    assert rule.get("for"), f"{name}: needs a `for`"
    assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
    assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert not JOINS.search(expr), f"{name}: kubebridge series are pre-joined; no on()/ignoring()/group_*"
    assert not re.search(r"kubebridge_up\b[^\n]*==\s*0", expr), \
        f"{name}: use kubebridge_source_status{{status=\"down\"}}"
    known = known_names() | recorded() | PROMETHEUS_SERIES
    for metric in METRIC_REF.findall(expr):
        if metric not in PROMQL_WORDS:
            assert metric in known, \
                f"{name}: {metric} is not exposed (golden, metric table, PENDING_FAMILIES or a record)"
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        if not m.group(1).startswith("kubebridge_") and m.group(1) not in recorded() | PROMETHEUS_SERIES:
            assert re.search(r'\bcollector=~?"', m.group(2)), \
                f"{name}: {m.group(1)} needs a collector matcher"
    if name in WORKLOAD_ALERTS:
        assert "$labels.workload" in rule["annotations"]["description"], name


def test_every_alert_is_proven_to_fire() -> None:
    fired = {at["alertname"] for _, t in unit_tests() for at in t["alert_rule_test"] if at["exp_alerts"]}
    names = {r["alert"] for r in alerts()}
    assert names - fired == set(), "alerts without a unit test that fires them"


def test_every_alert_is_proven_to_stay_silent() -> None:
    """Each alert also has a case where its data is present (or, for the absent alerts, where
    it has just gone) and it must not fire."""
    silent = {at["alertname"] for _, t in unit_tests() for at in t["alert_rule_test"]
              if at["exp_alerts"] == []}
    names = {r["alert"] for r in alerts()}
    assert names - silent == set(), "alerts without a unit test where they stay silent"


def test_every_severity_fires_somewhere() -> None:
    """An alert defined at two severities has a unit test firing each."""
    fired = {(at["alertname"], a["exp_labels"]["severity"]) for _, t in unit_tests()
             for at in t["alert_rule_test"] for a in at["exp_alerts"]}
    defined = {(r["alert"], r["labels"]["severity"]) for r in alerts()}
    assert defined - fired == set()


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """anchor -> the section's text, for every `## ` heading of docs/runbooks.md."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_alert_has_a_runbook() -> None:
    sections = runbook_sections()
    for rule in alerts():
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith(RUNBOOK_BASE), f"{rule['alert']}: runbook_url {url!r}"
        anchor = url[len(RUNBOOK_BASE):]
        assert anchor == github_anchor(rule["alert"]), f"{rule['alert']}: anchor {anchor!r}"
        assert anchor in sections, f"{rule['alert']}: docs/runbooks.md has no section #{anchor}"
        for part in RUNBOOK_PARTS:
            assert re.search(rf"^\*\*{part}\.?\*\*", sections[anchor], flags=re.M), \
                f"{rule['alert']}: its runbook section lacks **{part}**"


def test_no_runbook_without_an_alert() -> None:
    """Every alert section of docs/runbooks.md is an alert that exists (a rename leaves none behind)."""
    anchors = {github_anchor(r["alert"]) for r in alerts()}
    stale = {a for a, text in runbook_sections().items()
             if re.search(r"^\*\*Meaning\.?\*\*", text, flags=re.M)} - anchors
    assert stale == set()


def test_runbook_links_resolve() -> None:
    """The runbooks' links to each other (`](#anchor)`) name sections that exist."""
    text = RUNBOOKS.read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and links - set(runbook_sections()) == set()


def test_github_anchor() -> None:
    assert github_anchor("KubeAPIErrorBudgetBurn") == "kubeapierrorbudgetburn"
    assert github_anchor("Before you page: what every alert assumes") == \
        "before-you-page-what-every-alert-assumes"


def test_kube_prometheus_stack_page() -> None:
    """docs/kube-prometheus-stack.md places every kubebridge alert (overlap or kubebridge-only),
    and the stack alerts its values disable are all replaced by a kubebridge alert of that name."""
    text = KPS_PAGE.read_text()
    names = {r["alert"] for r in alerts()}
    assert {n for n in names if f"`{n}`" not in text} == set()
    (snippet,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    values = yaml.safe_load(snippet)
    assert values["kubelet"]["enabled"] is False and values["kubeApiServer"]["enabled"] is False
    assert set(values["defaultRules"]["disabled"]) <= names
    assert all(v is False for v in values["defaultRules"]["rules"].values())


# Selectors whose values no capture has, with the reason (each is proven by other means).
NO_CAPTURE = {
    # The one CrashLoopBackOff capture is kube_system's; pods' is the same kubelet field.
    'kubebridge_pods_container_waiting{collector="pods", reason="CrashLoopBackOff"}',
    # No captured pod was OOMKilled (the reason is the kubelet's lastState.terminated.reason).
    'kubebridge_pods_container_last_terminated_timestamp_seconds{collector="pods", reason="OOMKilled"}',
    # No captured pod sets an ephemeral-storage limit: test_ephemeral_storage_resource_label.
    'kubebridge_pods_container_resource_limits{collector="pods", resource="ephemeral_storage"}',
    # The only end-to-end golden is a healthy node agent's.
    'kubebridge_source_status{collector="apiserver", status="down"}',
    'kubebridge_up{collector=~"apiserver|events|kube_system|etcd|etcd_v2"}',
}


def _unescape(value: str) -> str:
    """A PromQL string's text (as written in the rule) -> its value."""
    return re.sub(r"\\(.)", r"\1", value)


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rule_selectors_match_real_series(rule: dict) -> None:
    """Each selector of a family the golden files have matches one of their series: label names
    and values (scope, verb, code, le, resource, reason, ...) as the collectors really emit them."""
    series = golden_series()
    for m in SELECTOR.finditer(rule["expr"]):
        name, body = m.groups()
        if name not in series or m.group(0) in NO_CAPTURE:
            continue
        matchers = [(k, op, _unescape(v)) for k, op, v in MATCHER.findall(body)]
        assert any(matches(labels, matchers) for labels in series[name]), \
            f"{rule.get('alert') or rule['record']}: {m.group(0)} matches no series in tests/golden/"


def test_ephemeral_storage_resource_label() -> None:
    from collectors._pods import resource_label
    assert resource_label("ephemeral-storage") == ("ephemeral_storage", "byte")


def test_unescape() -> None:
    assert _unescape(r"1(\\.0)?") == r"1(\.0)?"
    assert re.fullmatch(_unescape(r"1(\\.0)?"), "1.0") and not re.fullmatch(_unescape(r"1(\\.0)?"), "10")


BURN_WINDOW = re.compile(r"kubebridge:apiserver_request:burnrate(\w+)")


def test_burn_rate_rules_are_one_template() -> None:
    """kubebridge:apiserver_request:burnrate<w>: one per window the alerts read, for reads and
    writes, each the 5m rule with only the window changed."""
    records = [r for r in rules() if "record" in r]
    used = {w for r in alerts() for w in BURN_WINDOW.findall(r["expr"])}
    assert used == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    for verb in ("read", "write"):
        mine = {BURN_WINDOW.fullmatch(r["record"]).group(1): r for r in records  # type: ignore[union-attr]
                if r["labels"] == {"verb": verb}}
        assert set(mine) == used, verb
        template = mine["5m"]["expr"]
        for w, r in mine.items():
            assert r["expr"] == template.replace("[5m]", f"[{w}]"), f"{verb} {w}"
    windows = [(r["labels"]["long"], r["labels"]["short"]) for r in alerts()
               if r["alert"] == "KubeAPIErrorBudgetBurn"]
    assert windows == [("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")]


def test_down_alerts_use_source_status_down() -> None:
    """Never kubebridge_up == 0, which is also 0 for not_permitted sources."""
    by_name = {r["alert"]: r["expr"] for r in alerts()}
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


# --------------------------------------------------------------------------- against real etcd
ETCD_SELECTOR = re.compile(r"\b(etcd_[a-zA-Z0-9_]*)\{([^}]*)\}")
BY = re.compile(r"\bby\s*\(([^)]*)\)")


async def test_etcd_rules_select_real_series(tmp_path: Path) -> None:
    """Every etcd_* selector of the rules matches series that a real 3-member etcd cluster exposes
    through kubebridge's etcd collector (peer round trips exist only between members), and every
    label an etcd rule groups by is on them."""
    from tests.etcd_cluster import Cluster, Series, have_etcd, source, until
    import aiohttp
    if not have_etcd():
        pytest.skip("etcd (apt: etcd-server) or openssl not installed")
    etcd_rules = [r for r in alerts() if ETCD_SELECTOR.search(r["expr"])]
    assert {r["alert"] for r in etcd_rules} >= {"etcdHighCommitDurations", "etcdMemberCommunicationSlow",
                                                 "etcdDatabaseHighFragmentationRatio"}
    cluster = Cluster(tmp_path, v2=False)
    try:
        cluster.start()
        async with aiohttp.ClientSession() as session:
            src = source("etcd", session, [cluster.config(m) for m in cluster.members])
            for i in range(20):  # commits and peer round trips to observe
                cluster.put_v3(f"alerts/{i}", "v")

            def complete(_: object, s: Series) -> bool:
                return all(any(matches(lb, [(k, op, v) for k, op, v in MATCHER.findall(body)])
                               for lb, _ in s.get(name))
                           for r in etcd_rules for name, body in ETCD_SELECTOR.findall(r["expr"]))
            out, series = await until(src, complete, deadline=60.0)
    finally:
        cluster.stop()
    assert out.status == "ok", out
    for rule in etcd_rules:
        for name, body in ETCD_SELECTOR.findall(rule["expr"]):
            matched = [lb for lb, _ in series.get(name)
                       if matches(lb, [(k, op, v) for k, op, v in MATCHER.findall(body)])]
            assert matched, f"{rule['alert']}: {name}{{{body}}} matches no series of a real etcd cluster"
            for group in BY.findall(rule["expr"]):
                for label in (x.strip() for x in group.split(",")):
                    if label and label != "cluster":  # cluster comes from kubebridge's config
                        assert all(label in lb for lb in matched), f"{rule['alert']}: {name} has no {label}"


# --------------------------------------------------------------------------- in a real Prometheus
def prometheus_rules(url: str) -> list[dict]:
    """Every rule Prometheus evaluates, with its health and last error (GET /api/v1/rules)."""
    import json
    import urllib.request
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as r:
        return [rule for g in json.load(r)["data"]["groups"] for rule in g["rules"]]


def test_rules_in_prometheus_over_the_demo(tmp_path: Path) -> None:
    """A real Prometheus loads the rules and evaluates them every second over `kubebridge demo`
    (node and cluster sources, replayed from real captures): every rule evaluates without error,
    the burn-rate recording rules produce a ratio for reads and writes, no agent alert is
    pending while the demo runs, and when the demo stops (its series go stale at once) the
    absent alerts of both agents become pending."""
    import time
    from tests.realprom import demo, free_port, poll, prometheus, query
    port = free_port()
    with prometheus(tmp_path, [f"127.0.0.1:{port}"], rule_files=(RULES,)) as prom:
        with demo(port):
            poll(prom, 'count(kubebridge_up{collector=~"apiserver|cadvisor"} == 1) == 2', deadline=60)
            # Both halves, once the apiserver source has been scraped twice (rate needs two).
            poll(prom, 'count(count by (verb) (kubebridge:apiserver_request:burnrate5m)) == 2', deadline=90)
            burn = query(prom, 'count by (verb) (kubebridge:apiserver_request:burnrate5m)')
            assert {r["metric"]["verb"] for r in burn} == {"read", "write"}
            poll(prom, 'count(count by (verb) (kubebridge:apiserver_request:burnrate3d)) == 2', deadline=60)
            end = time.monotonic() + 30
            while any(r["health"] != "ok" for r in prometheus_rules(prom)) and time.monotonic() < end:
                time.sleep(0.5)  # every rule evaluated at least once since the first scrape
            bad = [(r["name"], r["health"], r.get("lastError")) for r in prometheus_rules(prom)
                   if r["health"] != "ok"]
            assert bad == []
            assert len(prometheus_rules(prom)) == len(rules())
            # (Not the source-down alerts: at a 1 s scrape the 3 MB apiserver capture can miss
            # its 0.5 s budget under load, and then it is down, which is what they are for.)
            # A whole scrape that misses the 1 s timeout under load makes every series absent for
            # one evaluation (pending, rightly); with the agent scraped again it must clear.
            agents = 'ALERTS{alertname=~"KubebridgeNodeAgentDown|KubebridgeClusterAgentDown|' \
                     'KubebridgeNodeAgentsMissing"}'
            end = time.monotonic() + 30
            while query(prom, agents) and time.monotonic() < end:
                time.sleep(0.5)
            assert query(prom, agents) == []
            assert query(prom, 'kubebridge_pod_index_pods') and \
                query(prom, 'max(apiserver_storage_objects{collector="apiserver",resource="nodes"})')
        gone = poll(prom, 'count(ALERTS{alertname=~"KubebridgeNodeAgentDown|KubebridgeClusterAgentDown",'
                          'alertstate="pending"}) == 2', deadline=60)
        assert gone
        bad = [(r["name"], r.get("lastError")) for r in prometheus_rules(prom) if r["health"] == "err"]
        assert bad == []
