"""Grafana JSON builders (plain dicts, the grafana-foundation-sdk model's shape) shared by the
dashboards of build.py. Every panel must have a description (the builders refuse an empty one),
every query goes through the `datasource` variable, and links carry the variables and the
time range (`${__url_time_range}`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from config import CONFIG, Config

DS = {"type": "prometheus", "uid": "${datasource}"}
Panel = dict[str, Any]


def _need(desc: str, title: str) -> str:
    if not desc.strip():
        raise ValueError(f"panel {title!r}: every panel needs a description")
    return desc


def sel(*matchers: str) -> str:
    """A `{...}` label selector."""
    return "{" + ", ".join(m for m in matchers if m) + "}"


def m(metric: str, *matchers: str) -> str:
    """`metric{matchers}`."""
    return metric + sel(*matchers)


def rate(metric: str, *matchers: str, fn: str = "rate") -> str:
    """`rate(metric{matchers}[$__rate_interval])` (or irate/increase)."""
    return f"{fn}({m(metric, *matchers)}[$__rate_interval])"


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> dict[str, Any]:
    """One Prometheus query."""
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False, format="table")
    else:
        t.update(instant=False, range=True)
    return t


# --------------------------------------------------------------------------- links
def dashboard_url(uid: str, params: Sequence[tuple[str, str]]) -> str:
    """A link to another kubebridge dashboard that keeps the time range, data source and cluster."""
    query = [("var-datasource", "${datasource}"), ("var-cluster", "${cluster}"), *params]
    return f"/d/{uid}?" + "&".join(f"{k}={v}" for k, v in query) + "&${__url_time_range}"


def link(title: str, uid: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"title": title, "url": dashboard_url(uid, params), "targetBlank": False}


def series_link(title: str, uid: str, labels: Sequence[str], cfg: Config = CONFIG) -> dict[str, Any]:
    """A data link from a series to a dashboard, one variable per label of the series."""
    return link(title, uid, [(f"var-{lab}", f"${{__field.labels.{lab}}}") for lab in labels])


def row_link(title: str, uid: str, labels: Sequence[str]) -> dict[str, Any]:
    """A data link from a table row to a dashboard (the row's label columns)."""
    return link(title, uid, [(f"var-{lab}", f"${{__data.fields.{lab}}}") for lab in labels])


# --------------------------------------------------------------------------- panels
def _targets(queries: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    return [target(q, legend, ref=chr(ord("A") + i)) for i, (q, legend) in enumerate(queries)]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    desc: str,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    links: Sequence[dict[str, Any]] = (),
) -> Panel:
    """A time series panel; `queries` is [(expr, legend)]."""
    return {
        "type": "timeseries",
        "title": title,
        "description": _need(desc, title),
        "datasource": DS,
        "targets": _targets(queries),
        "_size": (w, h),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "links": list(links),
                "custom": {
                    "fillOpacity": 10 if not stack else 30,
                    "lineWidth": 1,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
                "sortBy": "Max",
                "sortDesc": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    desc: str,
    unit: str = "short",
    w: int = 4,
    h: int = 4,
    thresholds: list[tuple[float | None, str]] | None = None,
    legend: str = "",
    links: Sequence[dict[str, Any]] = (),
) -> Panel:
    """A single-value panel."""
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": _need(desc, title),
        "datasource": DS,
        "targets": [target(expr, legend)],
        "_size": (w, h),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "links": list(links),
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    }


def table(
    title: str,
    expr: str | list[tuple[str, str]],
    desc: str,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    hide: tuple[str, ...] = ("Time",),
    links: dict[str, dict[str, Any]] | None = None,
    rename: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
) -> Panel:
    """An instant-query table; several queries are merged on their labels (one row per series,
    one value column per query, named by `rename` {"Value #A": "CPU"}). `links`: column -> link;
    `units`: (renamed) column -> unit, where it differs from `unit`."""
    queries = [(expr, "")] if isinstance(expr, str) else expr
    targets = [target(q, instant=True, ref=chr(ord("A") + i)) for i, (q, _) in enumerate(queries)]
    transformations: list[dict[str, Any]] = []
    if len(targets) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {"excludeByName": {k: True for k in hide}, "renameByName": rename or {}},
        }
    )
    overrides = [
        {"matcher": {"id": "byName", "options": col}, "properties": [{"id": "links", "value": [lk]}]}
        for col, lk in (links or {}).items()
    ] + [
        {"matcher": {"id": "byName", "options": col}, "properties": [{"id": "unit", "value": u}]}
        for col, u in (units or {}).items()
    ]
    return {
        "type": "table",
        "title": title,
        "description": _need(desc, title),
        "datasource": DS,
        "targets": targets,
        "_size": (w, h),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": overrides},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": transformations,
    }


