"""/stats/summary: goldens for every capture (1.16, 1.24, 1.35 with their /pods; 2018 minikube
without), missing fields absent, the full pod join, volumes named by their PVC, and the
collector against the replay kubelet."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.stats_summary import TABLE, claims_of
from exporter.expfmt import encode_text
from exporter.merge import merge
from tests.conftest import GOLDEN, Fixtures, offline

SUMMARY = PODS = Fixtures("kubelet")  # the kubelet serves both
CAPTURES = {  # summary -> /pods of the same node and moment (the 2018 one has none)
    "nri-k8s-1.16-kubelet-stats-summary": "nri-k8s-1.16-kubelet-pods.json",
    "nri-k8s-1.24-kubelet-stats-summary": "nri-k8s-1.24-kubelet-pods.json",
    "nri-k8s-1.35-kubelet-stats-summary": "nri-k8s-1.35-kubelet-pods.json",
    "nri-2018-minikube-kubelet_stats_summary_payload": None,
}


def transform(capture: str, doc: dict | None = None, pods=None, config: dict | None = None):
    pods = pods if pods is not None else (PODS / CAPTURES[capture] if CAPTURES.get(capture) else None)
    collector = offline("stats_summary", config, pods=pods)
    payload = json.dumps(doc).encode() if doc is not None else (SUMMARY / f"{capture}.json").read_bytes()
    return collector.process(payload)


def exposition(res) -> bytes:
    return encode_text(merge([("stats_summary", res.families)])[0])


def samples(res) -> list[tuple[str, dict[str, str], float]]:
    text = encode_text(res.families).decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def test_every_capture_is_covered():
    assert sorted(p.stem for p in SUMMARY.glob("*stats[-_]summary*.json")) == sorted(CAPTURES)


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_golden(capture, golden):
    res = transform(capture)
    golden(f"stats_summary-{capture}.txt", exposition(res))  # what `kubebridge transform` prints
    assert res.series_out > 50 and res.malformed == 0
    # Same node and moment: every pod is known (2018: an empty index, every pod series misses).
    assert (res.join_misses == 0) is bool(CAPTURES[capture])
    declared = {m.name for m in TABLE}
    assert {f.name for f in res.families} <= declared


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_golden_passes_promtool_lint(capture):
    # promlint flags every name containing a metric type ("should not include type 'summary'"):
    # the families are named kubebridge_stats_*, not after the kubelet's Summary API.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (CI installs Debian's prometheus)")
    text = (GOLDEN / f"stats_summary-{capture}.txt").read_bytes()
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    lint = out.stderr.decode()
    assert "summary" not in lint, lint
    assert out.returncode == 0, lint  # parses, and lint-clean


def test_cli_maps_the_dash_and_joins(tmp_path):
    capture = "nri-k8s-1.35-kubelet-stats-summary"
    out = subprocess.run([sys.executable, "-m", "exporter", "transform", "--source", "stats-summary",
                          "--pods", str(PODS / CAPTURES[capture]), str(SUMMARY / f"{capture}.json")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == exposition(transform(capture))


def test_full_join_on_pod_and_container_series():
    rows = samples(transform("nri-k8s-1.35-kubelet-stats-summary", config={"cluster": "prod"}))
    eph = {n: labels for n, labels, _ in rows if labels.get("pod", "").startswith("coredns-")}
    want = {"namespace": "kube-system", "label_k8s_app": "kube-dns", "workload": "coredns",
            "workload_kind": "Deployment", "node": "datagen-1-35", "cluster": "prod",
            "collector": "stats_summary"}
    for name in ("kubebridge_stats_pod_ephemeral_storage_used_bytes",
                 "kubebridge_stats_container_ephemeral_storage_used_bytes",
                 "kubebridge_stats_container_rootfs_used_bytes",
                 "kubebridge_stats_pod_processes"):
        assert want.items() <= eph[name].items(), name
    assert eph["kubebridge_stats_container_rootfs_used_bytes"]["container"] == "coredns"
    node = {n: labels for n, labels, _ in rows if n.startswith("kubebridge_stats_node_")}
    assert node["kubebridge_stats_node_fs_used_bytes"] == {
        "node": "datagen-1-35", "cluster": "prod", "collector": "stats_summary"}


def test_container_ephemeral_storage_is_rootfs_plus_logs():
    doc = json.loads((SUMMARY / "nri-k8s-1.35-kubelet-stats-summary.json").read_text())
    pod = next(p for p in doc["pods"] if p["podRef"]["name"].startswith("e2e-scraper-"))
    (ctr,) = pod["containers"]
    rows = samples(transform("nri-k8s-1.35-kubelet-stats-summary"))
    (value,) = [v for n, labels, v in rows if labels.get("pod") == pod["podRef"]["name"]
                and n == "kubebridge_stats_container_ephemeral_storage_used_bytes"]
    assert value == ctr["rootfs"]["usedBytes"] + ctr["logs"]["usedBytes"] == 13291520


def test_missing_fields_are_absent_not_zero():
    # 2018 minikube: no rlimit, no process_stats, no split containerFs.
    names = {n for n, _, _ in samples(transform("nri-2018-minikube-kubelet_stats_summary_payload"))}
    assert "kubebridge_stats_node_imagefs_used_bytes" in names
    assert "kubebridge_stats_pod_ephemeral_storage_used_bytes" in names
    for absent in ("kubebridge_stats_node_processes", "kubebridge_stats_pod_processes",
                   "kubebridge_stats_node_containerfs_used_bytes"):
        assert absent not in names
    # A summary pared down field by field never fails and never invents a value.
    doc = {"node": {"nodeName": "n", "fs": {"usedBytes": 5}},
           "pods": [{"podRef": {"name": "p", "namespace": "ns"}, "containers": [{"name": "c", "rootfs": {}}],
                     "volume": [{"name": "v"}]}, {"podRef": {}}]}
    rows = samples(transform("x", doc=doc))
    only = {"node": "n", "collector": "stats_summary"}
    assert rows == [("kubebridge_stats_node_fs_used_bytes", only, 5)]


def test_volumes_carry_their_claim():
    doc = json.loads((SUMMARY / "nri-k8s-1.35-kubelet-stats-summary.json").read_text())
    pods = json.loads((PODS / "nri-k8s-1.35-kubelet-pods.json").read_text())
    # CONSTRUCTED from the real captures: the 1.35 StatefulSet pod mounts claim e2e-pv-claim as
    # volume "storage", but the capture's summary lists no stats for it; give it some, once the
    # way kubelets before pvcRef report (name only), once with pvcRef as newer kubelets do.
    ss0 = next(p for p in doc["pods"] if p["podRef"]["name"] == "e2e-statefulset-0")
    ss0["volume"].append({"name": "storage", "usedBytes": 8192, "capacityBytes": 1 << 30})
    ss1 = next(p for p in doc["pods"] if p["podRef"]["name"] == "e2e-statefulset-1")
    ref = {"name": "data-e2e-statefulset-1", "namespace": "scraper"}
    ss1["volume"].append({"name": "data", "usedBytes": 4096, "pvcRef": ref})
    rows = samples(transform("nri-k8s-1.35-kubelet-stats-summary", doc=doc, pods=pods))
    used = {(lb["pod"], lb["volume"]): lb for n, lb, _ in rows
            if n == "kubebridge_stats_volume_used_bytes"}
    assert used[("e2e-statefulset-0", "storage")]["persistentvolumeclaim"] == "e2e-pv-claim"
    assert used[("e2e-statefulset-0", "storage")]["workload"] == "e2e-statefulset"
    assert used[("e2e-statefulset-1", "data")]["persistentvolumeclaim"] == "data-e2e-statefulset-1"
    assert "persistentvolumeclaim" not in used[("e2e-statefulset-0", "kube-api-access-kp8zt")]


def test_claims_of_spec_volumes():
    pod = {"metadata": {"name": "web-0"}, "spec": {"volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
        {"name": "tmp", "emptyDir": {}}]}}
    assert claims_of(pod) == {"data": "data-web-0", "scratch": "web-0-scratch"}
    assert claims_of(None) == {} and claims_of({}) == {}


def test_unknown_pods_are_counted_as_join_misses():
    res = transform("nri-k8s-1.35-kubelet-stats-summary", pods=PODS / "nri-k8s-1.24-kubelet-pods.json")
    assert res.join_misses > 0
    rows = [lb for _, lb, _ in samples(res) if lb.get("pod") == "e2e-scraper-5f97dc94d8-vkcjl"]
    assert rows and all("workload" not in lb and lb["node"] == "datagen-1-35" for lb in rows)


def test_invalid_json_raises():
    with pytest.raises(ValueError):
        offline("stats_summary").process(b"{not json")
    with pytest.raises(ValueError):
        offline("stats_summary").process(b"[]")
