"""Where workloads run: Nodes -> Node, Storage, Network, Kubelet."""

from __future__ import annotations

from common import (
    BY_WL,
    CLUSTER,
    CPU,
    CSTATE_RUNNING,
    Dash,
    HEALTHZ_CHECK,
    HEALTHZ_OK,
    HEALTHZ_RUNTIME,
    HEALTHZ_UP,
    L,
    NODE,
    NOT_SUCCESSFUL,
    NS,
    POD_READY,
    POD_RESTARTS,
    ROOT,
    RX,
    S,
    SLICES,
    ST,
    TX,
    WORKLOAD,
    WSET,
    events,
    p99,
    to_node,
    to_pod,
    uid,
)
from grafana import (
    cluster_var,
    dashboard,
    m,
    query_var,
    rate,
    row,
    series_link,
    stat,
    table,
    timeseries,
)


# --------------------------------------------------------------------------- nodes
def nodes() -> Dash:
    """Every node side by side."""
    v = [cluster_var(m("kubebridge_up"))]
    sel = (CLUSTER,)
    by = f"max by ({L.node})"
    node_link = [series_link("Node ${__field.labels.node}", uid("node"), [L.node])]
    panels = [
        row("Work: which nodes are in trouble?"),
        stat(
            "Kubelets not answering",
            f"count({m(HEALTHZ_UP, S.healthz, *sel)} == 0) or vector(0)",
            "Nodes whose kubelet does not answer /healthz.",
            thresholds=[(None, "green"), (1, "red")],
            w=6,
        ),
        stat(
            "Kubelets unhealthy",
            f"count({m(HEALTHZ_OK, S.healthz, *sel)} == 0) or vector(0)",
            "Nodes whose kubelet /healthz fails.",
            thresholds=[(None, "green"), (1, "red")],
            w=6,
        ),
        stat(
            "Evictions",
            f"sum({rate('kubelet_evictions', S.kubelet, *sel, fn='increase')})",
            "Pods evicted for node pressure over the rate interval.",
            thresholds=[(None, "green"), (1, "orange")],
            w=6,
        ),
        stat("Nodes", f"count({m(HEALTHZ_UP, S.healthz, *sel)})", "Nodes kubebridge reads.", w=6),
        table(
            "Nodes",
            [
                (f"{by} ({m(HEALTHZ_OK, S.healthz, *sel)})", ""),
                (f"{by} ({m('kubelet_running_pods', S.kubelet, *sel)})", ""),
                (
                    f"sum by ({L.node}) ({rate(CPU, S.system, *sel, ROOT)}) / {by} "
                    f"({m('machine_cpu_cores', S.cadvisor, *sel)})",
                    "",
                ),
                (
                    f"sum by ({L.node}) ({m(WSET, S.system, *sel, ROOT)}) / {by} "
                    f"({m('machine_memory_bytes', S.cadvisor, *sel)})",
                    "",
                ),
                (
                    f"{by} ({m(ST + 'node_fs_used_bytes', S.stats, *sel)}) / {by} "
                    f"({m(ST + 'node_fs_capacity_bytes', S.stats, *sel)})",
                    "",
                ),
                (
                    f"{by} ({m(ST + 'node_processes', S.stats, *sel)}) / {by} "
                    f"({m(ST + 'node_processes_max', S.stats, *sel)})",
                    "",
                ),
            ],
            "Per node: kubelet healthy, running pods, CPU, memory, root filesystem and PID use (share of "
            "capacity). Click a node to open it.",
            w=24,
            links={L.node: to_node()},
            rename={
                "Value #A": "healthy",
                "Value #B": "pods",
                "Value #C": "CPU",
                "Value #D": "memory",
                "Value #E": "filesystem",
                "Value #F": "PIDs",
            },
            units={c: "percentunit" for c in ("CPU", "memory", "filesystem", "PIDs")},
        ),
        row("Resources"),
        timeseries(
            "CPU utilisation",
            [
                (
                    f"sum by ({L.node}) ({rate(CPU, S.system, *sel, ROOT)}) / {by} "
                    f"({m('machine_cpu_cores', S.cadvisor, *sel)})",
                    "{{node}}",
                )
            ],
            "The node's cgroup root against its cores.",
            unit="percentunit",
            links=node_link,
        ),
        timeseries(
            "Memory utilisation",
            [
                (
                    f"sum by ({L.node}) ({m(WSET, S.system, *sel, ROOT)}) / {by} "
                    f"({m('machine_memory_bytes', S.cadvisor, *sel)})",
                    "{{node}}",
                )
            ],
            "The node's working set against its memory.",
            unit="percentunit",
            links=node_link,
        ),
        timeseries(
            "Running pods",
            [(f"{by} ({m('kubelet_running_pods', S.kubelet, *sel)})", "{{node}}")],
            "Pods with a running sandbox, per node (kubelet).",
            links=node_link,
        ),
        timeseries(
            "Node CPU (resource metrics)",
            [(f"sum by ({L.node}) ({rate('node_cpu_usage_seconds_total', S.resource, *sel)})", "{{node}}")],
            "The kubelet's /metrics/resource view (what metrics-server and the HPA read).",
            links=node_link,
        ),
        timeseries(
            "Node memory (resource metrics)",
            [(f"{by} ({m('node_memory_working_set_bytes', S.resource, *sel)})", "{{node}}")],
            "The kubelet's /metrics/resource working set, per node.",
            unit="bytes",
            links=node_link,
        ),
        timeseries(
            "Network by node",
            [
                (f"sum by ({L.node}) ({rate(RX, S.system, *sel, ROOT)})", "{{node}} receive"),
                (f"sum by ({L.node}) ({rate(TX, S.system, *sel, ROOT)})", "{{node}} transmit"),
            ],
            "The node's network interfaces (cgroup root).",
            unit="Bps",
            links=node_link,
        ),
    ]
    return dashboard(
        "nodes",
        "Kubernetes / Nodes (kubebridge)",
        "Which node is in trouble or full? Every node's kubelet health and use of CPU, memory, "
        "disk and PIDs.",
        v,
        panels,
        events((CLUSTER,)),
    )


