"""The workload drill-down: Cluster -> Namespace -> Workload -> Pod (its containers)."""

from __future__ import annotations

from common import (
    BY_WL,
    CLUSTER,
    CONTAINER,
    CPU,
    CTR_READY,
    CTR_STATE,
    Dash,
    EVENTS,
    HEALTHZ_UP,
    KIND,
    L,
    NOT_SUCCESSFUL,
    NS,
    PHASE_BAD,
    PHASE_RUNNING,
    POD,
    POD_LAST_TERMINATED,
    POD_LAST_TERMINATED_AT,
    POD_LIMITS,
    POD_PHASE,
    POD_READY,
    POD_REQUESTS,
    POD_RESTARTS,
    POD_TERMINATED,
    POD_WAITING,
    RES_CPU,
    RES_MEMORY,
    S,
    ST,
    WAITING,
    WARNING,
    WL,
    WORKLOAD,
    WSET,
    bounds,
    events,
    to_namespace,
    to_pod,
    to_workload,
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


# --------------------------------------------------------------------------- cluster
def cluster() -> Dash:
    """The whole cluster: what is broken, then capacity vs requests vs usage, per namespace."""
    v = [cluster_var(m("kubebridge_up"))]
    usage, wset = rate(CPU, S.containers, CLUSTER), m(WSET, S.containers, CLUSTER)
    by_ns = f"sum by ({L.namespace})"
    panels = [
        row("Work: what is broken?"),
        stat(
            "Pods not ready",
            f"count({m(POD_READY, S.pods, CLUSTER)} == 0) or vector(0)",
            "Pods whose Ready condition is false, cluster-wide.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat(
            "Containers waiting",
            f"sum({m(CTR_STATE, S.pods, CLUSTER, WAITING)})",
            "Containers not running for any waiting reason (CrashLoopBackOff, ImagePullBackOff, ...).",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Restarts",
            f"sum({rate(POD_RESTARTS, S.pods, CLUSTER, fn='increase')})",
            "Container restarts over the rate interval, cluster-wide.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Warning events",
            f"sum({rate(EVENTS, S.events, CLUSTER, WARNING, fn='increase')})",
            "Warning events (BackOff, Unhealthy, FailedScheduling, ...) over the rate interval.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Nodes",
            f"count({m(HEALTHZ_UP, S.healthz, CLUSTER)})",
            "Nodes whose kubelet kubebridge reads (one node agent each).",
            links=[
                {
                    "title": "Nodes",
                    "url": f"/d/{uid('nodes')}?var-datasource=${{datasource}}"
                    f"&var-cluster=${{cluster}}&${{__url_time_range}}",
                }
            ],
        ),
        stat(
            "Running pods", f"sum({m(POD_PHASE, S.pods, CLUSTER, PHASE_RUNNING)})", "Pods in phase Running."
        ),
        table(
            "Problems by namespace",
            [
                (f"{by_ns} ({m(CTR_STATE, S.pods, CLUSTER, WAITING)})", ""),
                (f"{by_ns} ({rate(POD_RESTARTS, S.pods, CLUSTER, fn='increase')})", ""),
                (f"{by_ns} (1 - {m(POD_READY, S.pods, CLUSTER)})", ""),
                (f"{by_ns} ({rate(EVENTS, S.events, CLUSTER, WARNING, fn='increase')})", ""),
            ],
            "Per namespace: containers waiting, restarts and warning events over the rate interval, pods not "
            "ready. Click a namespace to open it.",
            w=12,
            hide=("Time",),
            links={L.namespace: to_namespace()},
            rename={
                "Value #A": "waiting",
                "Value #B": "restarts",
                "Value #C": "not ready",
                "Value #D": "warnings",
            },
        ),
        timeseries(
            "Warning events by reason",
            [(f"sum by (reason) ({rate(EVENTS, S.events, CLUSTER, WARNING, fn='increase')})", "{{reason}}")],
            "Warning events per rate interval, by reason.",
        ),
        row("Resources: capacity, requests, usage"),
        timeseries(
            "CPU: capacity, requests, usage (cores)",
            [
                (f"sum({m('machine_cpu_cores', S.cadvisor, CLUSTER)})", "capacity"),
                (f"sum({m(POD_REQUESTS, S.pods, CLUSTER, RES_CPU)})", "requests"),
                (f"sum({m(POD_LIMITS, S.pods, CLUSTER, RES_CPU)})", "limits"),
                (f"sum({usage})", "usage"),
            ],
            "Requests above capacity: pods stay Pending. Usage far below requests: over-provisioned.",
        ),
        timeseries(
            "Memory: capacity, requests, working set",
            [
                (f"sum({m('machine_memory_bytes', S.cadvisor, CLUSTER)})", "capacity"),
                (f"sum({m(POD_REQUESTS, S.pods, CLUSTER, RES_MEMORY)})", "requests"),
                (f"sum({m(POD_LIMITS, S.pods, CLUSTER, RES_MEMORY)})", "limits"),
                (f"sum({wset})", "working set"),
            ],
            "Working set is what the OOM killer and evictions use.",
            unit="bytes",
        ),
        table(
            "Namespaces: usage against requests and limits",
            [
                (f"{by_ns} ({usage})", ""),
                (f"{by_ns} ({m(POD_REQUESTS, S.pods, CLUSTER, RES_CPU)})", ""),
                (f"{by_ns} ({wset})", ""),
                (f"{by_ns} ({m(POD_REQUESTS, S.pods, CLUSTER, RES_MEMORY)})", ""),
                (f"count by ({L.namespace}) ({m(POD_PHASE, S.pods, CLUSTER, PHASE_RUNNING)} == 1)", ""),
            ],
            "CPU (cores) and memory (bytes) used and requested per namespace, and running pods. Click a "
            "namespace to open it.",
            w=24,
            links={L.namespace: to_namespace()},
            rename={
                "Value #A": "CPU used",
                "Value #B": "CPU requested",
                "Value #C": "memory used",
                "Value #D": "memory requested",
                "Value #E": "pods",
            },
            units={"memory used": "bytes", "memory requested": "bytes"},
        ),
        timeseries(
            "CPU by namespace (cores)",
            [(f"{by_ns} ({usage})", "{{namespace}}")],
            "Container CPU per namespace.",
            stack=True,
            links=[series_link("Namespace ${__field.labels.namespace}", uid("namespace"), [L.namespace])],
        ),
        timeseries(
            "Memory working set by namespace",
            [(f"{by_ns} ({wset})", "{{namespace}}")],
            "Container working set per namespace.",
            unit="bytes",
            stack=True,
            links=[series_link("Namespace ${__field.labels.namespace}", uid("namespace"), [L.namespace])],
        ),
    ]
    return dashboard(
        "cluster",
        "Kubernetes / Cluster (kubebridge)",
        "Is anything broken, and is there room? Problems per namespace, then capacity against "
        "requests and usage.",
        v,
        panels,
        events((CLUSTER,)),
    )


# --------------------------------------------------------------------------- namespace
def namespace() -> Dash:
    """One namespace: its workloads' health and resources."""
    base = m(POD_PHASE, S.pods, CLUSTER)
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.namespace, "Namespace", base, multi=False, include_all=False),
    ]
    sel = (CLUSTER, NS)
    usage, wset = rate(CPU, S.containers, *sel), m(WSET, S.containers, *sel)
    by = f"sum by ({BY_WL})"
    wl_link = [
        series_link(
            "Workload ${__field.labels.workload}", uid("workload"), [L.namespace, L.workload_kind, L.workload]
        )
    ]
    panels = [
        row("Work: which workloads are unhealthy?"),
        stat(
            "Pods not ready",
            f"count({m(POD_READY, S.pods, *sel)} == 0) or vector(0)",
            "Pods of the namespace whose Ready condition is false.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat(
            "Containers waiting",
            f"sum({m(CTR_STATE, S.pods, *sel, WAITING)})",
            "Containers not running, for any waiting reason.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Restarts",
            f"sum({rate(POD_RESTARTS, S.pods, *sel, fn='increase')})",
            "Container restarts over the rate interval.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Warning events",
            f"sum({rate(EVENTS, S.events, *sel, WARNING, fn='increase')}) or vector(0)",
            "Warning events of the namespace over the rate interval.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Running pods", f"sum({m(POD_PHASE, S.pods, *sel, PHASE_RUNNING)})", "Pods in phase Running.", w=8
        ),
        table(
            "Workloads",
            [
                (f"{by} ({m(POD_READY, S.pods, *sel)})", ""),
                (f"count by ({BY_WL}) ({m(POD_READY, S.pods, *sel)})", ""),
                (f"{by} ({rate(POD_RESTARTS, S.pods, *sel, fn='increase')})", ""),
                (f"{by} ({usage})", ""),
                (f"{by} ({m(POD_REQUESTS, S.pods, *sel, RES_CPU)})", ""),
                (f"{by} ({m(POD_LIMITS, S.pods, *sel, RES_CPU)})", ""),
                (f"{by} ({wset})", ""),
                (f"{by} ({m(POD_REQUESTS, S.pods, *sel, RES_MEMORY)})", ""),
                (f"{by} ({m(POD_LIMITS, S.pods, *sel, RES_MEMORY)})", ""),
            ],
            "Every workload: pods ready of pods, restarts, CPU (cores) and memory (bytes) against requests "
            "and "
            "limits. Click a workload to open it.",
            w=24,
            h=9,
            links={L.workload: to_workload()},
            rename={
                "Value #A": "ready",
                "Value #B": "pods",
                "Value #C": "restarts",
                "Value #D": "CPU used",
                "Value #E": "CPU requests",
                "Value #F": "CPU limits",
                "Value #G": "memory used",
                "Value #H": "memory requests",
                "Value #I": "memory limits",
            },
            units={c: "bytes" for c in ("memory used", "memory requests", "memory limits")},
        ),
        table(
            "Waiting containers",
            f"max by ({BY_WL}, pod, container, reason) ({m(POD_WAITING, S.pods, *sel)}) > 0",
            "Containers waiting now, and why. Click the pod to open it.",
            hide=("Time", "Value"),
            links={L.pod: to_pod()},
        ),
        table(
            "Last terminations",
            f"max by ({BY_WL}, pod, container, reason, exit_code) "
            f"({m(POD_LAST_TERMINATED, S.pods, *sel)}) > 0",
            "Why each restarted container last ended (OOMKilled, Error, Completed) and its exit code.",
            hide=("Time", "Value"),
            links={L.pod: to_pod()},
        ),
        row("Resources"),
        timeseries(
            "CPU by workload (cores)",
            [(f"{by} ({usage})", "{{workload}}")],
            "Container CPU per workload.",
            stack=True,
            links=wl_link,
        ),
        timeseries(
            "Memory working set by workload",
            [(f"{by} ({wset})", "{{workload}}")],
            "Container working set per workload.",
            unit="bytes",
            stack=True,
            links=wl_link,
        ),
    ]
    return dashboard(
        "namespace",
        "Kubernetes / Namespace (kubebridge)",
        "Which workloads of a namespace are unhealthy, and what they use against their requests and limits.",
        v,
        panels,
        events((CLUSTER, NS)),
    )


