"""The control plane (API server SLO, etcd, kube-system) and kubebridge itself."""

from __future__ import annotations

from config import CONFIG
from common import (
    L,
    to_node,
    to_pod,
    uid,
    ETCD_V2,
    AD_DURATION,
    AD_SERIES,
    AD_TARGETS,
    AD_UP,
    APISERVER_CHECK,
    APISERVER_HEALTHY,
    CLUSTER,
    CODE_5XX,
    COMPONENTS,
    CPU,
    DOWN,
    Dash,
    ETCD_DB,
    ETCD_HAS_LEADER,
    ETCD_INFO,
    ETCD_MEMBERS_UP,
    ETCD_MEMBER_HEALTHY,
    ETCD_MEMBER_LEADER,
    ETCD_MEMBER_UP,
    ETCD_TERM,
    EVENTS_LAST_SEEN,
    EVENTS_LEADER,
    KS_CONTAINERS,
    KS_READY,
    KS_RESTARTS,
    KS_WAITING,
    KUBE_SYSTEM,
    ME,
    NOT_LONG_RUNNING,
    NOT_PERMITTED,
    READS,
    S,
    UNARY,
    WSET,
    events,
    p99,
)
from grafana import (
    series_link,
    cluster_var,
    dashboard,
    m,
    query_var,
    rate,
    row,
    stat,
    table,
    timeseries,
)


