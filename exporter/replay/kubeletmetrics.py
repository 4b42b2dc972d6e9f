"""A Kubernetes 1.35 kubelet `/metrics` (and `/metrics/probes`) derived from the node's /pods.

No kubelet `/metrics` capture newer than v1.10 exists in the fixtures, and the probes capture
names pods of another cluster. The demo serves these instead, so the kubelet's series agree with
the 1.35 cAdvisor, /pods and /stats/summary it serves next to them:

- family names, types, label names and histogram buckets are those of Kubernetes 1.35
  (`pkg/kubelet/metrics/metrics.go`, `pkg/kubelet/prober/metrics.go`, component-base's
  rest client and volume metrics); `kubernetes_build_info` is the 1.35 capture's line;
- every gauge is counted from the served PodList (running pods, containers by state, probes
  per container, persistent volume claims mounted);
- counters and histograms grow with the time since the demo started, at fixed per-pod rates,
  so `rate()` and `histogram_quantile()` have something to show. A container in CrashLoopBackOff
  adds runtime operation errors and BackOff-driven container starts; a container whose
  readiness probe is named in `failing_probes` fails it.

What is invented, and says so: the rates, the latencies' spread, the evictions, the claim
capacity (the capture has no PersistentVolume sizes) and the client certificate's lifetime.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

BUILD_INFO = ('kubernetes_build_info{build_date="2025-12-17T12:32:07Z",compiler="gc",'
              'git_commit="66452049f3d692768c39c797b21b793dce80314e",git_tree_state="clean",'
              'git_version="v1.35.0",go_version="go1.25.5",major="1",minor="35",platform="linux/arm64"} 1')
# Kubernetes 1.35 buckets.
POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900,
                     1200, 1800, 2700, 3600)
DEF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RUNTIME_OPS = ("container_status", "list_containers", "list_podsandbox", "podsandbox_status",
               "exec_sync", "image_status", "start_container", "create_container", "stop_container")
CLAIM_CAPACITY = 1 << 30          # invented: the capture carries no PersistentVolume sizes
CLAIM_INODES = 65536
CERT_TTL = 365 * 86400.0          # invented: a client certificate one year from expiry


@dataclass(frozen=True)
class Probe:
    """One probe of one container, as the kubelet's prober counts it."""
    namespace: str
    pod: str
    pod_uid: str
    container: str
    probe_type: str               # Liveness, Readiness, Startup
    period: float


@dataclass
class NodeView:
    """What the served PodList says, counted once per render."""
    running_pods: int = 0
    containers: dict[str, int] = field(default_factory=dict)   # container_state -> count
    crash_looping: int = 0
    restarts: int = 0
    pods: int = 0
    probes: list[Probe] = field(default_factory=list)
    claims: list[tuple[str, str]] = field(default_factory=list)  # (namespace, claim)


