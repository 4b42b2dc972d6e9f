"""The one place to adapt the dashboards (like kubernetes-mixin's `_config`): label names,
selectors, the kubebridge families they read, and conventions. Edit, then run
`python dashboards/build.py` and `python dashboards/build_configmap.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Labels:
    """The label names kubebridge puts on every joined series (see docs/architecture.md)."""

    cluster: str = "cluster"
    namespace: str = "namespace"
    workload: str = "workload"
    workload_kind: str = "workload_kind"
    pod: str = "pod"
    container: str = "container"
    node: str = "node"


@dataclass(frozen=True)
class Selectors:
    """Matchers per source. Every upstream family is selected with its `collector`, so series
    another scrape job exposes under the same name (a direct kubelet job, say) never mix in."""

    cadvisor: str = 'collector="cadvisor"'
    containers: str = 'collector="cadvisor", cgroup_kind="container"'  # one cgroup per container
    # cAdvisor reports a pod's network on its sandbox cgroup (checked on the v1.10, v1.16, v1.24 and
    # v1.35 captures under tests/fixtures/cadvisor).
    sandboxes: str = 'collector="cadvisor", cgroup_kind="pause"'
    system: str = 'collector="cadvisor", cgroup_kind="system"'
    kubelet: str = 'collector="kubelet"'
    probes: str = 'collector="probes"'
    pods: str = 'collector="pods"'
    stats: str = 'collector="stats_summary"'
    resource: str = 'collector="resource"'
    healthz: str = 'collector="healthz"'
    events: str = 'collector="events"'
    kube_system: str = 'collector="kube_system"'
    apiserver: str = 'collector="apiserver"'
    etcd: str = 'collector="etcd"'
    etcd_v2: str = 'collector="etcd_v2"'
    autodiscovery: str = 'collector="autodiscovery"'


@dataclass(frozen=True)
class Config:
    """Everything the generator reads."""

    labels: Labels = field(default_factory=Labels)
    selectors: Selectors = field(default_factory=Selectors)
    # Show the cluster variable (several clusters in one Prometheus). Off: it is hidden and
    # matches whatever single cluster there is.
    multi_cluster: bool = False
    # Provisioned dashboards are read-only in Grafana; imported copies may be edited.
    editable: bool = False
    tags: tuple[str, ...] = ("kubebridge", "kubernetes")
    uid_prefix: str = "kubebridge-"
    refresh: str = "30s"
    time_from: str = "now-1h"
    grafana_version: str = "10.0.0"  # __requires: the oldest Grafana these dashboards target
    # API server SLO (kubernetes-mixin's defaults): availability target over 30 days.
    apiserver_slo: float = 0.99
    apiserver_read_latency_s: float = 1.0
    apiserver_write_latency_s: float = 1.0


CONFIG = Config()
