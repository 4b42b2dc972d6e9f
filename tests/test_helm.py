"""The Helm chart (charts/kubebridge), rendered offline by Helm's own engine.

`helm-python-sdk` (PyPI; `import helm_python`) binds Helm v4's Go SDK through ctypes, so no
helm binary is needed: `lint` is `helm lint`, `Chart.render` is `helm template`. Every rendered
object is validated against the Kubernetes 1.30 schemas (`kubernetes-validate`, strict), and
the same RBAC, security and flag checks as the plain manifests apply (tests/test_manifests.py).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_manifests import (
    MANIFESTS, by_kind, check_collector_placement, check_config, check_flags_with_config, check_rbac,
    check_workload, container, deployed_docs, docs, one, parse_args, validate)

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kubebridge"
RELEASE, NAMESPACE = "kubebridge", "monitoring"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "node-agent-only": {"clusterAgent": {"enabled": False}},
    "cluster-agent-only": {"nodeAgent": {"enabled": False}, "dashboards": {"enabled": False}},
    "ha-cluster-agent": {"clusterAgent": {"replicas": 2}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "legacy-nodes-proxy": {"nodeAgent": {"legacyNodesProxy": True}},
    "labels-and-relabel": {
        "cluster": "prod-eu-1",
        "labelAllowlist": ["app", "team"],
        "labelDenylist": ["pod-template-hash"],
        "relabelConfigs": [{"source_labels": ["__name__"], "regex": "container_tasks_state",
                            "action": "drop"}],
        "collectorConfig": {"cadvisor": {"drop_labels": ["id", "name", "image"], "timeout": "5s"}},
        "kubelet": {"insecureSkipVerify": True},
    },
    "etcd-over-http": {"clusterAgent": {"collectors": {"etcd": True},
                                        "etcd": {"members": [{"url": "http://10.0.0.10:2381"},
                                                             {"url": "http://10.0.0.11:2381"}]}}},
    "docker-node": {"nodeAgent": {"collectors": {"docker": False, "resource": True}}},
}


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def objects(rendered: dict[str, str]) -> list[dict]:
    return [d for path, text in rendered.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


def config_text(objs: list[dict]) -> str:
    return one(objs, "ConfigMap", "-config")["data"]["config.yaml"]


def test_lint() -> None:
    for name, values in VARIANTS.items():
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_render_is_valid_and_least_privilege(variant: str, tmp_path: Path) -> None:
    values = VARIANTS[variant]
    objs = objects(render(values))
    validate(objs)  # custom resources (ServiceMonitor) only warn
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"
    workloads = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o
                 for o in objs if o["kind"] in ("DaemonSet", "Deployment")}
    node_on = values.get("nodeAgent", {}).get("enabled", True)
    cluster_on = values.get("clusterAgent", {}).get("enabled", True)
    assert set(workloads) == {c for c, on in (("node-agent", node_on), ("cluster-agent", cluster_on)) if on}
    for component, w in workloads.items():
        check_workload(w, component)
    if node_on and cluster_on:
        check_rbac(objs, legacy=values.get("nodeAgent", {}).get("legacyNodesProxy", False))
        check_collector_placement(workloads["node-agent"], workloads["cluster-agent"])
    cfg = check_config(config_text(objs), tmp_path)
    for w in workloads.values():
        check_flags_with_config(w, config_text(objs), tmp_path)
    for b in by_kind(objs, "ClusterRoleBinding") + by_kind(objs, "RoleBinding"):
        assert b["subjects"][0]["namespace"] == NAMESPACE
    if variant == "labels-and-relabel":
        assert cfg.cluster == "prod-eu-1" and cfg.label_allowlist == ("app", "team")
        assert len(cfg.relabel_configs) == 1 and cfg.kubelet.insecure_skip_verify
        assert cfg.collectors["cadvisor"].options["drop_labels"] == ("id", "name", "image")
    if variant == "etcd-over-http":
        assert [m.url for m in cfg.collectors["etcd"].options["members"]] == \
            ["http://10.0.0.10:2381", "http://10.0.0.11:2381"]
        _, flags = parse_args(workloads["cluster-agent"])
        assert flags["etcd"] is True


def test_default_render_matches_the_plain_manifests() -> None:
    """The chart and manifests/ deploy the same thing: objects, RBAC rules, flags, config."""
    objs, plain = objects(render({})), deployed_docs()

    def kinds(docs: list[dict]) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in docs if o["kind"] != "Namespace")

    assert kinds(objs) == kinds(plain)
    for kind in ("ClusterRole", "Role"):
        for o in by_kind(objs, kind):
            assert o["rules"] == one(plain, kind, o["metadata"]["name"].removeprefix("kubebridge-"))["rules"]
    for kind in ("DaemonSet", "Deployment"):
        (chart_w,), (plain_w,) = by_kind(objs, kind), by_kind(plain, kind)
        assert parse_args(chart_w)[1] == parse_args(plain_w)[1]
        assert container(chart_w)["securityContext"] == container(plain_w)["securityContext"]
        assert container(chart_w)["resources"] == container(plain_w)["resources"]
    (plain_cm,) = docs(MANIFESTS / "configmap.yaml")
    assert yaml.safe_load(config_text(objs)) == yaml.safe_load(plain_cm["data"]["config.yaml"])


def test_replicas_without_leader_election_fail() -> None:
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render({"clusterAgent": {"replicas": 3, "leaderElection": False}})


@pytest.mark.parametrize("values", [
    {"logLevel": "loud"},
    {"nodeAgent": {"collectors": {"cadvisor": "yes"}}},
    {"clusterAgent": {"etcd": {"members": [{"url": "10.0.0.1:2379"}]}}},
    {"unknownKey": 1},
], ids=["log-level", "collector-not-bool", "etcd-url", "unknown-key"])
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(values)


def test_etcd_client_certificates_are_mounted_where_the_config_points() -> None:
    objs = objects(render({"clusterAgent": {"collectors": {"etcd": True}, "etcd": {
        "members": [{"url": "https://10.0.0.10:2379", "server_name": "cp-0"}],
            "certsSecret": "etcd-client"}}}))
    members = yaml.safe_load(config_text(objs))["collectors"]["etcd"]["members"]
    deployment = one(objs, "Deployment", "cluster-agent")
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "etcd-certs"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "etcd-certs"]
    assert volume["secret"]["secretName"] == "etcd-client" and mount["readOnly"]
    for key in ("ca_file", "cert_file", "key_file"):
        assert Path(members[0][key]).parent == Path(mount["mountPath"])
    names = {Path(members[0][k]).name for k in ("ca_file", "cert_file", "key_file")}
    assert names == {"ca.crt", "tls.crt", "tls.key"}


def test_service_monitor() -> None:
    objs = objects(render(VARIANTS["service-monitor"]))
    (sm,) = by_kind(objs, "ServiceMonitor")
    (ep,) = sm["spec"]["endpoints"]
    assert ep["honorLabels"] is True and ep["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "prom"
    for svc in by_kind(objs, "Service"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    for w in by_kind(objs, "DaemonSet") + by_kind(objs, "Deployment"):
        assert "prometheus.io/scrape" not in w["spec"]["template"]["metadata"]["annotations"], "scraped twice"
    assert not by_kind(objects(render({})), "ServiceMonitor")


def test_service_monitor_warns_without_its_crd() -> None:
    with helm.Chart.load(CHART) as chart:
        notes = chart.render(VARIANTS["service-monitor"], name=RELEASE,
                             namespace=NAMESPACE)["kubebridge/templates/NOTES.txt"]
    assert "WARNING" in notes and "ServiceMonitor" in notes


def test_dashboards() -> None:
    """The chart's dashboards/*.json are symlinks to dashboards/*.json (the JSON is kept once):
    Helm's loader follows them, so each ConfigMap holds the dashboard byte for byte."""
    assert all(p.is_symlink() for p in (CHART / "dashboards").glob("*.json"))
    objs = objects(render({}))
    cms = [o for o in by_kind(objs, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]
    shipped = sorted((ROOT / "dashboards").glob("*.json"))
    assert len(cms) == len(shipped)
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert text == (ROOT / "dashboards" / key).read_text(), \
            f"{key}: run python dashboards/build_configmap.py"
    off = objects(render({"dashboards": {"enabled": False}}))
    assert not [o for o in by_kind(off, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]
    moved = objects(render({"dashboards": {"namespace": "grafana", "label": "dash", "labelValue": "yes"}}))
    cm = [o for o in by_kind(moved, "ConfigMap") if "dash" in o["metadata"]["labels"]][0]
    assert cm["metadata"]["namespace"] == "grafana" and cm["metadata"]["labels"]["dash"] == "yes"


def test_image_defaults_to_app_version() -> None:
    from exporter import __version__
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == __version__
    objs = objects(render({"image": {"repository": "registry.example/kubebridge", "tag": "dev"}}))
    for w in by_kind(objs, "DaemonSet") + by_kind(objs, "Deployment"):
        assert container(w)["image"] == "registry.example/kubebridge:dev"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in by_kind(objects(render({})), "DaemonSet"):
            assert container(w)["image"] == f"kubebridge:{__version__}"
