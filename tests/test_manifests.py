"""manifests/ and the Dockerfile: valid Kubernetes objects (schemas of 1.30, strict), least-
privilege RBAC, restricted-PSS security contexts, flags the real CLI accepts, a config the real
loader accepts, generated dashboards in sync. The Dockerfile cannot be built here (no daemon):
it is parsed and checked instead.

Needs `kubernetes-validate` (PyPI) for schema checks and `kubectl` (kustomize) when present.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from exporter import config as config_mod
from exporter.cli import overrides, parser
from exporter.registry import registrations

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
KUBE_VERSION = "1.30.0"
NODE_AGENT_RULES = [{"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats", "nodes/pods",
                                                      "nodes/healthz"],
                     "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]  # its own Node
CLUSTER_AGENT_RESOURCES = {("", "pods"): {"list", "watch"}, ("", "events"): {"list", "watch"},
                           ("", "componentstatuses"): {"list"}}
CLUSTER_AGENT_URLS = {"/metrics", "/livez", "/readyz", "/healthz"}
SECRET_ISH = {"secrets", "configmaps", "*"}


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_docs() -> list[dict]:
    return [d for p in sorted(MANIFESTS.glob("*.yaml")) if p.name != "kustomization.yaml" for d in docs(p)]


def deployed_docs() -> list[dict]:
    """The objects `kubectl apply -k manifests/` creates (before kustomize sets the namespace)."""
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    return [d for name in listed for d in docs(MANIFESTS / name)]


def by_kind(objs: Iterable[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[dict], kind: str, name_part: str) -> dict:
    (obj,) = [o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"]]
    return obj


def validate(objs: Iterable[dict]) -> None:
    """Every object against the Kubernetes 1.30 schemas, strict (unknown fields fail). Custom
    resources have no schema there: warn, never fail."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for obj in objs:
        try:
            kv.validate(obj, KUBE_VERSION, strict=True)
        except kv.SchemaNotFoundError:
            warnings.warn(f"{obj['kind']} {obj['metadata']['name']}: no schema (custom resource), "
                          "not validated",
                          stacklevel=1)


def container(workload: dict) -> dict:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def parse_args(workload: dict) -> tuple[argparse.Namespace, dict[str, bool]]:
    """The container args through the real CLI parser (an unknown flag fails here as it would
    crash-loop the pod). Returns the namespace and {collector: enabled} as the flags say."""
    args = container(workload)["args"]
    wanted = {m.group(2): not m.group(1) for a in args
              if (m := re.fullmatch(r"--(no-)?collector\.([a-z0-9_]+)", a))}
    try:
        return parser().parse_args(args), wanted
    except SystemExit:
        pytest.fail(f"{workload['metadata']['name']}: kubebridge rejects its args {args}")


# --------------------------------------------------------------------------- reusable checks
# (tests/test_helm.py applies the same checks to the chart's output)