# --------------------------------------------------------------------------- workload
def workload() -> Dash:
    """One workload (or several): pods' health first, then the resources they use."""
    base = m(CPU, S.containers, CLUSTER)
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.namespace, "Namespace", base),
        query_var(L.workload_kind, "Kind", m(CPU, S.containers, CLUSTER, NS)),
        query_var(L.workload, "Workload", m(CPU, S.containers, CLUSTER, NS, KIND)),
        query_var(L.pod, "Pod", m(CPU, S.containers, CLUSTER, NS, KIND, WORKLOAD)),
    ]
    sel = (WL, POD)
    usage, wset = rate(CPU, S.containers, *sel), m(WSET, S.containers, *sel)
    by_pod = f"sum by ({L.namespace}, {L.pod})"
    pod_link = [series_link("Pod ${__field.labels.pod}", uid("pod"), [L.namespace, L.pod])]
    panels = [
        row("Work: are the pods healthy?"),
        stat("Pods running", f"sum({m(POD_PHASE, S.pods, *sel, PHASE_RUNNING)})", "Pods in phase Running."),
        stat(
            "Pods not ready",
            f"count({m(POD_READY, S.pods, *sel)} == 0) or vector(0)",
            "Pods whose Ready condition is false.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat(
            "Pods pending or failed",
            f"sum({m(POD_PHASE, S.pods, *sel, PHASE_BAD)})",
            "Pods that are not running and not done.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Containers waiting",
            f"sum({m(CTR_STATE, S.pods, *sel, WAITING)})",
            "Containers that are not running, for any waiting reason.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Containers not ready",
            f"count({m(CTR_READY, S.pods, *sel)} == 0) or vector(0)",
            "Containers failing their readiness probe, or not started.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Restarts",
            f"sum({rate(POD_RESTARTS, S.pods, *sel, fn='increase')})",
            "Container restarts over the rate interval.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        table(
            "Pods",
            [
                (f"{by_pod} ({m(POD_READY, S.pods, *sel)})", ""),
                (f"{by_pod} ({m(POD_RESTARTS, S.pods, *sel)})", ""),
                (f"{by_pod} ({usage})", ""),
                (f"{by_pod} ({wset})", ""),
            ],
            "Each pod: ready, restarts since it started, CPU (cores) and working set (bytes). Click a pod to "
            "open it.",
            w=24,
            links={L.pod: to_pod()},
            rename={"Value #A": "ready", "Value #B": "restarts", "Value #C": "CPU", "Value #D": "memory"},
            units={"memory": "bytes"},
        ),
        table(
            "Waiting containers",
            f"max by ({BY_WL}, pod, container, reason) ({m(POD_WAITING, S.pods, *sel)}) > 0",
            "Containers waiting now, and why (CrashLoopBackOff, ImagePullBackOff, "
            "CreateContainerConfigError).",
            hide=("Time", "Value"),
            links={L.pod: to_pod()},
        ),
        timeseries(
            "Restarts by container",
            [
                (
                    f"sum by ({BY_WL}, container) ({rate(POD_RESTARTS, S.pods, *sel, fn='increase')})",
                    "{{workload}} {{container}}",
                )
            ],
            "Container restarts per rate interval.",
        ),
        timeseries(
            "Failed probes",
            [
                (
                    f"sum by ({L.pod}, probe_type) "
                    f"({rate('prober_probe_total', S.probes, *sel, NOT_SUCCESSFUL)}) > 0",
                    "{{probe_type}} {{pod}}",
                )
            ],
            "Liveness failures restart containers; readiness failures take pods out "
            "of Services. Empty: no probe fails (or the workload has none).",
            unit="ops",
            links=pod_link,
        ),
        row("CPU"),
        timeseries(
            "CPU usage vs requests and limits (cores)",
            [
                (f"sum({usage})", "usage"),
                (f"sum({m(POD_REQUESTS, S.pods, *sel, RES_CPU)})", "requests"),
                (f"sum({m(POD_LIMITS, S.pods, *sel, RES_CPU)})", "limits"),
            ],
            "Containers only (cgroup_kind=container): pod and sandbox cgroups would count twice.",
        ),
        timeseries(
            "CPU throttling by container",
            [
                (
                    f"sum by ({L.pod}, container) "
                    f"({rate('container_cpu_cfs_throttled_periods_total', S.containers, *sel)})"
                    f" / sum by ({L.pod}, container) "
                    f"({rate('container_cpu_cfs_periods_total', S.containers, *sel)})",
                    "{{pod}} {{container}}",
                )
            ],
            "Share of CFS periods in which the container hit its CPU limit.",
            unit="percentunit",
            links=pod_link,
        ),
        timeseries(
            "CPU usage by pod (cores)",
            [(f"{by_pod} ({usage})", "{{pod}}")],
            "Container CPU per pod.",
            links=pod_link,
        ),
        timeseries(
            "CPU pressure by pod",
            [
                (
                    f"{by_pod} ({rate('container_pressure_cpu_waiting_seconds_total', S.containers, *sel)})",
                    "{{pod}}",
                )
            ],
            "PSI: seconds per second some task waited for a CPU (cgroup v2).",
            unit="s",
            links=pod_link,
        ),
        row("Memory"),
        timeseries(
            "Memory working set vs requests and limits",
            [
                (f"sum({wset})", "working set"),
                (f"sum({m(POD_REQUESTS, S.pods, *sel, RES_MEMORY)})", "requests"),
                (f"sum({m(POD_LIMITS, S.pods, *sel, RES_MEMORY)})", "limits"),
            ],
            "Working set: what the OOM killer and kubelet evictions look at.",
            unit="bytes",
        ),
        timeseries(
            "Memory working set by pod",
            [(f"{by_pod} ({wset})", "{{pod}}")],
            "Container working set per pod.",
            unit="bytes",
            links=pod_link,
        ),
        timeseries(
            "OOM kills by container",
            [
                (
                    f"sum by ({L.pod}, container) "
                    f"({rate('container_oom_events_total', S.containers, *sel, fn='increase')})",
                    "{{pod}} {{container}}",
                )
            ],
            "OOM kills per rate interval (cAdvisor).",
            links=pod_link,
        ),
        timeseries(
            "Ephemeral storage by pod",
            [(f"{by_pod} ({m(ST + 'pod_ephemeral_storage_used_bytes', S.stats, *sel)})", "{{pod}}")],
            "Writable layers, logs and emptyDir volumes: what ephemeral-storage limits evict on.",
            unit="bytes",
            links=pod_link,
        ),
    ]
    return dashboard(
        "workload",
        "Kubernetes / Workload (kubebridge)",
        "Is this workload healthy (ready, waiting, restarts, probes), and what does it use?",
        v,
        panels,
        events((CLUSTER, NS, KIND, WORKLOAD)),
    )


