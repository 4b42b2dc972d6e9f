"""The Helm chart (charts/kubebridge), rendered offline by Helm's own engine.

`helm-python-sdk` (PyPI; `import helm_python`) binds Helm v4's Go SDK through ctypes, so no
helm binary is needed: `lint` is `helm lint`, rendering is `helm template`. Its Python
`Chart.render()` takes no Kubernetes version, but the native render it calls accepts Helm's
`kube_version` option (what `helm template --kube-version` sets: `.Capabilities.KubeVersion`),
so `render()` below passes it through `_native` directly, and every variant is rendered as a
1.25, 1.30, 1.33 and 1.35 cluster would see it. Every rendered object is validated against that
version's schemas (`kubernetes-validate`, strict: unknown fields fail), and the same RBAC,
security and flag checks as the plain manifests apply (tests/test_manifests.py).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import config as config_mod
from exporter.cli import overrides, parser
from exporter.registry import registrations
from tests.test_manifests import (
    MANIFESTS, by_kind, check_collector_placement, check_config, check_flags_with_config, check_rbac,
    check_workload, container, deployed_docs, docs, one, parse_args)

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")
kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
from helm_python import _native  # noqa: E402  (after the importorskip)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kubebridge"
RELEASE, NAMESPACE = "kubebridge", "monitoring"
KUBE_VERSIONS = ("1.25.0", "1.30.0", "1.33.0", "1.35.0")
FINE_GRAINED = {"nodes/metrics", "nodes/stats", "nodes/pods", "nodes/healthz"}
NODES_PROXY = {"nodes/metrics", "nodes/stats", "nodes/proxy"}
RBAC_PROXY_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]
DIGEST = "sha256:" + "0123456789abcdef" * 4
WEB_FLAG = "--web.config.file"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "node-agent-only": {"clusterAgent": {"enabled": False}},
    "cluster-agent-only": {"nodeAgent": {"enabled": False}, "dashboards": {"enabled": False}},
    "ha-cluster-agent": {"clusterAgent": {"replicas": 2}, "podDisruptionBudget": {"minAvailable": 1}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "force-nodes-proxy": {"nodeAgent": {"kubeletAuthz": "nodesProxy"}},
    "force-fine-grained": {"nodeAgent": {"kubeletAuthz": "fineGrained"}},
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
    "docker-node": {"nodeAgent": {"collectors": {"docker": True, "resource": True},
                                  "docker": {"socketGroup": 998}}},
    "kube-rbac-proxy": {"kubeRBACProxy": {"enabled": True}, "serviceMonitor": {"enabled": True},
                        "networkPolicy": {"enabled": True}},
    "web-config-tls": {"webConfig": {"secretName": "kubebridge-web"},
                       "serviceMonitor": {"enabled": True, "tlsConfig": {"ca": {"secret": {
                           "name": "kubebridge-web", "key": "ca.crt"}}, "serverName": "kubebridge"}}},
    "host-network": {"hostNetwork": True},
    "bring-your-own-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "kb"}},
    "alerts": {"prometheusRule": {"enabled": True, "additionalLabels": {"release": "prom"}}},
    "env-list-and-names": {
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}],
        "fullnameOverride": "kb", "clusterAgent": {"serviceAccountName": "kb-events"}},
}

# --------------------------------------------------------------------------- rendering


def render(values: dict[str, Any], kube_version: str = "1.30.0", *,
           api_versions: Iterable[str] = ()) -> dict[str, str]:
    """`helm template` of the chart as a `kube_version` cluster (serving `api_versions` besides
    the built-in ones), after the schema check `helm install` does."""
    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{kube_version}"}
    if api_versions:
        opts["api_versions"] = list(api_versions)
    with helm.Chart.load(CHART) as chart, warnings.catch_warnings():
        chart.validate_schema(values)
        out = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(out)


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def objects(rendered: dict[str, str]) -> list[dict]:
    return [d for path, text in rendered.items() if path.endswith(".yaml")
            for d in yaml.load_all(text, Loader=LOADER) if d]


_valid: set[tuple[str, str]] = set()


def validate(objs: Iterable[dict], kube_version: str) -> None:
    """Every object against that Kubernetes version's schemas, strict. Custom resources
    (ServiceMonitor, PrometheusRule) have none there: checked by the tests below instead.
    An object already found valid for that version (the same dashboards in every variant) is
    not validated again."""
    for obj in objs:
        key = (kube_version, json.dumps(obj, sort_keys=True))
        if key in _valid:
            continue
        try:
            kv.validate(obj, kube_version, strict=True)
        except kv.SchemaNotFoundError:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["kind"]
        _valid.add(key)


def config_text(objs: list[dict]) -> str:
    return one(objs, "ConfigMap", "-config")["data"]["config.yaml"]


def workloads(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o
            for o in objs if o["kind"] in ("DaemonSet", "Deployment")}


def main_container(w: dict) -> dict:
    (c,) = [c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "kubebridge"]
    return c


def agent_args(w: dict) -> dict[str, bool]:
    """{collector: enabled} of a workload, its args through the real CLI parser. A web config
    flag the parser does not know yet (it comes with --web.config.file support) is checked
    for shape only."""
    args = main_container(w)["args"]
    known = [a for a in args if not a.startswith(WEB_FLAG + "=")]
    web = [a for a in args if a.startswith(WEB_FLAG + "=")]
    try:
        parser().parse_args(args)
    except SystemExit:
        if not web:
            pytest.fail(f"{w['metadata']['name']}: kubebridge rejects its args {args}")
        try:
            parser().parse_args(known)
        except SystemExit:
            pytest.fail(f"{w['metadata']['name']}: kubebridge rejects its args {known}")
    return {m.group(2): not m.group(1) for a in args
            if (m := re.fullmatch(r"--(no-)?collector\.([a-z0-9_]+)", a))}


def get(values: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# --------------------------------------------------------------------------- checks


def check_node_rbac(objs: list[dict], values: dict[str, Any], kube_version: str) -> None:
    """The node agent's kubelet permissions follow the cluster's version unless forced."""
    mode = get(values, "nodeAgent.kubeletAuthz", "auto")
    if mode == "auto":
        mode = "fineGrained" if tuple(map(int, kube_version.split("."))) >= (1, 33) else "nodesProxy"
    role = one(objs, "ClusterRole", "node-agent")
    kubelet_rules = [r for r in role["rules"] if r["apiGroups"] == [""] and r["resources"] != ["nodes"]]
    assert [r["verbs"] for r in kubelet_rules] == [["get"]]
    assert {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]} in role["rules"]  # its own Node
    assert set(kubelet_rules[0]["resources"]) == (FINE_GRAINED if mode == "fineGrained" else NODES_PROXY)
    extra = [r for r in role["rules"] if r["apiGroups"] != [""]]
    assert extra == (RBAC_PROXY_RULES if get(values, "kubeRBACProxy.enabled") else [])


def check_pod(w: dict, component: str, values: dict[str, Any]) -> None:
    """What every agent pod keeps whatever the values: restricted security unless the values
    ask otherwise, one metrics port reachable through the Service, probes that do not need a token."""
    where = f"{w['kind']} {w['metadata']['name']}"
    pod = w["spec"]["template"]["spec"]
    host_net = component == "node-agent" and get(values, "hostNetwork", False)
    assert bool(pod.get("hostNetwork")) == host_net, where
    if host_net:
        assert pod["dnsPolicy"] == "ClusterFirstWithHostNet", where
    docker = component == "node-agent" and get(values, "nodeAgent.collectors.docker", False)
    host_paths = [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == ([{"path": "/var/run/docker.sock", "type": "Socket"}] if docker else []), where
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
    c = main_container(w)
    proxy = get(values, "kubeRBACProxy.enabled", False)
    web = bool(get(values, "webConfig.secretName"))
    names = [c["name"] for c in pod["containers"]]
    assert names == (["kubebridge", "kube-rbac-proxy"] if proxy else ["kubebridge"]), where
    ports = [p for c in pod["containers"] for p in c.get("ports", [])]
    serving = "https-metrics" if proxy else "metrics"
    assert serving in {p["name"] for p in ports}, where
    for probe in ("livenessProbe", "readinessProbe"):
        get_ = c[probe]["httpGet"]
        assert get_["port"] == serving and get_.get("scheme", "HTTP") == ("HTTPS" if proxy or web else "HTTP")
    if proxy:
        rp = pod["containers"][1]
        assert "--upstream=http://127.0.0.1:9500/" in rp["args"]
        assert "--ignore-paths=/healthz,/readyz" in rp["args"], "probes carry no token"
        assert "--web.listen-address=127.0.0.1:9500" in c["args"], "only the proxy is reachable"
    if web:
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        (secret,) = [v for v in pod["volumes"] if v["name"] == "web-config"]
        assert secret["secret"]["secretName"] == values["webConfig"]["secretName"]
        assert mounts["web-config"]["readOnly"] is True
        assert f"{WEB_FLAG}={mounts['web-config']['mountPath']}/web-config.yml" in c["args"]


def check_services(objs: list[dict], values: dict[str, Any]) -> None:
    proxy = get(values, "kubeRBACProxy.enabled", False)
    for svc in by_kind(objs, "Service"):
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        w = workloads(objs)[component]
        assert svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        (port,) = svc["spec"]["ports"]
        named = {p["name"]: p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        assert named[port["targetPort"]] == port["port"] == (8443 if proxy else 9500)


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_render_matrix(variant: str, kube_version: str) -> None:
    """Each variant on each Kubernetes version: valid objects, no duplicates, the right RBAC
    for that version, pods that keep their guarantees, args the real CLI accepts."""
    values = VARIANTS[variant]
    objs = objects(render(values, kube_version))
    validate(objs, kube_version)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"
    ws = workloads(objs)
    node_on = get(values, "nodeAgent.enabled", True)
    cluster_on = get(values, "clusterAgent.enabled", True)
    assert set(ws) == {c for c, on in (("node-agent", node_on), ("cluster-agent", cluster_on)) if on}
    for component, w in ws.items():
        check_pod(w, component, values)
        agent_args(w)
    check_services(objs, values)
    if get(values, "rbac.create", True):
        if node_on:
            check_node_rbac(objs, values, kube_version)
        for b in by_kind(objs, "ClusterRoleBinding") + by_kind(objs, "RoleBinding"):
            (subject,) = b["subjects"]
            assert subject["namespace"] == NAMESPACE
            sa_names = {w["spec"]["template"]["spec"]["serviceAccountName"] for w in ws.values()}
            assert subject["name"] in sa_names
    else:
        assert not [o for o in objs if o["apiVersion"].startswith("rbac.")]
    if node_on and cluster_on:
        check_collector_placement(*(_plain(ws[c], values) for c in ("node-agent", "cluster-agent")))


def _plain(w: dict, values: dict[str, Any]) -> dict:
    """The workload with only kubebridge's container and no web flag: what
    test_manifests.check_collector_placement reads."""
    c = dict(main_container(w))
    c["args"] = [a for a in c["args"] if not a.startswith(WEB_FLAG + "=")]
    spec = dict(w["spec"]["template"]["spec"], containers=[c])
    return dict(w, spec=dict(w["spec"], template=dict(w["spec"]["template"], spec=spec)))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in ("kube-rbac-proxy", "web-config-tls")])
def test_config_and_flags_load(variant: str, tmp_path: Path) -> None:
    """The rendered config passes the real `check-config`, and with each agent's flags loads the
    way `kubebridge run` loads it (version-independent: rendered once)."""
    values = VARIANTS[variant]
    objs = objects(render(values))
    cfg = check_config(config_text(objs), tmp_path)
    for w in workloads(objs).values():
        check_flags_with_config(_plain(w, values), config_text(objs), tmp_path)
    if variant == "labels-and-relabel":
        assert cfg.cluster == "prod-eu-1" and cfg.label_allowlist == ("app", "team")
        assert len(cfg.relabel_configs) == 1 and cfg.kubelet.insecure_skip_verify
        assert cfg.collectors["cadvisor"].options["drop_labels"] == ("id", "name", "image")
    if variant == "etcd-over-http":
        assert [m.url for m in cfg.collectors["etcd"].options["members"]] == \
            ["http://10.0.0.10:2381", "http://10.0.0.11:2381"]
        assert agent_args(workloads(objs)["cluster-agent"])["etcd"] is True
    if variant == "env-list-and-names":
        for w in workloads(objs).values():
            assert main_container(w)["env"][-1]["valueFrom"]["secretKeyRef"] == {"name": "t", "key": "k"}
        accounts = {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}
        assert accounts == {"kb-node-agent", "kb-events"}
    if variant == "docker-node":
        node = workloads(objs)["node-agent"]
        assert cfg.collectors["docker"].options["socket"] == "unix:///var/run/docker.sock"
        mount = {m["name"]: m for m in main_container(node)["volumeMounts"]}["docker-socket"]
        assert mount["mountPath"] == "/var/run/docker.sock"
        assert node["spec"]["template"]["spec"]["securityContext"]["supplementalGroups"] == [998]


def test_lint() -> None:
    for version in KUBE_VERSIONS:
        for name, values in VARIANTS.items():
            report = helm.lint(CHART, values, strict=True, kube_version=f"v{version}")
            errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            assert not errors, f"{name} on {version}: {errors}"


def test_kube_version_reaches_the_templates() -> None:
    """The render really sees the version (else the matrix would test one version four times)."""
    for version, expected in (("1.25.0", NODES_PROXY), ("1.32.9", NODES_PROXY), ("1.33.0", FINE_GRAINED),
                              ("1.35.0", FINE_GRAINED)):
        role = one(objects(render({}, version)), "ClusterRole", "node-agent")
        assert set(role["rules"][0]["resources"]) == expected, version
    for version in KUBE_VERSIONS:  # a forced mode ignores the version
        for mode, expected in (("nodesProxy", NODES_PROXY), ("fineGrained", FINE_GRAINED)):
            objs = objects(render({"nodeAgent": {"kubeletAuthz": mode}}, version))
            role = one(objs, "ClusterRole", "node-agent")
            assert set(role["rules"][0]["resources"]) == expected, (version, mode)


def test_default_render_matches_the_plain_manifests() -> None:
    """The chart on a 1.33+ cluster and manifests/ deploy the same thing: objects, RBAC rules,
    flags, config. (On older clusters the kustomize base needs components/legacy-rbac.)"""
    objs, plain = objects(render({}, "1.35.0")), deployed_docs()

    def kinds(docs: list[dict]) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in docs if o["kind"] != "Namespace")

    assert kinds(objs) == kinds(plain)
    check_rbac(objs)
    for kind in ("ClusterRole", "Role"):
        for o in by_kind(objs, kind):
            assert o["rules"] == one(plain, kind, o["metadata"]["name"].removeprefix("kubebridge-"))["rules"]
    for kind in ("DaemonSet", "Deployment"):
        (chart_w,), (plain_w,) = by_kind(objs, kind), by_kind(plain, kind)
        check_workload(chart_w, chart_w["metadata"]["labels"]["app.kubernetes.io/component"])
        assert parse_args(chart_w)[1] == parse_args(plain_w)[1]
        assert container(chart_w)["securityContext"] == container(plain_w)["securityContext"]
        assert chart_w["spec"]["template"]["spec"]["securityContext"] == \
            plain_w["spec"]["template"]["spec"]["securityContext"]
        assert container(chart_w)["resources"] == container(plain_w)["resources"]
    (plain_cm,) = docs(MANIFESTS / "configmap.yaml")
    assert yaml.safe_load(config_text(objs)) == yaml.safe_load(plain_cm["data"]["config.yaml"])


# --------------------------------------------------------------------------- the anchors' values

# The values node-exporter's and kube-state-metrics' chart users commonly set (issue 14), as
# they set them there, each with what it must do here.
COMMON_VALUES: dict[str, tuple[dict[str, Any], Callable[[list[dict]], None]]] = {}


def common(key: str, values: dict[str, Any]) -> Callable[[Callable[[list[dict]], None]], None]:
    def register(check: Callable[[list[dict]], None]) -> None:
        COMMON_VALUES[key] = (values, check)
    return register


def pods(objs: list[dict]) -> list[dict]:
    return [w["spec"]["template"]["spec"] for w in workloads(objs).values()]


@common("rbac.create", {"rbac": {"create": False}})
def _(objs: list[dict]) -> None:
    assert not [o for o in objs if o["apiVersion"].startswith("rbac.authorization.k8s.io")]


@common("serviceAccount.create", {"serviceAccount": {"create": False}})
def _(objs: list[dict]) -> None:
    assert not by_kind(objs, "ServiceAccount")
    accounts = {p["serviceAccountName"] for p in pods(objs)}
    assert accounts == {"kubebridge-node-agent", "kubebridge-cluster-agent"}


@common("serviceAccount.name", {"serviceAccount": {"name": "metrics"}})
def _(objs: list[dict]) -> None:
    assert [sa["metadata"]["name"] for sa in by_kind(objs, "ServiceAccount")] == ["metrics"]
    assert {p["serviceAccountName"] for p in pods(objs)} == {"metrics"}
    for b in by_kind(objs, "ClusterRoleBinding"):
        assert b["subjects"][0]["name"] == "metrics"


@common("serviceAccount.annotations", {"serviceAccount": {"annotations": {
    "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kubebridge"}}})
def _(objs: list[dict]) -> None:
    for sa in by_kind(objs, "ServiceAccount"):
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/kubebridge")


@common("securityContext", {"securityContext": {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert main_container(w)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@common("podSecurityContext", {"podSecurityContext": {
    "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"}}})
def _(objs: list[dict]) -> None:
    for p in pods(objs):
        assert p["securityContext"]["runAsUser"] == 65534 and p["securityContext"]["fsGroup"] == 65534


@common("extraArgs", {"extraArgs": ["--log.level=debug"]})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert main_container(w)["args"][-1] == "--log.level=debug"
        assert parser().parse_args(main_container(w)["args"]).log_level == "debug"


@common("env", {"env": {"HTTPS_PROXY": "http://proxy.example:3128", "GOMAXPROCS": 2}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        env = {e["name"]: e.get("value") for e in main_container(w)["env"]}
        assert env["HTTPS_PROXY"] == "http://proxy.example:3128" and env["GOMAXPROCS"] == "2"


@common("extraVolumes", {"extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}]})
def _(objs: list[dict]) -> None:
    for p in pods(objs):
        assert {"name": "ca", "configMap": {"name": "corp-ca"}} in p["volumes"]


CA_MOUNT = {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}


@common("extraVolumeMounts", {"extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                              "extraVolumeMounts": [CA_MOUNT]})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert CA_MOUNT in main_container(w)["volumeMounts"]


@common("fullnameOverride", {"fullnameOverride": "metrics-bridge"})
def _(objs: list[dict]) -> None:
    named = [o["metadata"]["name"] for o in objs if not o["kind"].startswith("ConfigMap")]
    assert all(n.startswith("metrics-bridge") for n in named), named


@common("nameOverride", {"nameOverride": "exporter"})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert w["metadata"]["name"].startswith("kubebridge-exporter-")
        assert w["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "exporter"


@common("hostNetwork", {"hostNetwork": True})
def _(objs: list[dict]) -> None:
    assert workloads(objs)["node-agent"]["spec"]["template"]["spec"]["hostNetwork"] is True
    assert "hostNetwork" not in workloads(objs)["cluster-agent"]["spec"]["template"]["spec"]


@common("updateStrategy", {"updateStrategy": {"type": "OnDelete"}})
def _(objs: list[dict]) -> None:
    assert workloads(objs)["node-agent"]["spec"]["updateStrategy"] == {"type": "OnDelete"}


@common("podDisruptionBudget", {"podDisruptionBudget": {"maxUnavailable": 1}})
def _(objs: list[dict]) -> None:
    (pdb,) = by_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = workloads(objs)["cluster-agent"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "cluster-agent"


@common("networkPolicy.enabled", {"networkPolicy": {"enabled": True, "from": [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}})
def _(objs: list[dict]) -> None:
    (np,) = by_kind(objs, "NetworkPolicy")
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9500, "protocol": "TCP"}] and len(rule["from"]) == 1
    for w in workloads(objs).values():
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


@common("prometheusRule.enabled", {"prometheusRule": {"enabled": True, "disabled": ["KubeletDown"]}})
def _(objs: list[dict]) -> None:
    (rule,) = by_kind(objs, "PrometheusRule")
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    groups = yaml.safe_load((ROOT / "alerts" / "kubebridge.rules.yaml").read_text())["groups"]
    source = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    assert alerts == [a for a in source if a != "KubeletDown"]


@common("serviceMonitor.namespace", {"serviceMonitor": {"enabled": True, "namespace": "prometheus"}})
def _(objs: list[dict]) -> None:
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}, "selects the release namespace"


@common("serviceMonitor.relabelings", {"serviceMonitor": {"enabled": True, "relabelings": [
    {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "instance"}]}})
def _(objs: list[dict]) -> None:
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"][-1]["targetLabel"] == "instance"


@common("serviceMonitor.metricRelabelings", {"serviceMonitor": {"enabled": True, "metricRelabelings": [
    {"sourceLabels": ["__name__"], "regex": "python_.*", "action": "drop"}]}})
def _(objs: list[dict]) -> None:
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["metricRelabelings"][0]["regex"] == "python_.*"


@common("image.registry", {"image": {"registry": "registry.example.com", "repository": "team/kubebridge"}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert main_container(w)["image"] == "registry.example.com/team/kubebridge:0.1.0"


@common("image.digest", {"image": {"repository": "kubebridge", "digest": DIGEST}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        assert main_container(w)["image"] == f"kubebridge:0.1.0@{DIGEST}"


@common("global.imageRegistry", {"global": {"imageRegistry": "mirror.example.com"},
                                 "image": {"registry": "registry.example.com", "repository": "kubebridge"},
                                 "kubeRBACProxy": {"enabled": True}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        images = [c["image"] for c in w["spec"]["template"]["spec"]["containers"]]
        assert images == ["mirror.example.com/kubebridge:0.1.0",
                          "mirror.example.com/brancz/kube-rbac-proxy:v0.22.1"]


@common("imagePullSecrets", {"imagePullSecrets": [{"name": "regcred"}],
                             "global": {"imagePullSecrets": [{"name": "mirror"}]}})
def _(objs: list[dict]) -> None:
    for p in pods(objs):
        assert p["imagePullSecrets"] == [{"name": "mirror"}, {"name": "regcred"}]


@common("kubeRBACProxy.enabled", {"kubeRBACProxy": {"enabled": True}})
def _(objs: list[dict]) -> None:
    for w in workloads(objs).values():
        names = [c["name"] for c in w["spec"]["template"]["spec"]["containers"]]
        assert names == ["kubebridge", "kube-rbac-proxy"]


@common("resources", {"nodeAgent": {"resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                                                  "limits": {"memory": "256Mi"}}}})
def _(objs: list[dict]) -> None:
    assert main_container(workloads(objs)["node-agent"])["resources"]["limits"] == {"memory": "256Mi"}


def test_the_26_common_values_are_listed() -> None:
    assert len(COMMON_VALUES) == 26


@pytest.mark.parametrize("key", COMMON_VALUES)
def test_common_value_is_accepted_and_has_its_effect(key: str) -> None:
    values, check = COMMON_VALUES[key]
    objs = objects(render(values, "1.30.0"))
    validate(objs, "1.30.0")
    check(objs)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_all_common_values_at_once(kube_version: str) -> None:
    """All 26 together (the last value of each key wins) render valid objects on every version."""
    merged: dict[str, Any] = {}

    def merge(into: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    for values, _check in COMMON_VALUES.values():
        merge(merged, values)
    objs = objects(render(merged, kube_version))
    validate(objs, kube_version)
    kinds = {o["kind"] for o in objs}
    assert {"PodDisruptionBudget", "NetworkPolicy", "PrometheusRule", "ServiceMonitor"} <= kinds
    assert not kinds & {"ServiceAccount", "ClusterRole"}, "rbac.create and serviceAccount.create: false"


# --------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("values", [
    {"logLevel": "loud"},
    {"nodeAgent": {"collectors": {"cadvisor": "yes"}}},
    {"nodeAgent": {"collectors": {"cadvisr": True}}},
    {"nodeAgent": {"collectors": {"events": True}}},
    {"clusterAgent": {"collectors": {"cadvisor": True}}},
    {"clusterAgent": {"etcd": {"members": [{"url": "10.0.0.1:2379"}]}}},
    {"nodeAgent": {"kubeletAuthz": "legacy"}},
    {"image": {"repository": "kubebridge", "digest": "latest"}},
    {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
    {"extraArgs": ["log.level=debug"]},
    {"kubeRBACProxy": {"port": 9500}},
    {"unknownKey": 1},
], ids=["log-level", "collector-not-bool", "collector-typo", "cluster-collector-on-node",
        "node-collector-on-cluster", "etcd-url", "kubelet-authz", "digest", "pdb-both", "extra-arg-not-flag",
        "proxy-port-clash", "unknown-key"])
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(values)


def test_schema_collectors_are_the_registry() -> None:
    """Generated from the registry (charts/build.py): every node-scoped collector is a node agent
    key, every cluster-scoped one a cluster agent key, nothing else; the generated files are in sync."""
    out = subprocess.run([sys.executable, str(ROOT / "charts" / "build.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    regs = registrations()
    for scope, definition in (("node", "nodeCollectors"), ("cluster", "clusterCollectors")):
        d = schema["definitions"][definition]
        assert d["additionalProperties"] is False
        assert set(d["properties"]) == {r.name for r in regs if r.scope == scope}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults["nodeAgent"]["collectors"]) <= \
        set(schema["definitions"]["nodeCollectors"]["properties"])
    assert set(defaults["clusterAgent"]["collectors"]) <= \
        set(schema["definitions"]["clusterCollectors"]["properties"])


def test_rules_copy_in_sync() -> None:
    """The chart's rules are alerts/kubebridge.rules.yaml byte for byte (charts/build.py), and the
    PrometheusRule carries them unchanged, {{ $labels }} templates included."""
    source = (ROOT / "alerts" / "kubebridge.rules.yaml").read_text()
    assert (CHART / "rules" / "kubebridge.rules.yaml").read_text() == source, "run python charts/build.py"
    (rule,) = by_kind(objects(render({"prometheusRule": {"enabled": True}})), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(source)["groups"]
    assert rule["metadata"]["namespace"] == NAMESPACE


def test_prometheus_rule_loads_in_promtool(tmp_path: Path) -> None:
    """The PrometheusRule's groups (some alerts disabled, an extra group added) are a rule file
    the real promtool accepts, as the Prometheus Operator hands them to Prometheus."""
    promtool = shutil.which("promtool") or pytest.skip("promtool not installed (apt-get install prometheus)")
    extra = {"name": "site", "rules": [{"alert": "SiteKubebridgeAbsent",
                                        "expr": "absent(kubebridge_build_info)", "for": "10m",
                                        "labels": {"severity": "warning"}}]}
    values = {"prometheusRule": {"enabled": True, "disabled": ["KubeletDown", "KubeAPIDown"],
                                 "extraGroups": [extra]}}
    (rule,) = by_kind(objects(render(values)), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    names = [r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "SiteKubebridgeAbsent" in names and "KubeletDown" not in names and "KubeAPIDown" not in names


def _alerts(values: dict[str, Any]) -> dict[str, dict]:
    (rule,) = by_kind(objects(render({"prometheusRule": {"enabled": True}, **values})), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_alerts_of_agents_not_installed_are_left_out() -> None:
    """An agent the release does not run would page forever as gone."""
    agents = {"KubebridgeNodeAgentDown", "KubebridgeNodeAgentsMissing", "KubebridgeClusterAgentDown"}
    assert agents <= _alerts({}).keys()
    assert agents & _alerts({"nodeAgent": {"enabled": False}}).keys() == {"KubebridgeClusterAgentDown"}
    assert agents & _alerts({"clusterAgent": {"enabled": False}}).keys() == {
        "KubebridgeNodeAgentDown", "KubebridgeNodeAgentsMissing"}
    sharded = {"nodeAgent": {"enabled": False}, "clusterCollector": {"enabled": True}}
    assert not {"KubebridgeNodeAgentDown", "KubebridgeNodeAgentsMissing"} & _alerts(sharded).keys()


def test_runbook_url_base_is_a_value() -> None:
    base = "https://git.example.com/kubebridge/blob/main/docs/runbooks.md"
    for name, rule in _alerts({"prometheusRule": {"enabled": True, "runbookUrlBase": base}}).items():
        assert rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}", name
    default = _alerts({})["KubeletDown"]["annotations"]["runbook_url"]
    assert default == "https://kubebridge.invalid/docs/runbooks.md#kubeletdown"


def test_bad_combinations_fail_the_render() -> None:
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render({"clusterAgent": {"replicas": 3, "leaderElection": False}})
    with pytest.raises(helm.HelmError, match="alternatives"):
        render({"kubeRBACProxy": {"enabled": True}, "webConfig": {"secretName": "web"}})


# --------------------------------------------------------------------------- single features


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
    assert ep["honorLabels"] is True and ep["port"] == "metrics" and ep["scheme"] == "http"
    assert sm["metadata"]["labels"]["release"] == "prom"
    for svc in by_kind(objs, "Service"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    for w in by_kind(objs, "DaemonSet") + by_kind(objs, "Deployment"):
        assert "prometheus.io/scrape" not in w["spec"]["template"]["metadata"]["annotations"], "scraped twice"
    assert not by_kind(objects(render({})), "ServiceMonitor")


def test_service_monitor_over_tls() -> None:
    """With kube-rbac-proxy Prometheus sends its token over HTTPS; with a web config it verifies
    the certificate with the tlsConfig the values give."""
    (sm,) = by_kind(objects(render(VARIANTS["kube-rbac-proxy"])), "ServiceMonitor")
    (ep,) = sm["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["bearerTokenFile"].endswith("serviceaccount/token")
    (sm,) = by_kind(objects(render(VARIANTS["web-config-tls"])), "ServiceMonitor")
    (ep,) = sm["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["tlsConfig"]["serverName"] == "kubebridge"
    assert "bearerTokenFile" not in ep
    ann = workloads(objects(render({"webConfig": {"secretName": "w"}})))["node-agent"]["spec"]["template"][
        "metadata"]["annotations"]
    assert ann["prometheus.io/scheme"] == "https"


def test_service_monitor_warns_without_its_crd() -> None:
    notes = render(VARIANTS["service-monitor"])["kubebridge/templates/NOTES.txt"]
    assert "WARNING" in notes and "ServiceMonitor" in notes
    notes = render(VARIANTS["service-monitor"],
                   api_versions=["monitoring.coreos.com/v1/ServiceMonitor"])["kubebridge/templates/NOTES.txt"]
    assert "WARNING" not in notes


def test_notes_say_which_kubelet_permissions() -> None:
    assert "nodes/proxy" in render({}, "1.30.0")["kubebridge/templates/NOTES.txt"]
    assert "nodes/proxy" not in render({}, "1.35.0")["kubebridge/templates/NOTES.txt"]


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
        for key in ("home", "icon", "sources"):
            assert chart.metadata.get(key), f"Chart.yaml: {key}"
    objs = objects(render({"image": {"repository": "registry.example/kubebridge", "tag": "dev"}}))
    for w in by_kind(objs, "DaemonSet") + by_kind(objs, "Deployment"):
        assert container(w)["image"] == "registry.example/kubebridge:dev"
    for w in by_kind(objects(render({})), "DaemonSet"):
        assert container(w)["image"] == f"kubebridge:{__version__}"


def test_readme_documents_every_value() -> None:
    """charts/kubebridge/README.md's table has a row for every leaf of values.yaml (maps that
    are meant to be filled, like podAnnotations, count as leaves)."""
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))

    def leaves(node: Any, prefix: str = "") -> Iterable[str]:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix.rstrip(".")

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # A collector map is documented once as a whole.
    wanted = {k for k in leaves(values) if not re.match(r"(nodeAgent|clusterAgent)\.collectors\.", k)}
    wanted |= {"nodeAgent.collectors", "clusterAgent.collectors"}
    missing = sorted(k for k in wanted if k not in documented and not any(
        k.startswith(d + ".") for d in documented))
    assert not missing, f"charts/kubebridge/README.md lacks {missing}"


# --------------------------------------------------------------------------- cluster collector


def test_cluster_collector_statefulset(tmp_path: Path) -> None:
    """clusterCollector.enabled: a StatefulSet of `shards` replicas (each its ordinal's shard),
    its own ServiceAccount and RBAC (nodes/pods list+watch, the kubelet's read-only
    subresources; nodes/proxy only through the proxy), a headless Service; the args pass the
    real CLI and, with the rendered config, load for every ordinal."""
    from exporter.shard.membership import resolve

    values = {"clusterCollector": {"enabled": True, "shards": 4}, "nodeAgent": {"enabled": False}}
    objs = objects(render(values))
    validate(objs, "1.30.0")
    assert not by_kind(objs, "DaemonSet")
    (sts,) = by_kind(objs, "StatefulSet")
    check_pod(sts, "cluster-collector", values)
    assert sts["spec"]["replicas"] == 4 and sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubebridge-cluster-collector"
    (svc,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    role = one(objs, "ClusterRole", "cluster-collector")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats", "nodes/healthz"], "verbs": ["get"]}]
    binding = one(objs, "ClusterRoleBinding", "cluster-collector")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    on = {n for n, enabled in agent_args(sts).items() if enabled}
    assert on == {"cadvisor", "kubelet", "probes", "pods", "stats_summary", "healthz"}
    args = parser().parse_args(main_container(sts)["args"])
    path = tmp_path / "config.yaml"
    path.write_text(config_text(objs))
    for ordinal in range(4):
        cfg = config_mod.load(path, env={"POD_NAME": f"{sts['metadata']['name']}-{ordinal}"},
                              overrides=overrides(args))
        cc = cfg.cluster_collector
        assert resolve(cc.shard, cc.total_shards, cc.pod_name).shard == ordinal and cc.total_shards == 4
    proxied = objects(render({"clusterCollector": {
        "enabled": True, "kubeletUrl": "https://kubernetes.default.svc/api/v1/nodes/$NODE_NAME/proxy"}}))
    role = one(proxied, "ClusterRole", "cluster-collector")
    assert "nodes/proxy" in role["rules"][1]["resources"]
    (sts,) = by_kind(proxied, "StatefulSet")
    cfg = config_mod.load(path, env={"POD_NAME": "x-0"},
                          overrides=overrides(parser().parse_args(main_container(sts)["args"])))
    assert cfg.cluster_collector.kubelet_url.endswith("/api/v1/nodes/$NODE_NAME/proxy")
    ready = objects(render({"clusterCollector": {"enabled": True, "membership": "readyPods"}}))
    (sts,) = by_kind(ready, "StatefulSet")
    cfg = config_mod.load(path, env={"POD_NAME": "x-0", "POD_NAMESPACE": "kb"},
                          overrides=overrides(parser().parse_args(main_container(sts)["args"])))
    assert cfg.cluster_collector.membership == "ready_pods"
    selector = dict(kv.split("=") for kv in cfg.cluster_collector.peer_selector.split(","))
    assert selector.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/instance" in selector  # (not another release's collectors)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in main_container(sts)["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    assert not [o for o in objects(render({})) if "cluster-collector" in o["metadata"]["name"]], "opt-in"