def check_rbac(objs: list[dict], legacy: bool = False) -> None:
    node = one(objs, "ClusterRole", "node-agent")
    expected = NODE_AGENT_RULES + ([{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
                                   if legacy else [])
    assert node["rules"] == expected, "node agent: the kubelet subresources and its Node, get only"
    cluster = one(objs, "ClusterRole", "cluster-agent")
    for rule in cluster["rules"]:
        if "nonResourceURLs" in rule:
            assert set(rule["nonResourceURLs"]) == CLUSTER_AGENT_URLS and rule["verbs"] == ["get"]
            continue
        assert not SECRET_ISH & set(rule["resources"]) and "*" not in rule["verbs"]
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                allowed = CLUSTER_AGENT_RESOURCES[(group, res)]
                assert set(rule["verbs"]) <= allowed, (group, res, rule["verbs"])
    granted = {(g, r) for rule in cluster["rules"] if "resources" in rule
               for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == set(CLUSTER_AGENT_RESOURCES)
    (role,) = by_kind(objs, "Role")
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
        if rule["verbs"] != ["create"]:
            assert set(rule["verbs"]) <= {"get", "update"} and rule["resourceNames"], "name-scoped"
    for binding in by_kind(objs, "ClusterRoleBinding") + by_kind(objs, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount"
        component = "node-agent" if "node-agent" in binding["metadata"]["name"] else "cluster-agent"
        assert subject["name"].endswith(component), "each agent is bound to its own role only"


def check_workload(w: dict, component: str) -> None:
    where = f"{w['kind']} {w['metadata']['name']}"
    pod = w["spec"]["template"]["spec"]
    assert w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), where
    assert all("hostPath" not in v for v in pod.get("volumes", [])), where
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, where
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
    c = container(w)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
    assert not sc.get("privileged"), where
    assert c["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}], where
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, where
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, where
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
    assert c["resources"]["limits"]["memory"], where
    assert "cpu" not in c["resources"]["limits"], f"{where}: a CPU limit throttles scrapes"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace", where
    if component == "node-agent":
        assert env["NODE_NAME"] == "spec.nodeName" and env["NODE_IP"] == "status.hostIP", where
        assert {"operator": "Exists"} in pod["tolerations"], f"{where}: must run on tainted nodes too"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/kubebridge"]["readOnly"] is True and "/tmp" in mounts, where
    args, _ = parse_args(w)
    assert args.command == "run" and str(args.config) == "/etc/kubebridge/config.yaml", where


def check_collector_placement(node: dict, cluster: dict) -> None:
    """Each collector runs only in the agent its scope says, never in both; every collector that
    is on by default is named explicitly in both (else it would run in both)."""
    _, on_node = parse_args(node)
    _, on_cluster = parse_args(cluster)
    regs = {r.name: r for r in registrations()}
    for name in {**on_node, **on_cluster}:
        assert name in regs, f"--collector.{name}: no such collector"
    for name, reg in regs.items():
        if reg.default_enabled:
            assert name in on_node and name in on_cluster, (
                f"collector {name} is on by default: name it in both agents' args (manifests/daemonset.yaml, "
                f"deployment.yaml, and nodeAgent/clusterAgent.collectors in charts/kubebridge/values.yaml)")
        runs_node = on_node.get(name, reg.default_enabled)
        runs_cluster = on_cluster.get(name, reg.default_enabled)
        assert not (runs_node and runs_cluster), f"{name} enabled in both agents"
        if runs_node:
            assert reg.scope == "node", f"{name} is {reg.scope}-scoped: it must not run on every node"
        if runs_cluster:
            assert reg.scope == "cluster", f"{name} is {reg.scope}-scoped: the cluster agent has no kubelet"


def check_config(text: str, tmp_path: Path) -> config_mod.Config:
    """The real `python -m exporter check-config` accepts it; returns the parsed config."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return config_mod.load(path, env={})


def check_flags_with_config(workload: dict, config_text: str, tmp_path: Path) -> config_mod.Config:
    """The config file plus the workload's flags, loaded the way `kubebridge run` loads them."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    args, _ = parse_args(workload)
    return config_mod.load(path, env={"NODE_NAME": "n1", "NODE_IP": "10.0.0.1", "POD_NAMESPACE": "kb"},
                           overrides=overrides(args))


# --------------------------------------------------------------------------- manifests


def test_every_manifest_is_valid_kubernetes() -> None:
    validate(manifest_docs())


def test_kustomize_build(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl") or pytest.skip("kubectl not installed")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    validate(objs)
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for o in objs:
        if o["kind"] not in cluster_scoped:
            assert o["metadata"]["namespace"] == "kubebridge", o["metadata"]["name"]
    for b in by_kind(objs, "ClusterRoleBinding"):
        assert b["subjects"][0]["namespace"] == "kubebridge"
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
    # The default deployment; the optional parts are components (manifests/components/).
    assert listed == {"namespace.yaml", "serviceaccounts.yaml", "rbac.yaml", "configmap.yaml", "service.yaml",
                      "daemonset.yaml", "deployment.yaml", "dashboards-configmap.yaml"}


COMPONENTS = MANIFESTS / "components"


def kustomize_overlay(tmp_path: Path, components: list[str], namespace: str = "monitoring") -> list[dict]:
    """`kubectl kustomize` of an overlay on manifests/ that adds `components` (names under
    manifests/components/) and sets the namespace, the way docs/deploy.md tells users to."""
    kubectl = shutil.which("kubectl") or pytest.skip("kubectl not installed")
    overlay = tmp_path / "overlay"
    shutil.copytree(MANIFESTS, overlay / "manifests")
    (overlay / "site").mkdir()
    (overlay / "site" / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../manifests"], "namespace": namespace,
        "components": [f"../manifests/components/{c}" for c in components]}))
    out = subprocess.run([kubectl, "kustomize", str(overlay / "site")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_components_are_components() -> None:
    names = sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir())
    assert names == ["cluster-collector", "legacy-rbac", "prometheus-rule", "service-monitor"]
    for name in names:
        k = yaml.safe_load((COMPONENTS / name / "kustomization.yaml").read_text())
        assert k["kind"] == "Component" and k["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"


def test_kustomize_legacy_rbac_component(tmp_path: Path) -> None:
    objs = kustomize_overlay(tmp_path, ["legacy-rbac"])
    validate(objs)
    role = one(objs, "ClusterRole", "nodes-proxy")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
    legacy = one(objs, "ClusterRoleBinding", "nodes-proxy")
    assert legacy["subjects"] == [{"kind": "ServiceAccount", "name": "kubebridge-node-agent",
                                   "namespace": "monitoring"}]
    assert one(objs, "ServiceAccount", "node-agent")["metadata"]["namespace"] == "monitoring"
    assert "nodes/proxy" not in json.dumps(kustomize_overlay(tmp_path / "plain", [])), "opt-in only"


def test_kustomize_service_monitor_component(tmp_path: Path) -> None:
    objs = kustomize_overlay(tmp_path, ["service-monitor"])
    validate(objs)
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring" and "namespaceSelector" not in sm["spec"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["honorLabels"] is True and ep["port"] == "metrics"
    for svc in by_kind(objs, "Service"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["name"] == "metrics"
    for w in by_kind(objs, "DaemonSet") + by_kind(objs, "Deployment"):
        ann = w["spec"]["template"]["metadata"].get("annotations", {})
        assert not any(k.startswith("prometheus.io/") for k in ann), "not scraped twice"


def test_kustomize_prometheus_rule_component(tmp_path: Path) -> None:
    objs = kustomize_overlay(tmp_path, ["prometheus-rule", "service-monitor", "legacy-rbac"])
    validate(objs)
    (rule,) = by_kind(objs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    source = yaml.safe_load((ROOT / "alerts" / "kubebridge.rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"], "run python charts/build.py"


CLUSTER_COLLECTOR_RULES = [
    {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats", "nodes/healthz"], "verbs": ["get"]}]


def test_kustomize_cluster_collector_component(tmp_path: Path) -> None:
    """The sharded StatefulSet replaces the DaemonSet; its RBAC is the node list/watch, the pod
    list/watch and the kubelet's read-only subresources; its flags and the shared config load,
    and each replica's shard is its ordinal."""
    objs = kustomize_overlay(tmp_path, ["cluster-collector"])
    validate(objs)
    assert not by_kind(objs, "DaemonSet"), "no DaemonSet with the cluster collector"
    (sts,) = by_kind(objs, "StatefulSet")
    check_workload(sts, "cluster-collector")
    assert container(sts)["env"][0] == {"name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    (svc,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    role = one(objs, "ClusterRole", "cluster-collector")
    assert role["rules"] == CLUSTER_COLLECTOR_RULES
    binding = one(objs, "ClusterRoleBinding", "cluster-collector")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubebridge-cluster-collector",
                                    "namespace": "monitoring"}]
    args, wanted = parse_args(sts)
    regs = {r.name: r for r in registrations()}
    assert all(regs[n].scope == "node" for n, on in wanted.items() if on)
    for r in regs.values():
        if r.default_enabled:
            assert r.name in wanted, f"{r.name} is on by default: name it in cluster-collector.yaml"
    config_text = one(objs, "ConfigMap", "kubebridge-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    total = sts["spec"]["replicas"]
    for ordinal in range(total):
        cfg = config_mod.load(path, env={"POD_NAME": f"{sts['metadata']['name']}-{ordinal}"},
                              overrides=overrides(args))
        cc = cfg.cluster_collector
        assert cc.enabled and cc.total_shards == total and cc.shard == -1
        from exporter.shard.membership import resolve
        assert resolve(cc.shard, cc.total_shards, cc.pod_name).shard == ordinal


def test_rbac_least_privilege() -> None:
    check_rbac(docs(MANIFESTS / "rbac.yaml") + docs(MANIFESTS / "serviceaccounts.yaml"))
    assert "nodes/proxy" not in json.dumps(docs(MANIFESTS / "rbac.yaml")), \
        "nodes/proxy only in the legacy file"


def test_rbac_legacy_variant() -> None:
    objs = docs(MANIFESTS / "components" / "legacy-rbac" / "rbac-legacy-nodes-proxy.yaml")
    validate(objs)
    role = one(objs, "ClusterRole", "nodes-proxy")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
    assert one(objs, "ClusterRoleBinding", "nodes-proxy")["subjects"][0]["name"] == "kubebridge-node-agent"


def test_lease_name_matches_the_events_collector() -> None:
    from exporter.registry import get
    (role,) = by_kind(docs(MANIFESTS / "rbac.yaml"), "Role")
    names = [n for r in role["rules"] for n in r.get("resourceNames", [])]
    assert names == [get("events").options["lease_name"].default]


def test_workloads() -> None:
    objs = manifest_docs()
    node, cluster = one(objs, "DaemonSet", "node-agent"), one(objs, "Deployment", "cluster-agent")
    check_workload(node, "node-agent")
    check_workload(cluster, "cluster-agent")
    check_collector_placement(node, cluster)
    for w in (node, cluster):
        ann = w["spec"]["template"]["metadata"]["annotations"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "9500",
                       "prometheus.io/path": "/metrics"}
        assert w["metadata"]["labels"]["app.kubernetes.io/version"] == __version__
        assert container(w)["image"] == f"kubebridge:{__version__}"
    assert node["spec"]["template"]["spec"]["serviceAccountName"] == "kubebridge-node-agent"
    assert cluster["spec"]["template"]["spec"]["serviceAccountName"] == "kubebridge-cluster-agent"


def test_services_select_the_agents() -> None:
    objs = manifest_docs()
    for component in ("node-agent", "cluster-agent"):
        svc = one(objs, "Service", component)
        (w,) = [o for o in objs
                if o["kind"] in ("DaemonSet", "Deployment") and component in o["metadata"]["name"]]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_namespace_enforces_restricted_pod_security() -> None:
    (ns,) = docs(MANIFESTS / "namespace.yaml")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_config_passes_check_config(tmp_path: Path) -> None:
    (cm,) = docs(MANIFESTS / "configmap.yaml")
    cfg = check_config(cm["data"]["config.yaml"], tmp_path)
    assert cfg.log_format == "json" and cfg.listen_address.endswith(":9500")
    assert cfg.collectors["events"].options["leader_election"] is True
    objs = manifest_docs()
    node_cfg = check_flags_with_config(one(objs, "DaemonSet", "node-agent"), cm["data"]["config.yaml"],
                                       tmp_path)
    assert {c.name for c in node_cfg.enabled()} == {
        "cadvisor", "kubelet", "probes", "pods", "stats_summary", "healthz"}
    assert node_cfg.kubelet.url == "https://10.0.0.1:10250", "NODE_IP from the downward API"
    cluster_cfg = check_flags_with_config(one(objs, "Deployment", "cluster-agent"),
                                          cm["data"]["config.yaml"], tmp_path)
    assert {c.name for c in cluster_cfg.enabled()} == {"apiserver", "events", "kube_system"}


def test_dashboards_configmap_in_sync() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "dashboards" / "build_configmap.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cms = docs(MANIFESTS / "dashboards-configmap.yaml")
    assert len(cms) == len(list((ROOT / "dashboards").glob("*.json")))
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert text == (ROOT / "dashboards" / key).read_text()
        assert len(yaml.safe_dump(cm)) < 200_000, "kubectl apply keeps a copy in a 256 KiB annotation"


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments), continuation lines joined, `${ARG}` in FROM resolved to
    the ARG's default."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out, stage, args = [], "", {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stage:
            name, _, default = rest.partition("=")
            args[name] = default
        if instr == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            stage = rest
        out.append((stage, instr, rest.strip()))
    return out


def test_dockerfile() -> None:
    lines = dockerfile()
    stages = [rest for _, i, rest in lines if i == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    assert all(s.startswith("python:3.11-slim") for s in stages), "python:3.11-slim based"
    for s in stages:
        assert re.fullmatch(r"python:3\.11-slim\S*@sha256:[0-9a-f]{64}( AS \w+)?", s), f"{s}: pin the digest"
    final = stages[-1]
    last = [(i, rest) for s, i, rest in lines if s == final]
    users = [rest for i, rest in last if i == "USER"]
    assert users and users[-1].split(":")[0] == "65532", "runs as uid 65532"
    assert ("ENTRYPOINT", '["kubebridge"]') in last and ("CMD", '["run"]') in last
    assert ("EXPOSE", "9500") in last
    final_runs = " ".join(rest for i, rest in last if i == "RUN")
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final_runs), \
        "no build tools in the final image"
    assert any(i == "COPY" and rest.startswith("--from=") for i, rest in last), \
        "the final stage copies the build"
    builds = [rest for s, i, rest in lines if s != final and i == "RUN" and "pip install" in rest]
    assert any("-c requirements.lock ." in rest for rest in builds), "dependencies pinned by the lock"
    for rest in builds:  # build tools pinned too
        for req in re.findall(r"\b(setuptools|wheel)(\S*)", rest.split("uninstall")[0]):
            assert req[1].startswith("=="), f"{req}: pin it"
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for _stage, instr, rest in lines:
        if instr != "COPY" or rest.startswith("--from="):
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"
            assert not src.endswith((".key", ".pem")), f"COPY {src}: no private keys in the image"
            if (ROOT / src).is_dir():
                keys = [p for p in (ROOT / src).rglob("*") if p.suffix in (".key", ".pem")]
                assert not keys, f"COPY {src} would copy {keys}"
    assert {"**/*.key", "**/*.pem"} <= set(ignored), ".dockerignore keeps keys out of the build context"


def test_dockerfile_copies_what_setup_cfg_packages() -> None:
    """The packages setup.cfg installs are all copied (else `pip install .` ships an empty wheel)."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = [p.strip() for p in cfg["options.packages.find"]["include"].split() if "*" not in p]
    copied = {src.rstrip("/") for _, i, rest in dockerfile() if i == "COPY" and not rest.startswith("--")
              for src in shlex.split(rest)[:-1]}
    assert set(include) <= copied
    assert {"setup.cfg", "pyproject.toml"} <= copied
