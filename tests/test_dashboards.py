"""Dashboards: generated and in sync, sound (datasource, rate interval, no joins), every query
parses, and every metric a query names is one kubebridge exposes.

"Exposes" = a family in a golden file under tests/golden/ (whatever exists when the test runs),
a family declared in a `families.Metric` table of the framework or a collector, or an entry of
PENDING_FAMILIES below.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = ROOT / "dashboards"
GOLDEN = ROOT / "tests" / "golden"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))

# Families the dashboards and alerts use that no golden file or metric table has yet. Shrink it
# as captures and goldens land (test_pending_families_still_pending warns when an entry has
# become known).
PENDING_FAMILIES = frozenset({
    # etcd's peer round trips exist only between members (the captures are single-member);
    # tests/test_alerts.py reads them from a real 3-member cluster through the etcd collector.
    "etcd_network_peer_round_trip_time_seconds_bucket",
    # Counted only once a source refused a series (the demo stays under its caps);
    # tests/test_memory.py drives it past a cap.
    "kubebridge_series_refused_total",
})


@functools.cache
def demo_kubelet_names() -> set[str]:
    """Families of the demo's kubelet /metrics and /metrics/probes: no kubelet /metrics capture
    newer than v1.10 exists, so the demo derives a 1.35 one from the served pods
    (exporter/replay/kubeletmetrics.py). tests/test_dashboards_demo.py checks these panels against
    the running demo."""
    from exporter.replay import paths
    from exporter.replay.kubeletmetrics import render_metrics, render_probes
    pods = json.loads(paths.data_file(paths.PODS.format(version="1.35")).read_bytes())
    text = render_metrics(pods, 0.0, node_name="n").decode() + render_probes(pods, 0.0).decode()
    return _family_names(text)


# A metric reference: a name followed by a selector or a range (convention: every metric in a
# query carries a {...} selector, so this finds them all; test_every_metric_has_a_selector).
METRIC_REF = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
RANGE_FN = re.compile(r"\b(rate|irate|increase)\s*\(")
JOINS = re.compile(r"\bgroup_(left|right)\b|\bon\s*\(|\bignoring\s*\(")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "counter": ("_total",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                "and", "or", "unless"}


def _family_names(text: str) -> set[str]:
    names: set[str] = set()
    openmetrics = "\n# EOF" in text  # only there does a counter's TYPE line omit `_total`
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                names.add(parts[2])
                if parts[3] != "counter" or openmetrics:
                    names.update(parts[2] + s for s in SUFFIXES.get(parts[3], ())
                                 if not parts[2].endswith(s))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@functools.cache
def golden_names() -> set[str]:
    """Every family name in the golden files."""
    names: set[str] = set()
    for path in sorted(GOLDEN.glob("*")) if GOLDEN.is_dir() else []:
        if path.is_file():
            names |= _family_names(path.read_text(errors="replace"))
    return names


@functools.cache
def declared_names() -> set[str]:
    """Families declared with `families.Metric` in the framework and the collectors."""
    from exporter.families import Metric
    names: set[str] = set()
    for pkg in ("exporter", "collectors"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(mod.__path__):
            if info.name == "__main__":  # importing it would run the CLI
                continue
            try:
                sub = importlib.import_module(f"{pkg}.{info.name}")
            except ImportError:  # an optional dependency missing: its tables are not needed here
                continue
            for value in vars(sub).values():
                items = value if isinstance(value, (tuple, list)) else (value,)
                for item in items:
                    if isinstance(item, Metric):
                        names.add(item.name)
                        names.update(item.name + s for s in SUFFIXES.get(item.type, ())
                                      if not item.name.endswith(s))
    return names


def known_names() -> set[str]:
    """What a dashboard or an alert may name."""
    return golden_names() | declared_names() | demo_kubelet_names() | set(PENDING_FAMILIES)


def load_build() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS_DIR / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in dashboards/
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod


def panels(dash: dict) -> Iterator[dict]:
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows nest their panels


def queries(dash: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every target, annotation and variable of a dashboard."""
    for p in panels(dash):
        for t in p.get("targets", []):
            yield f"panel {p.get('title')!r}", t["expr"]
    for a in dash.get("annotations", {}).get("list", []):
        yield f"annotation {a.get('name')!r}", a["expr"]
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", v["query"])
            assert m, f"variable {v['name']}: only label_values(series, label) is used"
            yield f"variable {v['name']!r}", m.group(1)