# --------------------------------------------------------------------------- pod
def pod() -> Dash:
    """One pod and its containers."""
    base = m(POD_PHASE, S.pods, CLUSTER)
    v = [
        cluster_var(m("kubebridge_up")),
        query_var(L.namespace, "Namespace", base, multi=False, include_all=False),
        query_var(L.pod, "Pod", m(POD_PHASE, S.pods, CLUSTER, NS), multi=False, include_all=False),
        query_var(L.container, "Container", m(CTR_STATE, S.pods, CLUSTER, NS, POD)),
    ]
    sel = (CLUSTER, NS, POD)
    csel = (*sel, CONTAINER)
    usage, wset = rate(CPU, S.containers, *csel), m(WSET, S.containers, *csel)
    by_c = "sum by (container)"
    panels = [
        row("Work: is the pod healthy?"),
        stat(
            "Phase",
            f"max by (phase) ({m(POD_PHASE, S.pods, *sel)}) == 1",
            "The pod's phase.",
            legend="{{phase}}",
            w=6,
        ),
        stat(
            "Ready",
            f"max({m(POD_READY, S.pods, *sel)})",
            "1: the pod's Ready condition is true.",
            thresholds=[(None, "red"), (1, "green")],
            w=6,
        ),
        stat(
            "Restarts",
            f"sum({m(POD_RESTARTS, S.pods, *csel)})",
            "Restarts of its containers since it started.",
            thresholds=[(None, "green"), (1, "orange")],
            w=6,
        ),
        stat(
            "Node",
            f"max by (node) ({m(POD_PHASE, S.pods, *sel)})",
            "The node it runs on (click to open it).",
            legend="{{node}}",
            w=6,
            links=[series_link("Node ${__field.labels.node}", uid("node"), [L.node])],
        ),
        table(
            "Containers",
            [
                (f"max by (container, state) ({m(CTR_STATE, S.pods, *csel)}) == 1", ""),
                (f"max by (container) ({m(CTR_READY, S.pods, *csel)})", ""),
            ],
            "Each container's state (running, waiting, terminated) and readiness.",
            hide=("Time", "Value #A"),
            rename={"Value #B": "ready"},
        ),
        table(
            "Waiting and terminated",
            [
                (f"max by (container, reason) ({m(POD_WAITING, S.pods, *csel)}) > 0", ""),
                (f"max by (container, reason, exit_code) ({m(POD_TERMINATED, S.pods, *csel)}) > 0", ""),
            ],
            "Why a container waits, or how it ended.",
            hide=("Time", "Value #A", "Value #B"),
        ),
        table(
            "Last termination",
            f"max by (container, reason, exit_code) ({m(POD_LAST_TERMINATED_AT, S.pods, *csel)}) * 1000 > 0",
            "How and when each restarted container last ended.",
            unit="dateTimeAsIso",
            rename={"Value": "ended at"},
        ),
        timeseries(
            "Probe results",
            [
                (
                    f"sum by (container, probe_type, result) ({rate('prober_probe_total', S.probes, *csel)})",
                    "{{container}} {{probe_type}} {{result}}",
                )
            ],
            "Probe runs per second, by result.",
            unit="ops",
        ),
        row("Resources by container"),
        timeseries(
            "CPU (cores)",
            [
                (f"{by_c} ({usage})", "{{container}}"),
                (bounds("container", csel, RES_CPU), "{{container}} {{bound}}"),
            ],
            "CPU usage against each container's request and limit (those that are set).",
        ),
        timeseries(
            "Memory working set",
            [
                (f"{by_c} ({wset})", "{{container}}"),
                (bounds("container", csel, RES_MEMORY), "{{container}} {{bound}}"),
            ],
            "Working set against each container's request and limit (those that are set).",
            unit="bytes",
        ),
        timeseries(
            "Container filesystem",
            [
                (f"{by_c} ({m(ST + 'container_rootfs_used_bytes', S.stats, *csel)})", "{{container}} rootfs"),
                (f"{by_c} ({m(ST + 'container_logs_used_bytes', S.stats, *csel)})", "{{container}} logs"),
            ],
            "Writable layer and log usage per container (stats summary).",
            unit="bytes",
        ),
        timeseries(
            "Processes and threads",
            [
                (f"sum({m(ST + 'pod_processes', S.stats, *sel)})", "processes"),
                (f"{by_c} ({m('container_threads', S.containers, *csel)})", "{{container}} threads"),
            ],
            "Processes of the pod (stats summary) and threads per container (cAdvisor).",
            w=12,
        ),
        timeseries(
            "Ephemeral storage",
            [
                (f"sum({m(ST + 'pod_ephemeral_storage_used_bytes', S.stats, *sel)})", "used"),
                (f"sum({m(ST + 'pod_ephemeral_storage_available_bytes', S.stats, *sel)})", "available"),
                (f"sum({m(ST + 'pod_ephemeral_storage_capacity_bytes', S.stats, *sel)})", "capacity"),
            ],
            "Writable layers, logs and emptyDir of the pod against the node filesystem that holds them: "
            "an ephemeral-storage limit or nodefs pressure evicts the pod.",
            unit="bytes",
        ),
        timeseries(
            "Ephemeral storage inodes",
            [
                (f"sum({m(ST + 'pod_ephemeral_storage_inodes_used', S.stats, *sel)})", "used"),
                (f"sum({m(ST + 'pod_ephemeral_storage_inodes_free', S.stats, *sel)})", "free"),
                (f"sum({m(ST + 'pod_ephemeral_storage_inodes', S.stats, *sel)})", "total"),
            ],
            "Inodes the pod's ephemeral storage uses: many small files exhaust them before bytes.",
        ),
    ]
    return dashboard(
        "pod",
        "Kubernetes / Pod (kubebridge)",
        "One pod: phase, readiness, why containers wait or ended, and each container's resources.",
        v,
        panels,
        events((CLUSTER, NS)),
    )
