"""What every dashboard module shares: kubebridge's family names, matchers built from config.py,
and small query and link helpers."""

from __future__ import annotations

from typing import Any

from config import CONFIG
from grafana import (
    annotation,
    m,
    rate,
    row_link,
)

# ---------------------------------------------------------------------------------------------
# kubebridge's own families (each is declared in its collector's metric table; the tests fail
# when a name here is no longer exposed). A rename is one line here.
# ---------------------------------------------------------------------------------------------
POD_PHASE = "kubebridge_pods_phase"  # {phase}: one-hot
POD_READY = "kubebridge_pods_ready"  # 1 ready, 0 not
CTR_READY = "kubebridge_pods_container_ready"
CTR_STATE = "kubebridge_pods_container_state"  # {state}: one-hot running|waiting|terminated
POD_RESTARTS = "kubebridge_pods_container_restarts_total"  # {container}
POD_WAITING = "kubebridge_pods_container_waiting"  # {container, reason}: 1 while waiting
POD_TERMINATED = "kubebridge_pods_container_terminated"  # {container, reason, exit_code}
POD_LAST_TERMINATED = "kubebridge_pods_container_last_terminated"  # {container, reason, exit_code}
POD_LAST_TERMINATED_AT = "kubebridge_pods_container_last_terminated_timestamp_seconds"
POD_REQUESTS = "kubebridge_pods_container_resource_requests"  # {container, resource, unit}
POD_LIMITS = "kubebridge_pods_container_resource_limits"  # {container, resource, unit}
ST = "kubebridge_stats_"
HEALTHZ_UP, HEALTHZ_OK = "kubebridge_healthz_up", "kubebridge_healthz_healthy"
HEALTHZ_CHECK = "kubebridge_healthz_check"  # {check}: 1 passing, 0 failing
HEALTHZ_RUNTIME = "kubebridge_healthz_runtime_healthy"
APISERVER_CHECK = "kubebridge_apiserver_check"  # {endpoint, check}
APISERVER_HEALTHY = "kubebridge_apiserver_healthy"  # {endpoint}
COMPONENTS = "kubebridge_apiserver_componentstatus_healthy"  # {component}
EVENTS = "kubebridge_kube_events_total"  # {namespace, involved_kind, reason, type, workload, workload_kind}
EVENTS_LAST_SEEN = "kubebridge_kube_event_last_seen_timestamp_seconds"
EVENTS_LEADER = "kubebridge_events_leader"
ETCD_MEMBER_UP, ETCD_MEMBER_HEALTHY = "kubebridge_etcd_member_up", "kubebridge_etcd_member_healthy"
ETCD_MEMBER_LEADER, ETCD_HAS_LEADER = "kubebridge_etcd_member_is_leader", "kubebridge_etcd_cluster_has_leader"
ETCD_MEMBERS_UP, ETCD_DB = "kubebridge_etcd_cluster_members_up", "kubebridge_etcd_db_size_bytes"
ETCD_TERM, ETCD_INFO = "kubebridge_etcd_raft_term", "kubebridge_etcd_member_info"
KS_READY = "kubebridge_kube_system_pod_ready"  # {namespace, pod} + join labels
KS_CONTAINERS = "kubebridge_kube_system_containers"  # {state}
KS_WAITING = "kubebridge_kube_system_container_waiting"  # {namespace, pod, container, reason}
KS_RESTARTS = "kubebridge_kube_system_container_restarts_total"
ETCD_V2 = "kubebridge_etcd_v2_"  # the etcd_v2 collector's families (v2 /stats/self, /stats/store)
AD_TARGETS, AD_UP = "kubebridge_autodiscovery_targets", "kubebridge_autodiscovery_target_up"
AD_SERIES = "kubebridge_autodiscovery_target_series"
AD_DURATION = "kubebridge_autodiscovery_target_scrape_duration_seconds"