def view(podlist: dict) -> NodeView:
    """Count what the kubelet's gauges report from a PodList."""
    out = NodeView()
    claims: set[tuple[str, str]] = set()
    for pod in podlist.get("items", []):
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        ns, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
        out.pods += 1
        if status.get("phase") == "Running":
            out.running_pods += 1
        for cs in status.get("containerStatuses") or []:
            state = next(iter(cs.get("state") or {"unknown": {}}))
            kubelet_state = {"running": "running", "terminated": "exited", "waiting": "created"}.get(state,
                                                                                                     "unknown")
            out.containers[kubelet_state] = out.containers.get(kubelet_state, 0) + 1
            out.restarts += int(cs.get("restartCount", 0))
            if (cs.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                out.crash_looping += 1
        for c in spec.get("containers") or []:
            for key, kind in (("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"),
                              ("startupProbe", "Startup")):
                if isinstance(c.get(key), dict):
                    period = float(c[key].get("periodSeconds") or 10)
                    out.probes.append(Probe(ns, name, uid, c.get("name", ""), kind, max(period, 1.0)))
        for v in spec.get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                claims.add((ns, claim))
    out.claims = sorted(claims)
    return out


def _spread(key: str) -> float:
    """A stable number in [0, 1) per key: per-series variety without randomness."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def _histogram(name: str, labels: tuple[tuple[str, str], ...], buckets: tuple[float, ...], count: int,
               typical: float) -> Iterator[str]:
    """Cumulative buckets for `count` observations spread around `typical` seconds."""
    total = 0.0
    cum = 0
    for le in buckets:
        share = min(1.0, (le / typical) ** 2 / 2) if le < typical else 1 - 0.5 * (typical / le) ** 2
        cum = max(cum, int(count * share))
        yield f"{name}_bucket{_labels((*labels, ('le', _fmt(le))))} {cum}"
    total = count * typical
    yield f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {count}"
    yield f"{name}_sum{_labels(labels)} {total:.6f}"
    yield f"{name}_count{_labels(labels)} {count}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _head(name: str, kind: str, help_: str) -> Iterator[str]:
    yield f"# HELP {name} {help_}"
    yield f"# TYPE {name} {kind}"


def render_metrics(podlist: dict, elapsed: float, *, node_name: str, api_host: str = "127.0.0.1:6443",
                   claim_used: float = 0.35) -> bytes:
    """The kubelet's `/metrics` `elapsed` seconds after the demo started."""
    v = view(podlist)
    t = max(elapsed, 0.0) + 600.0  # the node had been up ten minutes when the demo started
    out: list[str] = []
    out += _head("kubernetes_build_info", "gauge",
                 "[ALPHA] A metric with a constant '1' value labeled by major, minor, git version, git "
                 "commit, git tree state, build date, Go version, and compiler from which Kubernetes was "
                 "built, and platform on which it is running.")
    out.append(BUILD_INFO)
    out += _head("kubelet_node_name", "gauge", "[ALPHA] The node's name. The count is always 1.")
    out.append(f'kubelet_node_name{{node="{node_name}"}} 1')
    out += _head("kubelet_running_pods", "gauge", "[ALPHA] Number of pods that have a running pod sandbox")
    out.append(f"kubelet_running_pods {v.running_pods}")
    out += _head("kubelet_running_containers", "gauge", "[ALPHA] Number of containers currently running")
    for state in ("created", "exited", "running", "unknown"):
        out.append(f'kubelet_running_containers{{container_state="{state}"}} {v.containers.get(state, 0)}')
    relists = int(t)  # one relist a second
    out += _head("kubelet_pleg_relist_duration_seconds", "histogram",
                 "[ALPHA] Duration in seconds for relisting pods in PLEG.")
    out += _histogram("kubelet_pleg_relist_duration_seconds", (), DEF_BUCKETS, relists, 0.01 + 0.002 * v.pods)
    out += _head("kubelet_pleg_relist_interval_seconds", "histogram",
                 "[ALPHA] Interval in seconds between relisting in PLEG.")
    out += _histogram("kubelet_pleg_relist_interval_seconds", (), DEF_BUCKETS, relists, 1.0)
    starts = v.pods + int(t / 10)  # the pods it holds, plus churn of one every 10 s
    out += _head("kubelet_pod_start_duration_seconds", "histogram",
                 "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod "
                 "starting to run")
    out += _histogram("kubelet_pod_start_duration_seconds", (), POD_START_BUCKETS, starts, 4.0)
    out += _head("kubelet_started_pods_total", "counter", "[ALPHA] Cumulative number of pods started")
    out.append(f"kubelet_started_pods_total {starts}")
    out += _head("kubelet_started_containers_total", "counter",
                 "[ALPHA] Cumulative number of containers started")
    crash_starts = v.restarts  # every restart is a container start (the demo's crash loop restarts)
    out.append(f'kubelet_started_containers_total{{container_type="container"}} {starts + crash_starts}')
    out.append(f'kubelet_started_containers_total{{container_type="podsandbox"}} {starts}')
    out += _head("kubelet_runtime_operations_total", "counter",
                 "[ALPHA] Cumulative number of runtime operations by operation type.")
    for op in RUNTIME_OPS:
        n = int(t * (1 + 3 * _spread(op)) * max(v.pods, 1) / 10)
        out.append(f'kubelet_runtime_operations_total{{operation_type="{op}"}} {n}')
    out += _head("kubelet_runtime_operations_errors_total", "counter",
                 "[ALPHA] Cumulative number of runtime operation errors by operation type.")
    # A crash-looping container's failed start, and the exec probes that time out now and then.
    out.append(f'kubelet_runtime_operations_errors_total{{operation_type="start_container"}} '
               f'{v.crash_looping * int(t / 30) + 1}')
    out.append(f'kubelet_runtime_operations_errors_total{{operation_type="exec_sync"}} {int(t / 120) + 1}')
    out += _head("kubelet_runtime_operations_duration_seconds", "histogram",
                 "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.")
    for op in RUNTIME_OPS:
        n = int(t * (1 + 3 * _spread(op)) * max(v.pods, 1) / 10)
        out += _histogram("kubelet_runtime_operations_duration_seconds", (("operation_type", op),),
                          DEF_BUCKETS, n, 0.002 + 0.05 * _spread(op + "/latency"))
    out += _head("kubelet_evictions", "counter",
                 "[ALPHA] Cumulative number of pod evictions by eviction signal")
    # Invented: the capture has no evicted pod. One ephemeral-storage eviction in the node's past
    # and one every 5 minutes, so the eviction panels have a series to show.
    out.append(f'kubelet_evictions{{eviction_signal="ephemeralstorage.available"}} {1 + int(t / 300)}')
    out += _head("kubelet_certificate_manager_client_ttl_seconds", "gauge",
                 "[ALPHA] Gauge of the TTL (time-to-live) of the Kubelet's client certificate. The value "
                 "is in seconds until certificate expiry (negative if already expired).")
    out.append(f"kubelet_certificate_manager_client_ttl_seconds {CERT_TTL - t:.0f}")
    out += _head("kubelet_certificate_manager_client_expiration_renew_errors", "counter",
                 "[ALPHA] Counter of certificate renewal errors.")
    out.append("kubelet_certificate_manager_client_expiration_renew_errors 0")
    out += _head("rest_client_requests_total", "counter",
                 "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.")
    for code, method, per_s in (("200", "GET", 2.0), ("200", "PATCH", 0.3), ("201", "POST", 0.05),
                                ("404", "GET", 0.02), ("409", "PUT", 0.01), ("500", "GET", 0.005)):
        out.append(f'rest_client_requests_total{{code="{code}",host="{api_host}",method="{method}"}} '
                   f'{int(t * per_s)}')
    out += _head("rest_client_request_duration_seconds", "histogram",
                 "[ALPHA] Request latency in seconds. Broken down by verb, and host.")
    for verb, per_s in (("GET", 2.0), ("PATCH", 0.3), ("POST", 0.05)):
        out += _histogram("rest_client_request_duration_seconds", (("host", api_host), ("verb", verb)),
                          DEF_BUCKETS, int(t * per_s), 0.004 + 0.02 * _spread(verb))
    out += _head("storage_operation_duration_seconds", "histogram",
                 "[BETA] Storage operation duration")
    plugins = {"kubernetes.io/projected": v.pods, "kubernetes.io/configmap": max(v.pods // 4, 1),
               "kubernetes.io/csi:hostpath.csi.k8s.io": max(len(v.claims), 1)}
    for plugin, mounts in plugins.items():
        for op in ("volume_mount", "volume_unmount"):
            n = mounts + int(t / 10)  # every pod start mounts (and its predecessor unmounts)
            labels = (("migrated", "false"), ("operation_name", op), ("status", "success"),
                      ("volume_plugin", plugin))
            out += _histogram("storage_operation_duration_seconds", labels, DEF_BUCKETS, n, 0.05)
    out += _head("storage_operation_errors_total", "counter",
                 "[ALPHA] Storage operation errors (Deprecated since 1.21.0)")
    out.append('storage_operation_errors_total{operation_name="volume_mount",'
               'volume_plugin="kubernetes.io/csi:hostpath.csi.k8s.io"} 1')
    used = {claim: CLAIM_CAPACITY * min(0.95, claim_used + 0.0005 * t / 60 + 0.2 * _spread(claim[1]))
            for claim in v.claims}
    for suffix, help_, value in (
            ("capacity_bytes", "Capacity in bytes of the volume", lambda c: CLAIM_CAPACITY),
            ("available_bytes", "Number of available bytes in the volume",
             lambda c: CLAIM_CAPACITY - used[c]),
            ("used_bytes", "Number of used bytes in the volume", lambda c: used[c]),
            ("inodes", "Maximum number of inodes in the volume", lambda c: CLAIM_INODES),
            ("inodes_free", "Number of free inodes in the volume", lambda c: CLAIM_INODES - used[c] // 65536),
            ("inodes_used", "Number of used inodes in the volume", lambda c: used[c] // 65536)):
        name = f"kubelet_volume_stats_{suffix}"
        out += _head(name, "gauge", f"[ALPHA] {help_}")
        for ns, claim in v.claims:
            out.append(f'{name}{{namespace="{ns}",persistentvolumeclaim="{claim}"}} {value((ns, claim)):.0f}')
    return ("\n".join(out) + "\n").encode()


def render_probes(podlist: dict, elapsed: float, failing: Iterable[tuple[str, str, str]] = ()) -> bytes:
    """The kubelet's `/metrics/probes`: `prober_probe_total` for every probe of every served pod.

    `failing`: (namespace, pod, container) whose readiness probe fails one time in three."""
    bad = set(failing)
    t = max(elapsed, 0.0) + 600.0
    out = list(_head("prober_probe_total", "counter", "[ALPHA] Cumulative number of a liveness, readiness or "
                     "startup probe for a container by result."))
    for p in view(podlist).probes:
        runs = int(t / p.period) if p.probe_type != "Startup" else 3
        failing_now = (p.namespace, p.pod, p.container) in bad and p.probe_type == "Readiness"
        failed = runs // 3 if failing_now else 0
        base = (("container", p.container), ("namespace", p.namespace), ("pod", p.pod),
                ("pod_uid", p.pod_uid), ("probe_type", p.probe_type))
        for result, n in (("failed", failed), ("successful", runs - failed), ("unknown", 0)):
            out.append(f"prober_probe_total{_labels((*base, ('result', result)))} {n}")
    return ("\n".join(out) + "\n").encode()
