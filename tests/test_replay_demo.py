"""The demo's derived payloads and event generator (exporter/replay/kubeletmetrics.py, eventgen.py,
demo.py): consistent with the pods the replay kubelets serve, valid expositions, events that flow.
tests/test_dashboards_demo.py runs them end to end under a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.expfmt import parse_line
from exporter.replay import paths
from exporter.replay.advance import render, template
from exporter.replay.apiserver import ReplayApiserver
from exporter.replay.cluster import CRASH_LOOP
from exporter.replay.demo import CREATING, FAILING_PROBE, DemoCluster, crash_loop
from exporter.replay.eventgen import ROLLOUT, EventGenerator, pod_ref
from exporter.replay.kubeletmetrics import render_metrics, render_probes, view


def pods() -> dict:
    return json.loads(paths.data_file(paths.PODS.format(version="1.35")).read_bytes())


def samples(body: bytes) -> dict[str, float]:
    """Every sample line through kubebridge's strict parser: {name{labels}: value}."""
    out = {}
    for line in body.splitlines():
        if line and not line.startswith(b"#"):
            s = parse_line(line)
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels)
            out[s.name + ("{" + labels + "}" if labels else "")] = float(s.value)
    return out


def test_kubelet_metrics_count_the_served_pods() -> None:
    podlist = pods()
    got = samples(render_metrics(podlist, 30.0, node_name="datagen-1-35"))
    running = sum(1 for p in podlist["items"] if p["status"].get("phase") == "Running")
    assert got["kubelet_running_pods"] == running
    states = [
        next(iter(cs["state"])) for p in podlist["items"] for cs in p["status"].get("containerStatuses", [])
    ]
    assert got['kubelet_running_containers{container_state="running"}'] == states.count("running")
    assert got['kubelet_running_containers{container_state="exited"}'] == states.count("terminated")
    assert got['kubelet_node_name{node="datagen-1-35"}'] == 1
    # The one claim the 1.35 pods mount (the StatefulSet's), and nothing else.
    claims = {k for k in got if k.startswith("kubelet_volume_stats_capacity_bytes")}
    assert claims == {
        'kubelet_volume_stats_capacity_bytes{namespace="scraper",persistentvolumeclaim="e2e-pv-claim"}'
    }