S, L = CONFIG.selectors, CONFIG.labels
CPU, WSET = "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"
RX, TX = "container_network_receive_bytes_total", "container_network_transmit_bytes_total"
CLUSTER = f'{L.cluster}=~"$cluster"'
NS = f'{L.namespace}=~"$namespace"'
KIND = f'{L.workload_kind}=~"$workload_kind"'
WORKLOAD = f'{L.workload}=~"$workload"'
POD = f'{L.pod}=~"$pod"'
CONTAINER = f'{L.container}=~"$container"'
NODE = f'{L.node}=~"$node"'
WL = ", ".join((CLUSTER, NS, KIND, WORKLOAD))
BY_WL = f"{L.namespace}, {L.workload_kind}, {L.workload}"
RES_CPU, RES_MEMORY = 'resource="cpu"', 'resource="memory"'
WARNING, NORMAL = 'type="Warning"', 'type="Normal"'
ROOT, SLICES = 'id="/"', 'id=~"/system.slice/.+"'  # the whole node; OS services, kubelet, runtime
OK, DOWN, NOT_PERMITTED = 'status="ok"', 'status="down"', 'status="not_permitted"'
RUNNING, WAITING = 'state="running"', 'state="waiting"'
NOT_SUCCESSFUL = 'result!="successful"'
CODE_5XX, KUBE_SYSTEM = 'code=~"5.."', 'namespace="kube-system"'
NOT_LONG_RUNNING = 'verb!~"WATCH|WATCHLIST|CONNECT|PROXY"'
READS = 'verb=~"LIST|GET"'
PHASE_RUNNING, PHASE_BAD = 'phase="Running"', 'phase=~"Pending|Failed|Unknown"'
CSTATE_RUNNING, UNARY = 'container_state="running"', 'grpc_type="unary"'
ME = 'label_app_kubernetes_io_name="kubebridge"'  # kubebridge's own pods
P99 = "histogram_quantile(0.99, sum by ({}le) ({}))"
Dash = dict[str, Any]


def p99(expr: str, by: str = "") -> str:
    return P99.format(f"{by}, " if by else "", expr)


def bounds(by: str, sel: tuple[str, ...], resource: str) -> str:
    """Requests and limits summed by `by`, as one query with a `bound` label (request, limit):
    a container may set either, both or none."""
    req = f"sum by ({by}) ({m(POD_REQUESTS, S.pods, *sel, resource)})"
    lim = f"sum by ({by}) ({m(POD_LIMITS, S.pods, *sel, resource)})"
    return (
        f'label_replace({req}, "bound", "request", "", "") or label_replace({lim}, "bound", "limit", "", "")'
    )


def events(matchers: tuple[str, ...], by: str = "namespace, involved_kind, workload, reason") -> list[dict]:
    """Warning (on) and Normal (off) Kubernetes events as annotations, scoped by `matchers`."""

    def q(kind: str) -> str:
        return f"sum by ({by}) ({rate(EVENTS, S.events, *matchers, kind, fn='increase')}) > 0"

    text, tags = "{{involved_kind}} {{namespace}}/{{workload}}", "namespace,workload,reason"
    return [
        annotation("Warning events", q(WARNING), "{{reason}}", text, tags, "orange"),
        annotation("Normal events", q(NORMAL), "{{reason}}", text, tags, "blue", enable=False),
    ]


def uid(name: str) -> str:
    return CONFIG.uid_prefix + name


def to_namespace(label: str = L.namespace) -> dict:
    return row_link("Namespace ${__value.raw}", uid("namespace"), [label])


def to_workload() -> dict:
    return row_link("Workload ${__value.raw}", uid("workload"), [L.namespace, L.workload_kind, L.workload])


def to_pod() -> dict:
    return row_link("Pod ${__value.raw}", uid("pod"), [L.namespace, L.pod])


def to_node() -> dict:
    return row_link("Node ${__value.raw}", uid("node"), [L.node])