# --------------------------------------------------------------------------- control plane
def control_plane() -> Dash:
    """API server SLO first, then priority and fairness, etcd, and kube-system."""
    v = [cluster_var(m("kubebridge_up", S.apiserver))]
    sel = (S.apiserver, CLUSTER)
    req = "apiserver_request_total"
    slo = CONFIG.apiserver_slo
    sli = "apiserver_request_sli_duration_seconds"
    le = f'le="{CONFIG.apiserver_read_latency_s:g}"'
    good_reads = f"sum({rate(sli + '_bucket', *sel, READS, le)})"
    all_reads = f"sum({rate(sli + '_count', *sel, READS)})"
    leader_start = m(ETCD_V2 + "self_leader_start_timestamp_seconds", S.etcd_v2, CLUSTER)
    v2_recv = rate(ETCD_V2 + "self_recv_append_requests_total", S.etcd_v2, CLUSTER)
    v2_send = rate(ETCD_V2 + "self_send_append_requests_total", S.etcd_v2, CLUSTER)
    v2_start = m(ETCD_V2 + "self_start_timestamp_seconds", S.etcd_v2, CLUSTER)
    v2_ops = rate(ETCD_V2 + "store_operations_total", S.etcd_v2, CLUSTER)
    panels = [
        row("API server: availability and error budget"),
        stat(
            "Availability",
            f"1 - sum({rate(req, *sel, CODE_5XX)}) / sum({rate(req, *sel)})",
            f"Share of requests without a 5xx over the rate interval (SLO {slo:.0%}).",
            unit="percentunit",
            thresholds=[(None, "red"), (slo, "green")],
            w=6,
        ),
        stat(
            "Error budget left",
            f"1 - (sum({rate(req, *sel, CODE_5XX)}) / sum({rate(req, *sel)})) / {1 - slo:g}",
            f"How much of the {1 - slo:.0%} error budget the current 5xx ratio leaves.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.25, "orange"), (0.5, "green")],
            w=6,
        ),
        stat(
            "Reads within latency target",
            f"{good_reads} / {all_reads}",
            f"Share of LIST/GET requests served under {CONFIG.apiserver_read_latency_s:g} s (SLI histogram: "
            "webhook and priority and fairness waits excluded).",
            unit="percentunit",
            thresholds=[(None, "red"), (slo, "green")],
            w=6,
        ),
        stat(
            "Health checks failing",
            f"count({m(APISERVER_CHECK, *sel)} == 0) or vector(0)",
            "API server /livez and /readyz checks that fail.",
            thresholds=[(None, "green"), (1, "red")],
            w=6,
        ),
        timeseries(
            "Requests by code",
            [(f"sum by (code) ({rate(req, *sel)})", "{{code}}")],
            "Requests per second by HTTP code.",
            unit="reqps",
        ),
        timeseries(
            "5xx ratio by resource",
            [
                (
                    f"sum by (resource) ({rate(req, *sel, CODE_5XX)}) / sum by (resource) "
                    f"({rate(req, *sel)})",
                    "{{resource}}",
                )
            ],
            "Server errors per resource.",
            unit="percentunit",
        ),
        timeseries(
            "Request latency p99 by verb",
            [
                (
                    p99(rate("apiserver_request_duration_seconds_bucket", *sel, NOT_LONG_RUNNING), "verb"),
                    "{{verb}}",
                )
            ],
            "Long-running verbs (WATCH, CONNECT, PROXY) are left out.",
            unit="s",
        ),
        timeseries(
            "Terminated requests",
            [(f"sum by (code) ({rate('apiserver_request_terminations_total', *sel)})", "{{code}}")],
            "Requests the API server dropped to protect itself.",
            unit="reqps",
        ),
        row("API server: saturation (priority and fairness, watches, objects)"),
        timeseries(
            "In-flight requests",
            [
                (
                    f"sum by (request_kind) ({m('apiserver_current_inflight_requests', *sel)})",
                    "{{request_kind}}",
                )
            ],
            "Mutating and read-only requests being served.",
        ),
        timeseries(
            "Queued requests by priority level",
            [
                (
                    f"sum by (priority_level) ({m('apiserver_flowcontrol_current_inqueue_requests', *sel)})",
                    "{{priority_level}}",
                )
            ],
            "Requests waiting in API Priority and Fairness queues.",
        ),
        timeseries(
            "Queue wait p99 by priority level",
            [
                (
                    p99(
                        rate("apiserver_flowcontrol_request_wait_duration_seconds_bucket", *sel),
                        "priority_level",
                    ),
                    "{{priority_level}}",
                )
            ],
            "Time requests wait in APF queues.",
            unit="s",
        ),
        timeseries(
            "Long-running requests (watches)",
            [(f"sum by (resource) ({m('apiserver_longrunning_requests', *sel)})", "{{resource}}")],
            "Open WATCH and CONNECT requests by resource.",
        ),
        timeseries(
            "Watch events sent",
            [(f"sum by (kind) ({rate('apiserver_watch_events_total', *sel)})", "{{kind}}")],
            "Watch events per second by kind.",
            unit="ops",
        ),
        timeseries(
            "Stored objects",
            [(f"topk(10, max by (resource) ({m('apiserver_storage_objects', *sel)}))", "{{resource}}")],
            "Objects in etcd per resource (the ten largest).",
        ),
        timeseries(
            "etcd request latency p99 (from the API server)",
            [(p99(rate("etcd_request_duration_seconds_bucket", *sel), "operation"), "{{operation}}")],
            "The API server's view of its storage.",
            unit="s",
        ),
        row("etcd"),
        stat(
            "Has leader",
            f"min({m(ETCD_HAS_LEADER, S.etcd, CLUSTER)})",
            "1: the etcd cluster has a leader.",
            thresholds=[(None, "red"), (1, "green")],
        ),
        stat(
            "Members up", f"sum({m(ETCD_MEMBERS_UP, S.etcd, CLUSTER)})", "Members that answered kubebridge."
        ),
        stat(
            "Members healthy",
            f"sum({m(ETCD_MEMBER_HEALTHY, S.etcd, CLUSTER)})",
            "Members whose /health is true.",
        ),
        stat(
            "Leader changes",
            f"max({rate('etcd_server_leader_changes_seen_total', S.etcd, CLUSTER, fn='increase')})",
            "Leader elections in the rate interval, on the member that saw most.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "Quota used",
            f"max({m('etcd_mvcc_db_total_size_in_bytes', S.etcd, CLUSTER)} / "
            f"{m('etcd_server_quota_backend_bytes', S.etcd, CLUSTER)})",
            "At 100% etcd raises NOSPACE and refuses writes.",
            unit="percentunit",
            thresholds=[(None, "green"), (0.8, "orange"), (0.95, "red")],
        ),
        stat(
            "Fragmentation",
            f"1 - max({m('etcd_mvcc_db_total_size_in_use_in_bytes', S.etcd, CLUSTER)} / "
            f"{m('etcd_mvcc_db_total_size_in_bytes', S.etcd, CLUSTER)})",
            "Share of the database file not in use: defragment above about 50%.",
            unit="percentunit",
            thresholds=[(None, "green"), (0.5, "orange")],
        ),
        table(
            "Members",
            [
                (f"max by (member) ({m(ETCD_MEMBER_UP, S.etcd, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_MEMBER_LEADER, S.etcd, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_DB, S.etcd, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_TERM, S.etcd, CLUSTER)})", ""),
                (f"max by (member, version) ({m(ETCD_INFO, S.etcd, CLUSTER)})", ""),
            ],
            "Each member: up, leader, database size (bytes), raft term, version.",
            w=12,
            hide=("Time", "Value #E"),
            rename={"Value #A": "up", "Value #B": "leader", "Value #C": "db size", "Value #D": "term"},
            units={"db size": "bytes"},
        ),
        timeseries(
            "gRPC requests by code",
            [
                (
                    f"sum by (grpc_code) ({rate('grpc_server_handled_total', S.etcd, CLUSTER, UNARY)})",
                    "{{grpc_code}}",
                )
            ],
            "etcd's unary gRPC calls per second by code (non-OK: failures).",
            unit="ops",
        ),
        timeseries(
            "WAL fsync and backend commit p99",
            [
                (
                    p99(rate("etcd_disk_wal_fsync_duration_seconds_bucket", S.etcd, CLUSTER), "member"),
                    "fsync {{member}}",
                ),
                (
                    p99(rate("etcd_disk_backend_commit_duration_seconds_bucket", S.etcd, CLUSTER), "member"),
                    "commit {{member}}",
                ),
            ],
            "Above about 10 ms (fsync) and 25 ms (commit) the disk is too slow for etcd.",
            unit="s",
        ),
        timeseries(
            "Proposals",
            [
                (
                    f"sum by (member) ({rate('etcd_server_proposals_committed_total', S.etcd, CLUSTER)})",
                    "committed {{member}}",
                ),
                (
                    f"sum by (member) ({rate('etcd_server_proposals_failed_total', S.etcd, CLUSTER)})",
                    "failed {{member}}",
                ),
                (
                    f"max by (member) ({m('etcd_server_proposals_pending', S.etcd, CLUSTER)})",
                    "pending {{member}}",
                ),
            ],
            "Raft proposals: failures mean leader trouble or lost quorum.",
        ),
        timeseries(
            "Database size",
            [
                (
                    f"max by (member) ({m('etcd_mvcc_db_total_size_in_bytes', S.etcd, CLUSTER)})",
                    "{{member}} total",
                ),
                (
                    f"max by (member) ({m('etcd_mvcc_db_total_size_in_use_in_bytes', S.etcd, CLUSTER)})",
                    "{{member}} in use",
                ),
            ],
            "Total against in-use size: the gap is fragmentation.",
            unit="bytes",
        ),
        row("etcd v2 API (legacy clusters: etcd_v2 collector)"),
        table(
            "v2 members",
            [
                (f"max by (member, name, id) ({m(ETCD_V2 + 'self_info', S.etcd_v2, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_V2 + 'self_is_leader', S.etcd_v2, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_V2 + 'self_leader_confirmed', S.etcd_v2, CLUSTER)})", ""),
                (f"max by (member) ({m(ETCD_V2 + 'self_leader_uptime_seconds', S.etcd_v2, CLUSTER)})", ""),
                (
                    f"time() - max by (member) ({v2_start})",
                    "",
                ),
            ],
            "Each member as its /v2/stats/self reports it: leader, leader confirmed, leader uptime and "
            "member uptime (s).",
            hide=("Time", "Value #A"),
            rename={
                "Value #B": "leader",
                "Value #C": "confirmed",
                "Value #D": "leader uptime",
                "Value #E": "uptime",
            },
            units={"leader uptime": "s", "uptime": "s"},
        ),
        timeseries(
            "v2 raft append requests",
            [
                (f"sum by (member) ({v2_recv})", "received {{member}}"),
                (f"sum by (member) ({v2_send})", "sent {{member}}"),
            ],
            "Raft append requests per second: the leader sends, followers receive.",
            unit="ops",
            w=6,
        ),
        timeseries(
            "v2 store operations",
            [
                (
                    f"sum by (operation, result) ({v2_ops})",
                    "{{operation}} {{result}}",
                ),
                (f"sum({rate(ETCD_V2 + 'store_expires_total', S.etcd_v2, CLUSTER)})", "expired keys"),
            ],
            "The v2 key-value store's operations per second, by result, and TTL expiries.",
            unit="ops",
            w=6,
        ),
        timeseries(
            "v2 watchers",
            [(f"max by (member) ({m(ETCD_V2 + 'store_watchers', S.etcd_v2, CLUSTER)})", "{{member}}")],
            "Open v2 watches per member.",
            w=6,
        ),
        timeseries(
            "v2 leader since",
            [(f"time() - max by (member) ({leader_start})", "{{member}}")],
            "Seconds since the current leader took over; a short time means an election just happened.",
            unit="s",
            w=6,
        ),
        row("kube-system pods (from the API server, in one place)"),
        table(
            "Not ready",
            f"max by (namespace, workload_kind, workload, pod, node) "
            f"({m(KS_READY, S.kube_system, CLUSTER)}) == 0",
            "System pods whose Ready condition is false. Click the pod or the node to open it.",
            hide=("Time", "Value"),
            links={L.pod: to_pod(), L.node: to_node()},
            w=8,
        ),
        table(
            "Waiting",
            f"max by (namespace, workload, pod, container, reason) "
            f"({m(KS_WAITING, S.kube_system, CLUSTER)}) > 0",
            "System containers waiting now, and why. Click the pod to open it.",
            hide=("Time", "Value"),
            links={L.pod: to_pod()},
            w=8,
        ),
        timeseries(
            "Containers by state",
            [(f"sum by (state) ({m(KS_CONTAINERS, S.kube_system, CLUSTER)})", "{{state}}")],
            "kube-system containers per state.",
            w=8,
        ),
        timeseries(
            "Restarts",
            [
                (
                    "sum by (workload, container) "
                    f"({rate(KS_RESTARTS, S.kube_system, CLUSTER, fn='increase')})",
                    "{{workload}} {{container}}",
                )
            ],
            "kube-system container restarts per rate interval.",
            w=8,
        ),
        table(
            "Health checks",
            [
                (f"min by (endpoint, check) ({m(APISERVER_CHECK, *sel)})", ""),
                (f"min by (endpoint) ({m(APISERVER_HEALTHY, *sel)})", ""),
            ],
            "/livez, /readyz and /healthz: each check and each endpoint, 1 passing, 0 failing.",
            w=8,
        ),
        table(
            "Component statuses",
            f"min by (component) ({m(COMPONENTS, *sel)})",
            "The deprecated ComponentStatus API (scheduler, controller-manager, etcd), where still served.",
            w=8,
        ),
    ]
    return dashboard(
        "control-plane",
        "Kubernetes / Control plane (kubebridge)",
        "Is the API server within its SLO, and why not? Availability and latency, priority and "
        "fairness, watches, etcd, and kube-system pods.",
        v,
        panels,
        events((CLUSTER, KUBE_SYSTEM)),
    )