def substitute(expr: str) -> str:
    """Grafana variables -> values Prometheus can parse."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?", ".*", expr)


def _query_id(x: object) -> str:
    return x if isinstance(x, str) and ": " in x else ""


def all_queries() -> list[tuple[str, str]]:
    return [(f"{d.name}: {where}", q) for d in DASHBOARDS for where, q in queries(json.loads(d.read_text()))]


def test_dashboards_exist() -> None:
    assert {d.stem for d in DASHBOARDS} == {f"kubebridge-{n}" for n in (
        "cluster", "namespace", "workload", "pod", "nodes", "node", "storage", "network", "kubelet",
        "control-plane", "self")}


def test_generated_files_are_in_sync() -> None:
    """dashboards/*.json are exactly what dashboards/build.py writes (run it after editing)."""
    rendered = load_build().render()
    assert sorted(rendered) == [d.name for d in DASHBOARDS]
    for name, text in rendered.items():
        assert (DASHBOARDS_DIR / name).read_text() == text, f"{name} is stale: run python dashboards/build.py"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_sound(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash["uid"] == path.stem and len(dash["uid"]) <= 40
    variables = dash["templating"]["list"]
    ds = [v for v in variables if v.get("type") == "datasource"]
    assert [v["name"] for v in ds] == ["datasource"] and ds[0]["query"] == "prometheus"
    names = {v["name"] for v in variables}
    assert "cluster" in names
    for v in variables:
        if v.get("type") == "query":
            assert v["datasource"]["uid"] == "${datasource}", v["name"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dash):
        where = f"{path.name} / {p.get('title')!r}"
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", where
        assert p.get("targets"), where
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", where
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, where
    cells: dict[tuple[int, int], str] = {}
    for p in panels(dash):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{path.name}: {p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for a in dash["annotations"]["list"]:
        assert a["datasource"]["uid"] == "${datasource}", a["name"]
    assert "job=" not in path.read_text(), "no hard-coded job: select on our own labels"


@pytest.mark.parametrize("where,expr", all_queries(), ids=_query_id)
def test_query_rules(where: str, expr: str) -> None:
    """Rate windows, no joins, a collector on every upstream family, names that exist."""
    if RANGE_FN.search(expr):
        ranges = re.findall(r"\[([^\]]*)\]", expr)
        assert ranges and all(r == "$__rate_interval" for r in ranges), f"{where}: use [$__rate_interval]"
    assert not JOINS.search(expr), f"{where}: kubebridge series are pre-joined; no on()/ignoring()/group_*"
    known = known_names()
    for name in METRIC_REF.findall(expr):
        if name in PROMQL_WORDS:
            continue
        assert name in known, \
            f"{where}: {name} is not exposed (not in tests/golden/, a metric table or PENDING_FAMILIES)"
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        if not m.group(1).startswith("kubebridge_"):
            assert re.search(r'\bcollector=~?"', m.group(2)), \
                f"{where}: {m.group(1)} needs a collector matcher"


def test_every_metric_has_a_selector() -> None:
    """The convention METRIC_REF relies on: a bare metric name would escape the name check."""
    func_or_keyword = PROMQL_WORDS | {"sum", "max", "min", "count", "avg", "rate", "irate", "increase",
                                      "histogram_quantile", "vector", "label_values", "le"}
    for where, expr in all_queries():
        stripped = re.sub(r'"[^"]*"', '""', expr)            # drop label values
        stripped = re.sub(r"\{[^}]*\}", "{}", stripped)       # and matchers
        stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)     # and ranges
        stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)
        for word in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*[{\[(])", stripped):
            assert word in func_or_keyword, \
                f"{where}: bare name {word!r}: give it a {{collector=...}} selector"


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool check rules parses each query (Debian's promtool 2.42 has no `promql format`)."""
    promtool = shutil.which("promtool") or pytest.skip("promtool not installed (apt-get install prometheus)")
    rules = [{"record": f"panel:{i}", "expr": substitute(q)} for i, (_, q) in enumerate(all_queries())]
    f = tmp_path / "panels.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    """The parse check above really rejects bad PromQL (so its green means something)."""
    promtool = shutil.which("promtool") or pytest.skip("promtool not installed (apt-get install prometheus)")
    f = tmp_path / "bad.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "bad", "expr": substitute('sum by (pod (rate(x{collector="a"}[$__rate_interval]))')}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(f)], capture_output=True).returncode != 0


def test_substitute() -> None:
    assert substitute('rate(a{n=~"$namespace", c=~"${cluster}"}[$__rate_interval])') == \
        'rate(a{n=~".*", c=~".*"}[5m])'


def test_pending_families_still_pending() -> None:
    """Warn (never fail) when a PENDING_FAMILIES entry is now exposed for real: shrink the list."""
    done = sorted(PENDING_FAMILIES & (golden_names() | declared_names()))
    if done:
        warnings.warn(f"PENDING_FAMILIES entries now exposed, remove them: {', '.join(done)}", stacklevel=1)


def test_provisioning_file() -> None:
    doc = yaml.safe_load((DASHBOARDS_DIR / "provisioning" / "dashboards.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --------------------------------------------------------------------------- against real data
# Each selector of each query must match at least one series of the golden files, when the
# goldens have its family at all: this checks label names and values (collector, cgroup_kind,
# workload_kind, reason, resource, ...) against what the collectors really emit for real captures.
# Selectors no capture can satisfy, with the reason:
NO_FIXTURE_MATCH = {
    # kubebridge's own pods: no capture contains them.
    'label_app_kubernetes_io_name="kubebridge"',
    # The events capture (tests/golden/events.txt) has Normal events only.
    'type="Warning"',
    # The events golden has no kube-system events.
    'namespace="kube-system", type="Normal"',
    # The only end-to-end golden is the node agent's: no cluster-agent self-metrics.
    'kubebridge_up{collector="apiserver"', 'kubebridge_source_status{collector="apiserver"',
}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@functools.cache
def golden_series() -> dict[str, list[dict[str, str]]]:
    from exporter.expfmt import parse_labels
    series: dict[str, list[dict[str, str]]] = {}
    for path in sorted(GOLDEN.glob("*")) if GOLDEN.is_dir() else []:
        for line in path.read_bytes().splitlines():
            if not line or line.startswith(b"#"):
                continue
            name, brace, rest = line.partition(b"{")
            labels = dict(parse_labels(rest.rpartition(b"}")[0])) if brace else {}
            series.setdefault(name.split(b" ")[0].decode(), []).append(labels)
    return series


def matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        if op == "=" and have != value or op == "!=" and have == value:
            return False
        if op in ("=~", "!~") and bool(re.fullmatch(value, have)) != (op == "=~"):
            return False
    return True


@pytest.mark.parametrize("where,expr", all_queries(), ids=_query_id)
def test_selectors_match_real_series(where: str, expr: str) -> None:
    series = golden_series()
    for m in SELECTOR.finditer(expr):
        name, body = m.groups()
        if name not in series or any(s in m.group(0) for s in NO_FIXTURE_MATCH):
            continue
        if 'collector="kubelet"' in body and name in demo_kubelet_names():  # the demo's: see above
            continue
        matchers = [(k, op, substitute(v)) for k, op, v in MATCHER.findall(body)]
        assert any(matches(labels, matchers) for labels in series[name]), \
            f"{where}: {name}{{{body}}} matches no series in tests/golden/"


def test_matcher_semantics() -> None:
    assert matches({"a": "x"}, [("a", "=~", "x|y"), ("b", "=", ""), ("c", "!~", ".+")])
    assert not matches({"cgroup_kind": "pod"}, [("cgroup_kind", "=", "pause")])


# Keys Grafana's foundation SDK models do not carry (it drops them on load): import metadata,
# the Prometheus annotation query's own fields, a variable's display `definition` and
# `allValue` where it is null.
SDK_DROPS = {"__inputs", "__requires", "definition", "allValue", "textFormat", "step", "tagKeys",
             "useValueForTime", "titleFormat"}


def _lost(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths of `a` that `b` (the SDK's round trip) no longer has."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [f"{path}.{k}" for k in a if k not in b and k not in SDK_DROPS] + [
            x for k in a if k in b for x in _lost(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        return [x for i, (p, q) in enumerate(zip(a, b, strict=False)) for x in _lost(p, q, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_loads_into_grafana_models(path: Path) -> None:
    """Grafana's foundation SDK (its typed dashboard model) loads each dashboard and writes it back
    with every panel, target, link, variable and annotation key: no key Grafana would not know."""
    sdk = pytest.importorskip("grafana_foundation_sdk.models.dashboard")
    encoder = pytest.importorskip("grafana_foundation_sdk.cog.encoder")
    dash = json.loads(path.read_text())
    back = json.loads(json.dumps(sdk.Dashboard.from_json(dash), cls=encoder.JSONEncoder))
    assert len(back["panels"]) == len(dash["panels"])
    assert not _lost(dash, back), _lost(dash, back)


def _links(dash: dict) -> Iterator[tuple[str, str]]:
    """(where, url) of every panel, field and override data link."""
    for p in panels(dash):
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        for lk in defaults.get("links", []) + p.get("links", []):
            yield p["title"], lk["url"]
        for o in p.get("fieldConfig", {}).get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "links":
                    yield p["title"], *(lk["url"] for lk in prop["value"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_grafana_conventions(path: Path) -> None:
    """Import-ready, described, read-only, and the cluster variable hidden by default."""
    dash = json.loads(path.read_text())
    assert [i["pluginId"] for i in dash["__inputs"]] == ["prometheus"]
    required = {(r["type"], r["id"]) for r in dash["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert {("panel", p["type"]) for p in panels(dash) if p["type"] != "row"} <= required
    assert dash["editable"] is False
    for p in panels(dash):
        if p["type"] != "row":
            assert p.get("description", "").strip(), f"{path.name}: {p['title']!r} has no description"
    (cluster,) = [v for v in dash["templating"]["list"] if v["name"] == "cluster"]
    assert cluster["hide"] == 2
    assert [a["name"] for a in dash["annotations"]["list"]] == ["Warning events", "Normal events"]


def test_links_lead_to_dashboards_and_variables_that_exist() -> None:
    """Every data link names a generated dashboard, sets only variables that dashboard has, and
    carries the data source, the cluster and the time range."""
    dashes = {d.stem: json.loads(d.read_text()) for d in DASHBOARDS}
    variables = {uid: {v["name"] for v in d["templating"]["list"]} for uid, d in dashes.items()}
    count = 0
    for uid, dash in dashes.items():
        for title, url in _links(dash):
            count += 1
            m = re.fullmatch(r"/d/([\w-]+)\?(.*)", url)
            assert m, f"{uid} / {title}: {url}"
            target, query = m.groups()
            assert target in dashes, f"{uid} / {title}: no dashboard {target}"
            params = query.split("&")
            assert "${__url_time_range}" in params, f"{uid} / {title}: the time range is dropped"
            names = [p.split("=", 1)[0].removeprefix("var-") for p in params if p.startswith("var-")]
            assert {"datasource", "cluster"} <= set(names)
            missing = set(names) - variables[target]
            assert not missing, f"{uid} / {title}: {target} has no variable {missing}"
    assert count >= 30
