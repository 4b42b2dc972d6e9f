"""Every dashboard against a real Prometheus scraping `kubebridge demo` (its three node agents).

For each dashboard, twice: with every variable on "All" (a variable without "All" takes its
first value), and with the first concrete value of each variable, resolved in order through the
dashboard's own `label_values()` queries against Prometheus' API, as Grafana would. Then every
panel target and annotation query runs through Prometheus' HTTP API and must return data that is
not only NaN (a quantile or ratio over counters that do not move), without error. Queries are
evaluated at one moment when every target and every source was up (`settle`).

A query that lists problems (`> 0`, `== 0`, `or vector(0)`) is judged by its selectors: each
`metric{...}` in it must select series with every variable on `.*`. Its result may rightly be
empty (nothing waits, nothing fails); its selectors must still name series the demo has. Such a
panel for one concrete workload may have no series at all (a workload without probes): the
broad selection is what proves the selector right.

Also: every `kubebridge_*` family the demo exposes is used by a panel or an alert, or listed in
docs/metrics.md as intentionally not shown.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.realprom import free_port, prometheus, wait_http

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RATE_INTERVAL = "20s"  # $__rate_interval: at least 4 scrapes (of 3 s), as Grafana computes it
PROBLEM = re.compile(r"(>|==)\s*0\b|\bor vector\(0\)")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})")
NODES = 3


@dataclass
class Demo:
    """The running demo: Prometheus' URL and what the demo printed."""

    prom: str
    targets: list[str]
    log: list[str] = field(default_factory=list)


def _read_lines(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.append(raw.decode(errors="replace").rstrip("\n"))


def api(prom: str, path: str, params: list[tuple[str, str]]) -> Any:
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:  # a bad query: 400 with the error in the body
        body = json.load(e)
    return body


def instant(prom: str, expr: str, at: float | None = None) -> tuple[list[dict[str, Any]], str]:
    """(result, error) of an instant query, now or at `at` (Unix seconds)."""
    body = api(prom, "/api/v1/query", [("query", expr), *([("time", f"{at:.3f}")] if at else [])])
    if body.get("status") != "success":
        return [], f"{body.get('errorType')}: {body.get('error')}"
    return body["data"]["result"], ""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("dash-demo")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            "--duration",
            "600",
            "--nodes",
            str(NODES),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", deadline=60)
        end = time.monotonic() + 60
        agents: list[str] = []
        while time.monotonic() < end and len(agents) < NODES - 1:
            agents = [
                m.group(1)
                for line in list(lines)
                if (m := re.search(r"node agent \S+: metrics at http://(\S+)/metrics", line))
            ]
            time.sleep(0.2)
        assert len(agents) == NODES - 1, "\n".join(lines)
        with prometheus(tmp, [f"127.0.0.1:{port}", *agents], interval="3s") as prom:
            d = Demo(prom, [f"127.0.0.1:{port}", *agents], lines)
            _wait_for_history(d)
            yield d
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_history(d: Demo) -> None:
    """Until every target is up and rate windows hold enough samples (events included)."""
    end = time.monotonic() + 90
    ready = ""
    while time.monotonic() < end:
        up, _ = instant(d.prom, "count(up == 1)")
        nodes, _ = instant(d.prom, 'count(count by (node) (kubelet_running_pods{collector="kubelet"}))')
        ev, _ = instant(d.prom, f"sum(increase(kubebridge_kube_events_total[{RATE_INTERVAL}]))")
        hist, _ = instant(d.prom, 'count_over_time(kubebridge_up{collector="cadvisor"}[30s])')
        ok = (
            up
            and float(up[0]["value"][1]) == len(d.targets)
            and nodes
            and float(nodes[0]["value"][1]) == NODES
            and ev
            and float(ev[0]["value"][1]) > 0
            and hist
            and float(hist[0]["value"][1]) >= 8
        )
        if ok:
            return
        ready = f"up={up} nodes={nodes} events={ev} history={hist}"
        time.sleep(1)
    raise AssertionError(f"the demo never had enough history: {ready}\n" + "\n".join(d.log))


# --------------------------------------------------------------------------- variables
def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation: the interval variables, then `$name` / `${name}`."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "5s")
    expr = expr.replace("$__range", "1h")

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unresolved variable ${name} in {expr}")
        return values[name]

    return re.sub(r"\$\{([a-zA-Z_]\w*)\}|\$([a-zA-Z_]\w*)", one, expr)


def label_values(prom: str, query: str, values: dict[str, str]) -> list[str]:
    """`label_values(selector, label)` through Prometheus' labels API, sorted (sort: 1)."""
    m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]\w*)\)", query)
    assert m, query
    selector, label = substitute(m.group(1), values), m.group(2)
    now = time.time()
    body = api(
        prom,
        f"/api/v1/label/{label}/values",
        [("match[]", selector), ("start", f"{now - 3600:.0f}"), ("end", f"{now:.0f}")],
    )
    assert body["status"] == "success", body
    return sorted(body["data"])