# --------------------------------------------------------------------------- self
def self_() -> Dash:
    """kubebridge's view of its own sources."""
    v = [cluster_var(m("kubebridge_up")), query_var("collector", "Source", m("kubebridge_up", CLUSTER))]
    src = 'collector=~"$collector"'
    status = "kubebridge_source_status"
    panels = [
        row("Sources: is kubebridge reading everything?"),
        stat(
            "Sources down",
            f"count({m(status, CLUSTER, src, DOWN)} == 1) or vector(0)",
            "Sources whose last collection failed.",
            thresholds=[(None, "green"), (1, "red")],
            w=6,
        ),
        stat(
            "Sources not permitted",
            f"count({m(status, CLUSTER, src, NOT_PERMITTED)} == 1) or vector(0)",
            "401/403 from the upstream: missing RBAC, or a managed control plane that does not expose etcd "
            "or the "
            "API server's metrics. Not an outage.",
            thresholds=[(None, "green"), (1, "blue")],
            w=6,
        ),
        stat(
            "Pods in the index",
            f"sum({m('kubebridge_pod_index_pods', CLUSTER)})",
            "Pods the node agents know (their kubelets' /pods).",
            w=6,
        ),
        stat(
            "Versions running",
            f"count(count by (version) ({m('kubebridge_build_info', CLUSTER)}))",
            "More than one only during a rollout.",
            thresholds=[(None, "green"), (2, "orange")],
            w=6,
        ),
        table(
            "Source status by instance",
            f"max by (instance, collector, status) ({m(status, CLUSTER, src)}) == 1",
            "ok, down, not_permitted (expected on managed control planes) or no_data (endpoint absent).",
            hide=("Time", "Value"),
            w=24,
        ),
        timeseries(
            "Errors by source and reason",
            [
                (
                    f"sum by (collector, reason) ({rate('kubebridge_scrape_errors_total', CLUSTER, src)})"
                    f" or 0 * sum by (collector) ({m('kubebridge_up', CLUSTER, src)})",
                    "{{collector}} {{reason}}",
                )
            ],
            "Failed collections per second, by reason; 0 for a source that never failed (the counter "
            "appears with the first failure).",
            unit="ops",
        ),
        timeseries(
            "Collection duration by source (max over instances)",
            [
                (
                    f"max by (collector) ({m('kubebridge_scrape_duration_seconds', CLUSTER, src)})",
                    "{{collector}}",
                )
            ],
            "How long each source took; near the scrape timeout, series go missing.",
            unit="s",
        ),
        timeseries(
            "Join misses",
            [(f"sum by (collector) ({m('kubebridge_join_misses', CLUSTER, src)})", "{{collector}}")],
            "Series naming a pod the index does not know yet: they lack workload labels.",
        ),
        timeseries(
            "Malformed lines and type conflicts",
            [
                (
                    f"sum by (collector) ({m('kubebridge_malformed_lines', CLUSTER, src)})",
                    "malformed {{collector}}",
                ),
                (
                    f"sum by (collector) ({m('kubebridge_merge_type_conflicts', CLUSTER, src)})",
                    "conflicts {{collector}}",
                ),
            ],
            "Upstream lines rejected, and families dropped for a type clash between sources.",
        ),
        timeseries(
            "Pod index refreshes",
            [
                (f"sum({rate('kubebridge_pod_index_syncs_total', CLUSTER)})", "syncs"),
                (f"sum({rate('kubebridge_pod_index_errors_total', CLUSTER)})", "errors"),
            ],
            "The node agents' /pods refreshes per second.",
            unit="ops",
        ),
        timeseries(
            "Pod index state",
            [
                (f"count by (status) ({m('kubebridge_pod_index_status', CLUSTER)} == 1)", "{{status}}"),
                (f"count({m('kubebridge_pod_index_up', CLUSTER)} == 0) or vector(0)", "last refresh failed"),
            ],
            "Node agents by the state of their pod list: ok, not_permitted (403: series lose their pod "
            "labels, fix the RBAC), down or pending; and how many failed their last refresh (they keep "
            "the last good listing).",
        ),
        timeseries(
            "Pod index age",
            [(f"time() - max({m('kubebridge_pod_index_last_sync_timestamp_seconds', CLUSTER)})", "age")],
            "Seconds since the newest pod index refresh; growing means /pods is unreachable.",
            unit="s",
        ),
        row("StatsD listener"),
        timeseries(
            "StatsD samples by type",
            [(f"sum by (type) ({rate('kubebridge_statsd_samples_total', CLUSTER)})", "{{type}}"),
             (f"sum({rate('kubebridge_statsd_packets_total', CLUSTER)})", "datagrams")],
            "Samples the node agents' statsd listeners applied per second, by StatsD type, and the "
            "datagrams that carried them (off by default: empty unless the statsd collector runs).",
            unit="ops",
        ),
        timeseries(
            "StatsD lines lost",
            [(f"sum by (reason) ({rate('kubebridge_statsd_parse_errors_total', CLUSTER)}) or vector(0)",
              "malformed {{reason}}"),
             (f"sum by (reason) ({rate('kubebridge_statsd_refused_total', CLUSTER)}) or vector(0)",
              "refused {{reason}}"),
             (f"sum({rate('kubebridge_statsd_socket_drops_total', CLUSTER)}) or vector(0)", "kernel drops"),
             (f"sum({rate('kubebridge_statsd_join_misses_total', CLUSTER)}) or vector(0)", "no pod"),
             (f"sum({rate('kubebridge_statsd_origin_conflicts_total', CLUSTER)}) or vector(0)",
              "entity id conflicts")],
            "Lines the listeners could not apply (malformed, or over a budget), datagrams the kernel "
            "dropped for a full receive buffer, samples that matched no pod, and entity ids that "
            "named another pod than the sender.",
            unit="ops",
        ),
        timeseries(
            "StatsD series",
            [(f"sum({m('kubebridge_statsd_series', CLUSTER)})", "live"),
             (f"sum({rate('kubebridge_statsd_series_expired_total', CLUSTER)}) or vector(0)", "expired/s")],
            "Live pushed series, and series expired after their TTL without samples.",
        ),
        row("Series"),
        timeseries(
            "Series in, out and dropped by source",
            [
                (f"sum by (collector) ({m('kubebridge_series_in', CLUSTER, src)})", "in {{collector}}"),
                (f"sum by (collector) ({m('kubebridge_series_out', CLUSTER, src)})", "out {{collector}}"),
                (
                    f"sum by (collector) ({m('kubebridge_series_dropped', CLUSTER, src)})",
                    "dropped {{collector}}",
                ),
            ],
            "Lines read from each upstream, series exposed, and series dropped by rules or deduplication.",
        ),
        timeseries(
            "Series budget by source",
            [
                (f"max by (collector) ({m('kubebridge_series_known', CLUSTER, src)})", "known {{collector}}"),
                (f"max by (collector) ({m('kubebridge_series_limit', CLUSTER, src)})", "limit {{collector}}"),
                (f"sum by (collector) ({rate('kubebridge_series_refused_total', CLUSTER, src)}) or vector(0)",
                 "refused/s {{collector}}"),
            ],
            "Series each source has exposed recently (they count against its cap), the cap, and new "
            "series refused past it (the known ones keep flowing; KubebridgeSeriesBudgetExceeded).",
        ),
        timeseries(
            "Upstream response size",
            [
                (
                    f"sum by (collector) ({m('kubebridge_upstream_response_bytes', CLUSTER, src)})",
                    "{{collector}}",
                )
            ],
            "Bytes of the last upstream response per source.",
            unit="bytes",
        ),
        row("Cluster-agent duties and autodiscovery"),
        stat(
            "Events leader",
            f"max({m(EVENTS_LEADER, S.events, CLUSTER)})",
            "1: an instance counts events (holds the lease, or election is off).",
            thresholds=[(None, "red"), (1, "green")],
            w=6,
        ),
        stat(
            "Latest event",
            f"time() - max({m(EVENTS_LAST_SEEN, S.events, CLUSTER)})",
            "Seconds since the last counted event; a quiet cluster or a stuck watch.",
            unit="s",
            w=6,
        ),
        stat(
            "Autodiscovery targets",
            f"sum({m(AD_TARGETS, S.autodiscovery, CLUSTER)})",
            "Pods scraped through annotations or templates.",
            w=6,
        ),
        stat(
            "Autodiscovery targets down",
            f"count({m(AD_UP, S.autodiscovery, CLUSTER)} == 0) or vector(0)",
            "Discovered targets whose last scrape failed.",
            thresholds=[(None, "green"), (1, "red")],
            w=6,
        ),
        table(
            "Autodiscovery targets",
            [
                (f"max by (namespace, pod, container) ({m(AD_UP, S.autodiscovery, CLUSTER)})", ""),
                (f"max by (namespace, pod, container) ({m(AD_SERIES, S.autodiscovery, CLUSTER)})", ""),
                (f"max by (namespace, pod, container) ({m(AD_DURATION, S.autodiscovery, CLUSTER)})", ""),
            ],
            "Each discovered target: up, series, scrape duration (s).",
            w=24,
            rename={"Value #A": "up", "Value #B": "series", "Value #C": "duration"},
        ),
        row("kubebridge pods (from their own cAdvisor series)"),
        timeseries(
            "CPU by pod (cores)",
            [(f"sum by (namespace, pod) ({rate(CPU, S.containers, CLUSTER, ME)})", "{{pod}}")],
            "kubebridge's own CPU, per pod.",
            links=[series_link("Pod ${__field.labels.pod}", uid("pod"), [L.namespace, L.pod])],
        ),
        timeseries(
            "Memory working set by pod",
            [(f"sum by (namespace, pod) ({m(WSET, S.containers, CLUSTER, ME)})", "{{pod}}")],
            "kubebridge's own memory, per pod.",
            links=[series_link("Pod ${__field.labels.pod}", uid("pod"), [L.namespace, L.pod])],
            unit="bytes",
        ),
    ]
    return dashboard(
        "self",
        "kubebridge / Self",
        "Is kubebridge reading every source? Status, duration, errors, series, and its own use.",
        v,
        panels,
        events((CLUSTER,)),
    )