def test_kubelet_counters_grow_and_histograms_are_cumulative() -> None:
    podlist = pods()
    early, late = (samples(render_metrics(podlist, t, node_name="n")) for t in (0.0, 120.0))
    counters = [k for k in early if k.split("{")[0].endswith(("_total", "_count", "_bucket"))]
    assert counters and all(late[k] >= early[k] for k in counters)
    assert (
        late["kubelet_pleg_relist_duration_seconds_count"]
        > early["kubelet_pleg_relist_duration_seconds_count"]
    )
    buckets = [v for k, v in late.items() if k.startswith("kubelet_pod_start_duration_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == late["kubelet_pod_start_duration_seconds_count"]


def test_promtool_accepts_the_derived_payloads(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or pytest.skip("promtool not installed (apt-get install prometheus)")
    for name, body in (
        ("metrics", render_metrics(pods(), 60.0, node_name="n")),
        ("probes", render_probes(pods(), 60.0)),
    ):
        out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        # promtool lints (exit 3 for style); a parse error is exit 1 and names the line.
        assert b"error while linting" not in out.stderr and out.returncode in (0, 3), (name, out.stderr)


def test_probes_name_only_served_pods_and_the_failing_one_fails() -> None:
    podlist = pods()
    served = {
        (p["metadata"]["namespace"], p["metadata"]["name"], p["metadata"]["uid"]) for p in podlist["items"]
    }
    body = render_probes(podlist, 300.0, [FAILING_PROBE])
    seen = set()
    for line in body.splitlines():
        if line.startswith(b"prober_probe_total{"):
            labels = dict(kv.split("=", 1) for kv in line.decode().split("{")[1].split("}")[0].split(","))
            key = tuple(labels[k].strip('"') for k in ("namespace", "pod", "pod_uid"))
            assert key in served
            seen.add(key[:2])
    assert len(seen) == len({(p.namespace, p.pod) for p in view(podlist).probes}) >= 5
    ns, pod, container = FAILING_PROBE
    got = samples(body)
    failed = [
        v
        for k, v in got.items()
        if f'container="{container}",namespace="{ns}",pod="{pod}",' in k
        and k.endswith('probe_type="Readiness",result="failed"}')
    ]
    assert failed and failed[0] > 0


def test_event_generator_folds_repeats_and_replays_rollouts(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    api = ReplayApiserver(None, token)
    items = pods()["items"]
    crash = next(p for p in items if p["metadata"]["name"] == "e2e-container-creating")
    deploy = [pod_ref(p) for p in items if p["metadata"]["name"].startswith("e2e-deployment-")]
    gen = EventGenerator(api, crash_loop=pod_ref(crash, "alpine"), failing_probe=None, churn=lambda: deploy)
    before = dict(api.store.objects["events"])
    for _ in range(len(ROLLOUT)):
        gen.tick()
    new = {k: v for k, v in api.store.objects["events"].items() if k not in before}
    backoff = [e for e in new.values() if e["reason"] == "BackOff"]
    assert len(backoff) == 1 and backoff[0]["count"] == len(ROLLOUT) and backoff[0]["type"] == "Warning"
    assert backoff[0]["involvedObject"]["fieldPath"] == "spec.containers{alpine}"
    reasons = {e["reason"] for e in new.values()}
    assert {s.reason for s in ROLLOUT} <= reasons
    owner = [e for e in new.values() if e["involvedObject"]["kind"] == "ReplicaSet"]
    assert owner and owner[0]["involvedObject"]["name"] == deploy[0].owner_name
    uid = backoff[0]["metadata"]["uid"]
    gen.tick()
    again = next(
        e
        for e in api.store.objects["events"].values()
        if e["reason"] == "BackOff" and e["metadata"]["uid"] == uid
    )
    assert again["count"] == len(ROLLOUT) + 1  # the same Event object, its count grown


def test_demo_cluster_has_three_nodes_of_distinct_pods(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    cluster = DemoCluster(tmp_path, token, nodes=3)
    kubelets = [cluster.kubelet, *cluster.extra]
    assert len({k.node_name for k in kubelets}) == 3
    keys = [key for k in kubelets for key in k.node.pod_keys()]
    assert len(keys) == len(set(keys)), "a pod name on two nodes"
    for k in cluster.extra:
        assert {p["spec"]["nodeName"] for p in k.podlist["items"]} == {k.node_name}
        assert {key for key in k.node.pod_keys()} == set(k.node.exposition.pods()), (
            "/pods and cAdvisor disagree"
        )
    creating = [
        p for p in cluster.extra[-1].podlist["items"] if p["metadata"]["name"].startswith(CREATING[1])
    ]
    assert creating[0]["status"]["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ContainerCreating"}
    }
    own = [
        p
        for k in kubelets
        for p in k.podlist["items"]
        if p["metadata"]["labels"].get("app.kubernetes.io/name") == "kubebridge"
    ]
    assert len(own) == 3 and {p["spec"]["nodeName"] for p in own} == {k.node_name for k in kubelets}


def test_advance_scales_cumulative_values_only() -> None:
    body = (b'# TYPE a_total counter\na_total{x="1 2}"} 10 1700000000000\n# TYPE g gauge\ng 5\n'
            b"# TYPE h histogram\n"
            b'h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 4\nh_sum 8.5\nh_count 4\n'
            b'# TYPE s summary\ns{quantile="0.5"} 3\ns_sum 6\ns_count 2\n')
    out = render(template(body), 1.5)
    assert out == (b'# TYPE a_total counter\na_total{x="1 2}"} 15 1700000000000\n# TYPE g gauge\ng 5\n'
                   b"# TYPE h histogram\n"
                   b'h_bucket{le="1"} 3\nh_bucket{le="+Inf"} 6\nh_sum 12.75\nh_count 6\n'
                   b'# TYPE s summary\ns{quantile="0.5"} 3\ns_sum 9\ns_count 3\n')


def test_advanced_capture_stays_a_valid_exposition() -> None:
    """The 1.35 cAdvisor capture, advanced: every line still parses, gauges are unchanged."""
    body = paths.data_file(paths.CADVISOR.format(version="1.35")).read_bytes()
    before, after = samples(body), samples(render(template(body), 1.25))
    assert before.keys() == after.keys()
    cores = next(k for k in before if k.startswith("machine_cpu_cores{"))
    assert after[cores] == before[cores] == 14
    grown = [k for k in before if k.startswith("container_cpu_usage_seconds_total") and before[k] > 0]
    assert grown and all(after[k] == pytest.approx(before[k] * 1.25) for k in grown)


async def test_crash_loop_restarts_and_crashes_again(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    cluster = DemoCluster(tmp_path, token, nodes=1)
    ns, pod, container = CRASH_LOOP

    def status() -> dict:
        item = next(p for p in cluster.kubelet.podlist["items"] if p["metadata"]["name"] == pod)
        return next(cs for cs in item["status"]["containerStatuses"] if cs["name"] == container)
    before = status()["restartCount"]
    task = asyncio.create_task(crash_loop(cluster.kubelet, interval=0.01))
    try:
        for _ in range(500):
            if status()["restartCount"] >= before + 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    after = status()
    assert after["restartCount"] >= before + 2
    assert after["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert after["lastState"]["terminated"]["reason"] == "Error"
    assert after["lastState"]["terminated"]["finishedAt"]  # when it last ended, for the Pod dashboard
    metrics = samples(render_metrics(cluster.kubelet.podlist, 0.0, node_name="n"))
    assert metrics['kubelet_started_containers_total{container_type="container"}'] >= after["restartCount"]