def node() -> Dash:
    """One node: its kubelet's health, probes, and where the node's resources go."""
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.node, "Node", m(HEALTHZ_UP, S.healthz, CLUSTER), include_all=False, multi=False),
    ]
    sel = (CLUSTER, NODE)
    panels = [
        row("Kubelet health"),
        stat(
            "kubelet answers",
            f"min({m(HEALTHZ_UP, S.healthz, *sel)})",
            "1: the kubelet answers /healthz (healthy or not).",
            thresholds=[(None, "red"), (1, "green")],
            w=3,
        ),
        stat(
            "Runtime healthy",
            f"min({m(HEALTHZ_RUNTIME, S.healthz, *sel)})",
            "The kubelet's sync loop check: 0 when the container runtime or PLEG is unhealthy.",
            thresholds=[(None, "red"), (1, "green")],
            w=3,
        ),
        stat(
            "Running pods",
            f"sum({m('kubelet_running_pods', S.kubelet, *sel)})",
            "Pods with a running sandbox (kubelet).",
            w=3,
        ),
        stat(
            "Running containers",
            f"sum({m('kubelet_running_containers', S.kubelet, *sel, CSTATE_RUNNING)})",
            "Containers running (kubelet).",
            w=3,
        ),
        stat(
            "Health checks failing",
            f"count({m(HEALTHZ_CHECK, S.healthz, *sel)} == 0) or vector(0)",
            "kubelet /healthz checks that fail.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat("CPU cores", f"max({m('machine_cpu_cores', S.cadvisor, *sel)})", "Logical CPUs of the node."),
        stat(
            "Memory",
            f"max({m('machine_memory_bytes', S.cadvisor, *sel)})",
            "Memory of the node.",
            unit="bytes",
        ),
        table(
            "Pods on this node",
            [
                (f"max by ({L.namespace}, {L.pod}) ({m(POD_READY, S.pods, *sel)})", ""),
                (f"sum by ({L.namespace}, {L.pod}) ({m(POD_RESTARTS, S.pods, *sel)})", ""),
            ],
            "Each pod on the node: ready, restarts. Click a pod to open it.",
            w=12,
            links={L.pod: to_pod()},
            rename={"Value #A": "ready", "Value #B": "restarts"},
        ),
        timeseries(
            "PLEG relist duration p99",
            [(p99(rate("kubelet_pleg_relist_duration_seconds_bucket", S.kubelet, *sel)), "p99")],
            "Slow relists turn the node NotReady (PLEG is not healthy).",
            unit="s",
        ),
        timeseries(
            "Runtime operation errors",
            [
                (
                    "sum by (operation_type) "
                    f"({rate('kubelet_runtime_operations_errors_total', S.kubelet, *sel)})",
                    "{{operation_type}}",
                )
            ],
            "Failed CRI calls per second, by operation.",
            unit="ops",
        ),
        timeseries(
            "Evictions",
            [
                (
                    f"sum by (eviction_signal) ({rate('kubelet_evictions', S.kubelet, *sel, fn='increase')})",
                    "{{eviction_signal}}",
                )
            ],
            "Pods evicted per rate interval, by the pressure signal.",
        ),
        timeseries(
            "Failed probes by workload",
            [
                (
                    f"sum by ({BY_WL}, probe_type) "
                    f"({rate('prober_probe_total', S.probes, *sel, NOT_SUCCESSFUL)})",
                    "{{probe_type}} {{namespace}}/{{workload}}",
                )
            ],
            "Liveness failures restart containers; readiness failures take pods out of Services.",
            unit="ops",
        ),
        row("CPU and memory"),
        timeseries(
            "CPU: node, containers and system slices (cores)",
            [
                (f"sum({rate(CPU, S.system, *sel, ROOT)})", "node"),
                (f"sum({rate(CPU, S.containers, *sel)})", "containers"),
                (f"sum by (id) ({rate(CPU, S.system, *sel, SLICES)})", "{{id}}"),
            ],
            'id="/" is the whole node; system.slice holds the kubelet, the container runtime and OS '
            "services.",
        ),
        timeseries(
            "Memory working set: node, containers and system slices",
            [
                (f"sum({m(WSET, S.system, *sel, ROOT)})", "node"),
                (f"sum({m(WSET, S.containers, *sel)})", "containers"),
                (f"sum by (id) ({m(WSET, S.system, *sel, SLICES)})", "{{id}}"),
            ],
            "Where the node's memory goes.",
            unit="bytes",
        ),
        timeseries(
            "CPU by namespace (cores)",
            [(f"sum by ({L.namespace}) ({rate(CPU, S.containers, *sel)})", "{{namespace}}")],
            "Container CPU on this node per namespace.",
            stack=True,
        ),
        timeseries(
            "Pressure (PSI)",
            [
                (
                    f"sum({rate('container_pressure_cpu_waiting_seconds_total', S.system, *sel, ROOT)})",
                    "cpu some",
                ),
                (
                    f"sum({rate('container_pressure_memory_waiting_seconds_total', S.system, *sel, ROOT)})",
                    "memory some",
                ),
                (
                    f"sum({rate('container_pressure_io_waiting_seconds_total', S.system, *sel, ROOT)})",
                    "io some",
                ),
            ],
            "Seconds per second tasks waited for CPU, memory or I/O on the whole node.",
            unit="s",
        ),
        row("Filesystems and PIDs"),
        timeseries(
            "Filesystems used",
            [
                (
                    f"max({m(ST + 'node_fs_used_bytes', S.stats, *sel)}) / "
                    f"max({m(ST + 'node_fs_capacity_bytes', S.stats, *sel)})",
                    "nodefs",
                ),
                (
                    f"max({m(ST + 'node_imagefs_used_bytes', S.stats, *sel)}) / "
                    f"max({m(ST + 'node_imagefs_capacity_bytes', S.stats, *sel)})",
                    "imagefs",
                ),
                (
                    f"max({m(ST + 'node_containerfs_used_bytes', S.stats, *sel)}) / "
                    f"max({m(ST + 'node_containerfs_capacity_bytes', S.stats, *sel)})",
                    "containerfs",
                ),
            ],
            "The kubelet evicts pods when nodefs or imagefs runs low (default: below 10% and 15% available).",
            unit="percentunit",
            w=8,
        ),
        timeseries(
            "Inodes used",
            [
                (
                    f"max({m(ST + 'node_fs_inodes_used', S.stats, *sel)}) / "
                    f"max({m(ST + 'node_fs_inodes', S.stats, *sel)})",
                    "nodefs",
                ),
                (
                    f"1 - max({m(ST + 'node_imagefs_inodes_free', S.stats, *sel)}) / "
                    f"max({m(ST + 'node_imagefs_inodes', S.stats, *sel)})",
                    "imagefs",
                ),
            ],
            "Out of inodes is out of disk, whatever the bytes say.",
            unit="percentunit",
            w=8,
        ),
        timeseries(
            "PIDs",
            [
                (f"max({m(ST + 'node_processes', S.stats, *sel)})", "processes"),
                (f"max({m(ST + 'node_processes_max', S.stats, *sel)})", "limit"),
            ],
            "Processes on the node against the PID limit (pid.available eviction).",
            w=8,
        ),
    ]
    return dashboard(
        "node",
        "Kubernetes / Node (kubebridge)",
        "One node: is its kubelet healthy, what runs there, and is it short of CPU, memory, disk, "
        "inodes or PIDs?",
        v,
        panels,
        events((CLUSTER,)),
    )


# --------------------------------------------------------------------------- storage
def storage() -> Dash:
    """Persistent volume claims, pod volumes and ephemeral storage."""
    vol = "kubelet_volume_stats_"
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.namespace, "Namespace", m(vol + "capacity_bytes", S.kubelet, CLUSTER)),
        query_var("persistentvolumeclaim", "Claim", m(vol + "capacity_bytes", S.kubelet, CLUSTER, NS)),
    ]
    sel = (CLUSTER, NS, 'persistentvolumeclaim=~"$persistentvolumeclaim"')
    by = "max by (namespace, persistentvolumeclaim)"
    used = (
        f"{by} ({m(vol + 'used_bytes', S.kubelet, *sel)}) / "
        f"{by} ({m(vol + 'capacity_bytes', S.kubelet, *sel)})"
    )
    panels = [
        row("Persistent volume claims: will one fill up?"),
        table(
            "Claims",
            [
                (used, ""),
                (
                    f"{by} ({m(vol + 'inodes_used', S.kubelet, *sel)}) / {by} "
                    f"({m(vol + 'inodes', S.kubelet, *sel)})",
                    "",
                ),
                (
                    f"{by} ({m(vol + 'available_bytes', S.kubelet, *sel)}) / clamp_min({by} "
                    f"(deriv({m(vol + 'used_bytes', S.kubelet, *sel)}[1h])), 1e-9) / 86400",
                    "",
                ),
            ],
            "Each claim: bytes and inodes used, and days until full at the last hour's growth (huge when it "
            "does not grow).",
            w=24,
            unit="percentunit",
            rename={"Value #A": "used", "Value #B": "inodes used", "Value #C": "days to full"},
            units={"days to full": "d"},
        ),
        timeseries(
            "Claim usage",
            [(used, "{{namespace}}/{{persistentvolumeclaim}}")],
            "Share of each claim's capacity in use (kubelet volume stats).",
            unit="percentunit",
        ),
        timeseries(
            "Claim inodes free",
            [
                (
                    f"{by} ({m(vol + 'inodes_free', S.kubelet, *sel)})",
                    "{{namespace}}/{{persistentvolumeclaim}}",
                )
            ],
            "Free inodes per claim.",
            w=12,
        ),
        timeseries(
            "Claim bytes",
            [
                (f"{by} ({m(vol + 'used_bytes', S.kubelet, *sel)})", "{{persistentvolumeclaim}} used"),
                (
                    f"{by} ({m(vol + 'available_bytes', S.kubelet, *sel)})",
                    "{{persistentvolumeclaim}} available",
                ),
            ],
            "Used and available bytes per claim.",
            unit="bytes",
        ),
        timeseries(
            "Volume operations",
            [
                (
                    f"sum by (operation_name, volume_plugin) "
                    f"({rate('storage_operation_duration_seconds_count', S.kubelet, CLUSTER)})",
                    "{{operation_name}} {{volume_plugin}}",
                )
            ],
            "Mounts and unmounts per second, by volume plugin (kubelet).",
            unit="ops",
        ),
        row("Pod volumes and ephemeral storage (stats summary)"),
        timeseries(
            "Pod volumes used",
            [
                (
                    "topk(10, max by (namespace, pod, volume) "
                    f"({m(ST + 'volume_used_bytes', S.stats, CLUSTER, NS)}) / "
                    "max by (namespace, pod, volume) "
                    f"({m(ST + 'volume_capacity_bytes', S.stats, CLUSTER, NS)}))",
                    "{{namespace}}/{{pod}} {{volume}}",
                )
            ],
            "The ten fullest pod volumes (emptyDir, projected, configMap, claims).",
            unit="percentunit",
            links=[series_link("Pod ${__field.labels.pod}", uid("pod"), [L.namespace, L.pod])],
        ),
        timeseries(
            "Pod volume inodes used",
            [
                (
                    "topk(10, max by (namespace, pod, volume) "
                    f"({m(ST + 'volume_inodes_used', S.stats, CLUSTER, NS)}))",
                    "{{namespace}}/{{pod}} {{volume}}",
                )
            ],
            "The ten pod volumes with most inodes in use.",
        ),
        timeseries(
            "Ephemeral storage by pod",
            [
                (
                    "topk(10, max by (namespace, pod) "
                    f"({m(ST + 'pod_ephemeral_storage_used_bytes', S.stats, CLUSTER, NS)}))",
                    "{{namespace}}/{{pod}}",
                )
            ],
            "Writable layers, logs and emptyDir: what ephemeral-storage limits evict on.",
            unit="bytes",
            links=[series_link("Pod ${__field.labels.pod}", uid("pod"), [L.namespace, L.pod])],
        ),
        timeseries(
            "Container logs by pod",
            [
                (
                    "topk(10, sum by (namespace, pod) "
                    f"({m(ST + 'container_logs_used_bytes', S.stats, CLUSTER, NS)}))",
                    "{{namespace}}/{{pod}}",
                )
            ],
            "Log bytes kept on the node, per pod.",
            unit="bytes",
        ),
    ]
    return dashboard(
        "storage",
        "Kubernetes / Storage (kubebridge)",
        "Which volumes fill up, and when? Claims (bytes, inodes, days to full), pod volumes and "
        "ephemeral storage.",
        v,
        panels,
        events((CLUSTER, NS)),
    )