def resolve(prom: str, dash: dict, mode: str) -> dict[str, str]:
    """Each variable's value, in order: "all": All (.*) where the variable offers it, else its
    first value; "first": the first concrete value; "any": .* for every variable (the broadest
    selection, for families that exist only while something is wrong)."""
    values: dict[str, str] = {}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        options = label_values(prom, v["query"], values)
        assert mode == "any" or options, f"{dash['uid']}: variable {v['name']} has no values ({v['query']})"
        if mode == "any":
            values[v["name"]] = ".*"
        elif mode == "all" and v.get("includeAll"):
            values[v["name"]] = v.get("allValue") or "|".join(options)
        else:
            values[v["name"]] = options[0]
    return values


# --------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Query:
    where: str
    expr: str


def queries(dash: dict) -> list[Query]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(Query(f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in dash["annotations"]["list"]:
        out.append(Query(f"annotation {a['name']!r}", a["expr"]))
    return out


def settle(d: Demo) -> float:
    """A moment when every target's last scrape succeeded and every source was up: queries are
    evaluated there, so a scrape that a loaded machine let time out cannot blank a panel."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        up, _ = instant(d.prom, "count(up == 1)")
        sources, _ = instant(d.prom, "min(kubebridge_up)")
        if (
            up
            and sources
            and float(up[0]["value"][1]) == len(d.targets)
            and float(sources[0]["value"][1]) == 1
        ):
            return float(sources[0]["value"][0])
        time.sleep(0.5)
    raise AssertionError("no moment with every source up")


def judge(prom: str, q: Query, values: dict[str, str], broad: dict[str, str], at: float) -> str:
    """'' if the query passes at `at`, else why not."""
    expr = substitute(q.expr, values)
    result, error = instant(prom, expr, at)
    if error:
        return f"{q.where}: {error}: {expr}"
    if not PROBLEM.search(q.expr):
        if not result:
            return f"{q.where}: no data: {expr}"
        values_ = [s["value"][1] for s in result]
        return "" if any(v != "NaN" for v in values_) else f"{q.where}: only NaN: {expr}"
    for m in SELECTOR.finditer(q.expr):
        sel = substitute(m.group(0), broad)
        found, error = instant(prom, f"count({sel})", at)
        if error or not found:
            return f"{q.where}: selector {sel} selects nothing {error}"
    return ""


@dataclass
class Tally:
    queries: int = 0
    failures: list[str] = field(default_factory=list)


@pytest.mark.parametrize("mode", ["all", "first"])
def test_every_panel_has_data(demo: Demo, mode: str) -> None:
    tally = Tally()
    at = settle(demo)
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        values = resolve(demo.prom, dash, mode)
        broad = resolve(demo.prom, dash, "any")
        for q in queries(dash):
            tally.queries += 1
            why = judge(demo.prom, q, values, broad, at)
            if why:
                tally.failures.append(f"{path.stem} {values}: {why}")
    print(f"{mode}: {tally.queries - len(tally.failures)} of {tally.queries} queries pass")
    assert not tally.failures, f"{len(tally.failures)} of {tally.queries}:\n" + "\n".join(tally.failures)


def test_variables_list_three_nodes(demo: Demo) -> None:
    dash = json.loads((ROOT / "dashboards" / "kubebridge-node.json").read_text())
    (node,) = [v for v in dash["templating"]["list"] if v["name"] == "node"]
    assert len(label_values(demo.prom, node["query"], {"cluster": ".*"})) == NODES


def test_no_join_misses(demo: Demo) -> None:
    """The probes payload names pods the demo has: KubebridgeJoinMisses stays quiet."""
    result, _ = instant(demo.prom, "sum(kubebridge_join_misses) > 0")
    assert not result, result


# --------------------------------------------------------------------------- coverage
def shown_names() -> str:
    """Every query text of the dashboards and the alert rules."""
    texts = [path.read_text() for path in DASHBOARDS]
    for rules in (ROOT / "alerts").glob("*.yaml"):
        doc = yaml.safe_load(rules.read_text())
        texts += [r.get("expr", "") for g in doc.get("groups", []) for r in g.get("rules", [])]
    return "\n".join(texts)


def not_shown() -> dict[str, str]:
    """docs/metrics.md's "Not shown" table: family -> reason."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text.split("## Not shown on a dashboard", 1)
    assert len(section) == 2, "docs/metrics.md needs a '## Not shown on a dashboard' section"
    return dict(re.findall(r"^\| `(kubebridge_\w+)` \| (.+?) \|$", section[1].split("\n## ")[0], re.M))


def test_every_family_is_shown_or_listed(demo: Demo) -> None:
    body = api(demo.prom, "/api/v1/label/__name__/values", [])
    exposed = {n for n in body["data"] if n.startswith("kubebridge_")}
    text, listed = shown_names(), not_shown()
    used = {n for n in exposed if re.search(rf"\b{n}(_bucket|_sum|_count)?\b", text)}
    missing = sorted(exposed - used - set(listed))
    assert not missing, f"neither on a dashboard, in an alert, nor in docs/metrics.md 'Not shown': {missing}"
    assert all(reason.strip() for reason in listed.values())
    stale = sorted(n for n in listed if n in used)
    assert not stale, f"listed as not shown but used: {stale}"