def row(title: str) -> Panel:
    """A (non-collapsed) row header."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


# --------------------------------------------------------------------------- variables
def datasource_var() -> dict[str, Any]:
    """The one data source variable every panel refers to (`DS_PROMETHEUS` when imported)."""
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(
    name: str,
    label: str,
    metric_selector: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    hide: int = 0,
) -> dict[str, Any]:
    """A `label_values(<series>, <label>)` variable over kubebridge series (sorted, first = default)."""
    q = f"label_values({metric_selector}, {name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": q,
        "definition": q,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "allValue": ".*" if include_all else None,
        "options": [],
        "hide": hide,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
        "regex": "",
        "skipUrlSync": False,
    }


def cluster_var(metric_selector: str, cfg: Config = CONFIG) -> dict[str, Any]:
    """The cluster variable: hidden unless `multi_cluster` (then one cluster at a time)."""
    return query_var(
        cfg.labels.cluster,
        "Cluster",
        metric_selector,
        multi=False,
        include_all=True,
        hide=0 if cfg.multi_cluster else 2,
    )


def annotation(
    name: str, expr: str, title: str, text: str, tags: str, color: str, enable: bool = True
) -> dict[str, Any]:
    """A Prometheus annotation query (each returned series/sample becomes an event marker)."""
    return {
        "name": name,
        "datasource": DS,
        "enable": enable,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": "1m",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": tags,
        "useValueForTime": False,
    }


# --------------------------------------------------------------------------- dashboard
def layout(panels: list[Panel]) -> list[Panel]:
    """Assign ids and a left-to-right, top-to-bottom gridPos (24 columns)."""
    x = y = line_h = 0
    out = []
    for i, p in enumerate(panels, 1):
        w, h = p.pop("_size")
        if p["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, line_h = x + w, max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
        out.append(p)
    return out


def requires(panels: list[Panel], cfg: Config) -> list[dict[str, Any]]:
    """`__requires`: Grafana, the Prometheus data source and each panel plugin used."""
    kinds = sorted({p["type"] for p in panels if p["type"] != "row"})
    names = {"stat": "Stat", "table": "Table", "timeseries": "Time series"}
    return [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": cfg.grafana_version},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        *({"type": "panel", "id": k, "name": names.get(k, k), "version": ""} for k in kinds),
    ]


INPUTS = [
    {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": "The Prometheus that scrapes kubebridge",
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
]


def dashboard(
    uid: str,
    title: str,
    desc: str,
    variables: list[dict[str, Any]],
    panels: list[Panel],
    annotations: list[dict[str, Any]],
    cfg: Config = CONFIG,
) -> dict[str, Any]:
    """A whole dashboard with the shared defaults; `uid` without the prefix."""
    laid = layout(panels)
    ds = datasource_var()
    ds["current"] = {"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"}
    return {
        "__inputs": INPUTS,
        "__requires": requires(laid, cfg),
        "uid": cfg.uid_prefix + uid,
        "title": title,
        "description": desc,
        "tags": list(cfg.tags),
        "editable": cfg.editable,
        "graphTooltip": 1,
        "refresh": cfg.refresh,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "",
        "time": {"from": cfg.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "kubebridge",
                "type": "dashboards",
                "tags": ["kubebridge"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": annotations},
        "templating": {"list": [ds, *variables]},
        "panels": laid,
    }