# --------------------------------------------------------------------------- network
def network() -> Dash:
    """Pod network by namespace, workload and pod (the sandbox cgroup owns the pod's network)."""
    base = m(RX, S.sandboxes, CLUSTER)
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.namespace, "Namespace", base),
        query_var(L.workload, "Workload", m(RX, S.sandboxes, CLUSTER, NS)),
    ]
    sel = (S.sandboxes, CLUSTER, NS, WORKLOAD)
    wl_link = [
        series_link(
            "Workload ${__field.labels.workload}", uid("workload"), [L.namespace, L.workload_kind, L.workload]
        )
    ]
    panels = [
        row("Errors and drops"),
        timeseries(
            "Dropped packets by workload",
            [
                (
                    f"sum by ({BY_WL}) ({rate('container_network_receive_packets_dropped_total', *sel)})",
                    "rx {{namespace}}/{{workload}}",
                ),
                (
                    f"sum by ({BY_WL}) ({rate('container_network_transmit_packets_dropped_total', *sel)})",
                    "tx {{namespace}}/{{workload}}",
                ),
            ],
            "Packets dropped per second.",
            unit="pps",
            links=wl_link,
        ),
        timeseries(
            "Errors by workload",
            [
                (
                    f"sum by ({BY_WL}) ({rate('container_network_receive_errors_total', *sel)})",
                    "rx {{namespace}}/{{workload}}",
                ),
                (
                    f"sum by ({BY_WL}) ({rate('container_network_transmit_errors_total', *sel)})",
                    "tx {{namespace}}/{{workload}}",
                ),
            ],
            "Interface errors per second.",
            unit="pps",
            links=wl_link,
        ),
        row("Bandwidth"),
        timeseries(
            "Receive by namespace",
            [(f"sum by ({L.namespace}) ({rate(RX, *sel)})", "{{namespace}}")],
            "Bytes received per second, per namespace.",
            unit="Bps",
            stack=True,
        ),
        timeseries(
            "Transmit by namespace",
            [(f"sum by ({L.namespace}) ({rate(TX, *sel)})", "{{namespace}}")],
            "Bytes sent per second, per namespace.",
            unit="Bps",
            stack=True,
        ),
        timeseries(
            "Receive by workload",
            [(f"sum by ({BY_WL}) ({rate(RX, *sel)})", "{{namespace}}/{{workload}}")],
            "Per pod: the sandbox cgroup owns the pod's network namespace.",
            unit="Bps",
            links=wl_link,
        ),
        timeseries(
            "Transmit by workload",
            [(f"sum by ({BY_WL}) ({rate(TX, *sel)})", "{{namespace}}/{{workload}}")],
            "Bytes sent per second, per workload.",
            unit="Bps",
            links=wl_link,
        ),
        table(
            "Pods",
            [
                (f"sum by (namespace, pod) ({rate(RX, *sel)})", ""),
                (f"sum by (namespace, pod) ({rate(TX, *sel)})", ""),
                (f"sum by (namespace, pod) ({rate('container_network_receive_packets_total', *sel)})", ""),
            ],
            "Each pod's receive and transmit bytes per second and packets received per second. Click a pod "
            "to "
            "open it.",
            w=24,
            unit="Bps",
            links={L.pod: to_pod()},
            rename={"Value #A": "receive", "Value #B": "transmit", "Value #C": "packets in"},
        ),
    ]
    return dashboard(
        "network",
        "Kubernetes / Network (kubebridge)",
        "Who drops packets, and who moves the bytes? Pod network by namespace, workload and pod.",
        v,
        panels,
        events((CLUSTER, NS)),
    )


# --------------------------------------------------------------------------- kubelet
def kubelet() -> Dash:
    """The kubelets in depth."""
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.node, "Node", m("kubelet_running_pods", S.kubelet, CLUSTER)),
    ]
    sel = (CLUSTER, NODE)
    by = f"max by ({L.node})"
    node_link = [series_link("Node ${__field.labels.node}", uid("node"), [L.node])]
    panels = [
        row("Work: is the kubelet keeping up?"),
        timeseries(
            "Pod start duration p99",
            [(p99(rate("kubelet_pod_start_duration_seconds_bucket", S.kubelet, *sel), L.node), "{{node}}")],
            "From the kubelet seeing a pod to it running (image pulls included).",
            unit="s",
            links=node_link,
        ),
        timeseries(
            "PLEG relist duration p99",
            [(p99(rate("kubelet_pleg_relist_duration_seconds_bucket", S.kubelet, *sel), L.node), "{{node}}")],
            "Above 3 minutes the node turns NotReady (PLEG is not healthy).",
            unit="s",
            links=node_link,
        ),
        timeseries(
            "Runtime operations",
            [
                (
                    f"sum by (operation_type) ({rate('kubelet_runtime_operations_total', S.kubelet, *sel)})",
                    "{{operation_type}}",
                )
            ],
            "CRI calls per second.",
            unit="ops",
        ),
        timeseries(
            "Runtime operation errors",
            [
                (
                    f"sum by ({L.node}, operation_type) "
                    f"({rate('kubelet_runtime_operations_errors_total', S.kubelet, *sel)})",
                    "{{node}} {{operation_type}}",
                )
            ],
            "Failed CRI calls per second.",
            unit="ops",
            links=node_link,
        ),
        timeseries(
            "Runtime operation latency p99",
            [
                (
                    p99(
                        rate("kubelet_runtime_operations_duration_seconds_bucket", S.kubelet, *sel),
                        "operation_type",
                    ),
                    "{{operation_type}}",
                )
            ],
            "CRI call latency by operation.",
            unit="s",
        ),
        timeseries(
            "Containers started",
            [
                (
                    f"sum by ({L.node}, container_type) "
                    f"({rate('kubelet_started_containers_total', S.kubelet, *sel)})",
                    "{{node}} {{container_type}}",
                )
            ],
            "Container and sandbox starts per second: a crash loop shows here.",
            unit="ops",
            links=node_link,
        ),
        row("API server client"),
        timeseries(
            "Requests by code",
            [(f"sum by (code) ({rate('rest_client_requests_total', S.kubelet, *sel)})", "{{code}}")],
            "The kubelet's requests to the API server, by HTTP code.",
            unit="reqps",
        ),
        timeseries(
            "Request latency p99",
            [(p99(rate("rest_client_request_duration_seconds_bucket", S.kubelet, *sel), "verb"), "{{verb}}")],
            "The kubelet's API request latency, by verb.",
            unit="s",
        ),
        row("Volumes and certificates"),
        timeseries(
            "Storage operation latency p99",
            [
                (
                    p99(rate("storage_operation_duration_seconds_bucket", S.kubelet, *sel), "operation_name"),
                    "{{operation_name}}",
                )
            ],
            "Volume mount and unmount latency.",
            unit="s",
        ),
        timeseries(
            "Storage operation errors",
            [
                (
                    "sum by (operation_name, volume_plugin) "
                    f"({m('storage_operation_errors_total', S.kubelet, *sel)})",
                    "{{operation_name}} {{volume_plugin}}",
                )
            ],
            "Failed volume operations since the kubelet started.",
        ),
        timeseries(
            "Client certificate expiry",
            [(f"{by} ({m('kubelet_certificate_manager_client_ttl_seconds', S.kubelet, *sel)})", "{{node}}")],
            "Time until the kubelet's client certificate expires; rotation should keep it far from 0.",
            unit="s",
            links=node_link,
        ),
        timeseries(
            "Running containers by state",
            [
                (
                    f"sum by (container_state) ({m('kubelet_running_containers', S.kubelet, *sel)})",
                    "{{container_state}}",
                )
            ],
            "Containers per state, all nodes selected.",
        ),
    ]
    return dashboard(
        "kubelet",
        "Kubernetes / Kubelet (kubebridge)",
        "Is the kubelet keeping up? Pod start and PLEG latency, runtime errors, API client, volume "
        "operations and certificate expiry.",
        v,
        panels,
        events((CLUSTER,)),
    )
