"""cAdvisor across Kubernetes 1.10-1.35: every capture transforms cleanly (goldens), cgroups are
classified so that sums by workload count every byte once, restarts collapse to the newest
container, system cgroups stay distinct, hostNetwork pods add no network series."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.cadvisor import CadvisorHook, _label_dict, _stale, classify, start_times
from exporter.expfmt import encode_text
from exporter.pods import parse_podlist
from tests.conftest import Fixtures, offline

CAD = Fixtures("cadvisor")
PODS = Fixtures("kubelet")
# Each capture with the /pods of the same node at the same time, where one exists (matched by pod
# names and UIDs: dd-1.10 is the DataDog GKE capture of dd-kubelet-pods.json; the 1.15 minikube
# capture shares only 2 of 8 pods with any pods file, and the standalone goldens have no pods).
CAPTURES = {
    "cadvisor-standalone-golden-prometheus_machine_metrics": None,
    "cadvisor-standalone-golden-prometheus_metrics": None,
    "dd-kubelet-1.10-cadvisor_metrics": "dd-kubelet-pods.json",
    "nri-k8s-1.15-kubelet-metrics-cadvisor": None,
    "nri-k8s-1.16-kubelet-metrics-cadvisor": "nri-k8s-1.16-kubelet-pods.json",
    "nri-k8s-1.24-kubelet-metrics-cadvisor": "nri-k8s-1.24-kubelet-pods.json",
    "nri-k8s-1.35-kubelet-metrics-cadvisor": "nri-k8s-1.35-kubelet-pods.json",
}
WITH_PODS = [c for c, p in CAPTURES.items() if p]
CAPTURE_135 = CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"
MEM = "container_memory_working_set_bytes"


_RUNS: dict[str, subprocess.CompletedProcess] = {}


def transform_cli(capture: str) -> subprocess.CompletedProcess:
    """`kubebridge transform --source cadvisor [--pods ...] CAPTURE`. All captures are run at the
    first call, concurrently (each process mostly pays Python's start-up), and remembered."""
    if not _RUNS:
        procs = {}
        for name, pods in CAPTURES.items():
            args = [sys.executable, "-m", "exporter", "transform", "--source", "cadvisor"]
            if pods:
                args += ["--pods", str(PODS / pods)]
            procs[name] = subprocess.Popen([*args, str(CAD / f"{name}.txt")],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            _RUNS[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return _RUNS[capture]


def series(text: str, name: str) -> list[dict[str, str]]:
    """Every sample of `name` as a label dict with its value under `__value__`."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out.append({**s.labels, "__value__": s.value})
    return out


def test_every_capture_is_covered():
    assert sorted(p.stem for p in CAD.glob("*.txt")) == sorted(CAPTURES)


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_transform_every_capture(capture, golden):
    out = transform_cli(capture)
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()[:2000]  # no malformed line
    golden(f"cadvisor-{capture}.txt", out.stdout)
    text = out.stdout.decode()
    assert list(text_string_to_metric_families(text))  # the client parser reads it back
    assert not re.search(r"\} [^ \n]+ [0-9]+$", text, re.M), "timestamps are dropped by default"
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run([promtool, "check", "metrics"], input=out.stdout, capture_output=True)
        assert lint.returncode in (0, 3), lint.stderr.decode()  # 3: style findings in upstream names
        assert b"error while linting" not in lint.stderr and b"second HELP" not in lint.stderr


def kinds(text: str, name: str = "container_memory_working_set_bytes") -> dict[str, set[str]]:
    by: dict[str, set[str]] = defaultdict(set)
    for s in series(text, name):
        by[s.get("cgroup_kind", "")].add(f'{s.get("pod", "")}/{s.get("container", "")}')
    return by


def test_docker_era_pause_is_container_name_POD():
    text = transform_cli("dd-kubelet-1.10-cadvisor_metrics").stdout.decode()
    k = kinds(text)
    assert "demo-app-success-c485bc67b-klj45/POD" in k["pause"]
    assert "datadog-agent-jbm2k/datadog-agent" in k["container"]
    assert all(c.endswith("/POD") for c in k["pause"]) and not any(c.endswith("/POD") for c in k["container"])
    line = next(s for s in series(text, MEM) if s.get("container") == "datadog-agent")
    # < 1.16 names kept and the modern ones added; the pod joined from the same node's /pods.
    assert line["pod_name"] == line["pod"] == "datadog-agent-jbm2k"
    assert line["container_name"] == line["container"] == "datadog-agent"
    assert line["workload"] == "datadog-agent" and line["workload_kind"] == "DaemonSet"
    assert "id" not in line and "name" not in line


def test_pre_116_capture_without_pods_keeps_the_old_names():
    text = transform_cli("nri-k8s-1.15-kubelet-metrics-cadvisor").stdout.decode()
    k = kinds(text)
    assert k["pause"] and all(c.endswith("/POD") for c in k["pause"]) and k["container"]
    assert "pod" not in k  # before 1.16 the pod cgroup carries no pod labels: it counts as system
    rows = [s for s in series(text, MEM) if s["cgroup_kind"] == "container"]
    assert all(s["pod"] == s["pod_name"] and s["container"] == s["container_name"] for s in rows)
    assert not any("workload" in s for s in rows)  # no /pods of that node and moment


def test_systemd_cgroup_paths_are_classified_without_parsing_them():
    raw = (CAD / "nri-k8s-1.16-kubelet-metrics-cadvisor.txt").read_text()
    pod_rows = [s for s in series(raw, MEM) if s.get("pod") == "e2e-ds-8zz8h"]
    ids = {classify(s): s["id"] for s in pod_rows}
    assert ids["pod"].endswith(".slice") and "kubepods-besteffort-pod" in ids["pod"]
    assert ids["pause"].endswith(".scope") and "/docker-" in ids["pause"]
    assert ids["container"].endswith(".scope") and "/docker-" in ids["container"]
    k = kinds(transform_cli("nri-k8s-1.16-kubelet-metrics-cadvisor").stdout.decode())
    assert "e2e-ds-8zz8h/" in k["pod"] and "e2e-ds-8zz8h/POD" in k["pause"]
    assert "e2e-ds-8zz8h/busybox" in k["container"]


@pytest.mark.parametrize("capture", ["nri-k8s-1.24-kubelet-metrics-cadvisor",
                                     "nri-k8s-1.35-kubelet-metrics-cadvisor"])
def test_containerd_pause_is_empty_container_with_image(capture):
    raw = (CAD / f"{capture}.txt").read_text()
    for s in series(raw, "container_memory_working_set_bytes"):
        kind = classify(s)
        if s.get("pod") and not s.get("container"):
            assert kind == ("pause" if "pause" in s.get("image", "") else "pod"), s
    text = transform_cli(capture).stdout.decode()
    pause = [s for s in series(text, "container_memory_working_set_bytes") if s["cgroup_kind"] == "pause"]
    assert pause and all("pause" in s["image"] for s in pause)


def test_standalone_cadvisor_is_system_with_its_labels():
    text = transform_cli("cadvisor-standalone-golden-prometheus_metrics").stdout.decode()
    (row,) = series(text, "container_memory_working_set_bytes")
    assert row["cgroup_kind"] == "system" and "pod" not in row and "namespace" not in row
    # No pod: container_label_*/container_env_* pass through, id and name are kept.
    assert row["container_label_foo_label"] == "bar" and row["container_env_foo_env"] == "prod"
    assert row["id"] == "testcontainer" and row["name"] == "testcontaineralias"
    machine = transform_cli("cadvisor-standalone-golden-prometheus_machine_metrics").stdout.decode()
    assert "machine_cpu_cores" in machine and "cgroup_kind" not in machine  # not a cgroup


def workloads(pods_file: str) -> dict[tuple[str, str], str]:
    pods = parse_podlist(json.loads((PODS / pods_file).read_text()))
    return {k: m.workload for k, m in pods.items()}


def newest_only(rows: list[dict[str, str]], starts: dict[str, float]) -> list[dict[str, str]]:
    """Independent restart dedupe: per (namespace, pod, container) the row with the newest start."""
    best: dict[tuple, dict[str, str]] = {}
    for r in rows:
        key = (r["namespace"], r["pod"], r["container"])
        if key not in best or starts.get(r.get("id", ""), 0) > starts.get(best[key].get("id", ""), 0):
            best[key] = r
    return list(best.values())


@pytest.mark.parametrize("capture", WITH_PODS)
def test_sum_by_workload_counts_only_real_containers(capture):
    raw = (CAD / f"{capture}.txt").read_text()
    owner = workloads(CAPTURES[capture])  # type: ignore[arg-type]
    rows = []
    for s in series(raw, "container_memory_working_set_bytes"):
        s = {**s, "pod": s.get("pod") or s.get("pod_name", ""),
             "container": s.get("container") or s.get("container_name", "")}
        if s["container"] and s["container"] != "POD" and s["pod"]:
            rows.append(s)
    starts = {s["id"]: s["__value__"] for s in series(raw, "container_start_time_seconds") if "id" in s}
    expected: dict[str, float] = defaultdict(float)
    for r in newest_only(rows, starts):
        expected[owner.get((r["namespace"], r["pod"]), "")] += r["__value__"]
    got: dict[str, float] = defaultdict(float)
    for s in series(transform_cli(capture).stdout.decode(), "container_memory_working_set_bytes"):
        if s["cgroup_kind"] == "container":
            got[s.get("workload", "")] += s["__value__"]
    assert got == pytest.approx(dict(expected)) and len(got) >= 4
    # The naive sum over every series of a pod is what users get without the classification.
    naive = sum(s["__value__"] for s in series(raw, "container_memory_working_set_bytes")
                if s.get("pod") or s.get("pod_name"))
    assert sum(got.values()) < naive


def restarted(newer_copy: bool) -> bytes:
    """The real 1.35 capture with coredns restarted: every `container="coredns"` line is followed
    by a copy of it for another container id/name (CONSTRUCTED from the real capture; values of
    the copy are 7, its start time an hour older or newer than the real one)."""
    out = []
    for line in (CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt").read_bytes().split(b"\n"):
        out.append(line)
        if b'container="coredns"' in line and not line.startswith(b"#"):
            m = re.search(rb'name="([0-9a-f]{64})"', line)
            assert m, line
            copy = line.replace(m.group(1), b"f" * 64)
            key, _, rest = copy.rpartition(b"} ")
            value, _, ts = rest.partition(b" ")
            if key.startswith(b"container_start_time_seconds{"):
                value = b"%d" % (float(value) + (3600 if newer_copy else -3600))
            else:
                value = b"7"
            out.append(key + b"} " + value + (b" " + ts if ts else b""))
    return b"\n".join(out)


@pytest.mark.parametrize("newer_copy", [False, True])
def test_restart_duplicates_collapse_to_the_newest(newer_copy):
    pods = PODS / "nri-k8s-1.35-kubelet-pods.json"
    plain = offline("cadvisor", pods=pods).process(CAPTURE_135.read_bytes())
    res = offline("cadvisor", pods=pods).process(restarted(newer_copy))
    text = encode_text(res.families).decode()
    assert res.malformed == 0 and res.series_out == plain.series_out  # one series per container
    rows = [s for s in series(text, "container_memory_working_set_bytes") if s.get("container") == "coredns"]
    assert len(rows) == 1 and rows[0]["workload"] == "coredns"
    assert (rows[0]["__value__"] == 7) is newer_copy  # the newest container's value, not the last line's
    old = [s["__value__"] for s in series(encode_text(plain.families).decode(), MEM)
           if s.get("container") == "coredns"]
    assert newer_copy or rows[0]["__value__"] == old[0]


@pytest.mark.parametrize("newer_copy", [True, False])
def test_a_restart_is_noticed_after_replays(newer_copy):
    """A restart changes which container is stale (CadvisorHook.prepare): the pod's cached
    rewrites go, and the output is what a fresh collector makes of it, whichever copy is newer."""
    pods = PODS / "nri-k8s-1.35-kubelet-pods.json"
    collector = offline("cadvisor", pods=pods)
    before = CAPTURE_135.read_bytes()
    for _ in range(3):  # cold, then replays
        collector.process(before)
    assert collector.transformer.plan is not None
    after = restarted(newer_copy)
    for _ in range(2):  # scanned (new series), then replayed
        got = collector.process(after)
        fresh = offline("cadvisor", pods=pods).process(after)
        assert encode_text(got.families) == encode_text(fresh.families)
    back = collector.process(before)  # the old copy gone again: a scan, as fresh
    fresh = offline("cadvisor", pods=pods).process(before)
    assert encode_text(back.families) == encode_text(fresh.families)


_S = b'container_start_time_seconds{container="a",id="/x",namespace="n",pod="p"} '


@pytest.mark.parametrize("payload, block", [
    (b"", b""),
    (b"# TYPE x gauge\nx 1", b""),
    (_S + b"1", _S + b"1"),  # the first line, no header
    (b"a 1\n" + _S + b"1\n" + _S + b"2", _S + b"1\n" + _S + b"2"),  # no header, after another family
    (b"# HELP container_start_time_seconds Start time\n# TYPE container_start_time_seconds gauge\n"
     + _S + b"1\n" + _S + b"2\n# TYPE y gauge\ny 1", _S + b"1\n" + _S + b"2"),
    (b"# TYPE c gauge\n" + _S + b"1\n\n# EOF\n", _S + b"1\n"),  # (blank lines are skipped later)
    (b"# TYPE other gauge\nxcontainer_start_time_seconds{a=\"1\"} 1", b""),  # another name's suffix
])
def test_start_times_finds_the_family_block(payload, block):
    assert start_times(payload.split(b"\n")) == block.rstrip(b"\n")


def test_stale_reads_label_sets_as_the_parser_does():
    """_label_dict's split agrees with parse_labels, and what it cannot read is skipped."""
    assert _label_dict(b'a="1",b="x=y,z"') == {"a": "1", "b": "x=y,z"}
    assert _label_dict(b'a="1",b="say \\"hi\\""') == {"a": "1", "b": 'say "hi"'}  # (the parser's path)
    assert _label_dict(b'a="1",a="2"') is None and _label_dict(b'a="1",b') is None
    line = b'container_start_time_seconds{container="c",id="/%s",name="n",namespace="ns",pod="p"} %d'
    block = b"\n".join([line % (b"old", 1), line % (b"new", 2), b'container_start_time_seconds{id="/bad} 3'])
    assert set(_stale(block)) == {"/old"}


def test_system_cgroups_keep_distinct_ids():
    raw = (CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt").read_text()
    system_ids = {s["id"] for s in series(raw, "container_memory_working_set_bytes") if not s.get("pod")}
    assert len(system_ids) >= 4 and "/" in system_ids
    text = transform_cli("nri-k8s-1.35-kubelet-metrics-cadvisor").stdout.decode()
    out = [s for s in series(text, "container_memory_working_set_bytes") if s["cgroup_kind"] == "system"]
    assert sorted(s["id"] for s in out) == sorted(system_ids)  # none merged, none dropped
    hook = CadvisorHook(("id", "name"))
    a = hook.rewrite("cgroup", [("id", "/system.slice/a.service"), ("name", "")], None)
    b = hook.rewrite("cgroup", [("id", "/system.slice/b.service"), ("name", "")], None)
    assert a != b and ("id", "/system.slice/a.service") in a


def test_host_network_pods_add_no_network_series():
    pods = json.loads((PODS / "nri-k8s-1.35-kubelet-pods.json").read_text())
    host = {i["metadata"]["name"] for i in pods["items"] if i["spec"].get("hostNetwork")}
    assert {"kube-proxy-8k9zt", "kindnet-zkpn8"} <= host
    joined = transform_cli("nri-k8s-1.35-kubelet-metrics-cadvisor").stdout.decode()
    unjoined = encode_text(offline("cadvisor").process(
        (CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt").read_bytes()).families).decode()
    net = "container_network_receive_bytes_total"
    assert host & {s.get("pod") for s in series(unjoined, net)}  # cAdvisor reports them...
    assert not host & {s.get("pod") for s in series(joined, net)}  # ...as the node's traffic
    assert {s.get("pod") for s in series(joined, "container_cpu_usage_seconds_total")} >= host


def test_timestamps_kept_only_on_request():
    payload = (CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt").read_bytes()
    keep = offline("cadvisor", {"collectors": {"cadvisor": {"keep_timestamps": True}}}).process(payload)
    assert re.search(rb"\} [^ \n]+ [0-9]{13}$", encode_text(keep.families), re.M)


@pytest.mark.parametrize("host_network", [True, False])
def test_a_changed_pod_with_dropped_series_is_scanned_again(host_network: bool):
    """A hostNetwork pod's network series are dropped. When such a pod changes (here it is
    replaced by one that is not hostNetwork), its series come out as a fresh collector's do."""
    def podlist(app: str, host: bool) -> dict:
        return {"kind": "PodList", "items": [
            {"metadata": {"name": n, "namespace": "default", "uid": n,
                          "labels": {"app": app if n == "web-1" else "x"}},
             "spec": {"nodeName": "n1", "hostNetwork": host and n == "web-1"}, "status": {"phase": "Running"}}
            for n in ("web-1", "web-2")]}
    payload = b"".join(
        b"# TYPE container_%s gauge\n" % f + b"".join(
            b'container_%s{container="c%d",id="/p/%s/c%d",image="i",interface="eth0",name="n%d",'
            b'namespace="default",pod="%s"} %d\n' % (f, i, p, i, i, p, i)
            for p in (b"web-1", b"web-2") for i in range(3))
        for f in (b"network_receive_bytes_total", b"memory_usage_bytes"))
    collector = offline("cadvisor", {}, podlist("one", host_network))
    for _ in range(2):
        collector.process(payload)
    collector.transformer.index.replace(parse_podlist(podlist("two", not host_network)))
    got = encode_text(collector.process(payload).families)
    fresh = offline("cadvisor", {}, podlist("two", not host_network)).process(payload)
    assert got == encode_text(fresh.families)
    assert got.count(b"container_network_receive_bytes_total{") == (6 if host_network else 3)


def test_rewrites_that_collide_are_deduplicated():
    """Two cgroups of one container (no start times to tell the stale one) lose the labels
    that told them apart: in a batch as one by one, the family keeps one series each."""
    payload = b"# TYPE container_memory_usage_bytes gauge\n" + b"".join(
        b'container_memory_usage_bytes{container="c%d",id="/p/%d-%d",image="i",name="n%d-%d",'
        b'namespace="default",pod="web-1"} %d\n' % (i, i, k, i, k, 10 * i + k)
        for i in range(3) for k in range(2))
    pods = {"kind": "PodList", "items": [{"metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
                                          "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}]}
    collector = offline("cadvisor", {}, pods)
    for _ in range(2):  # cold, then warm
        a = collector.process(payload)
        assert a.series_out == 3 and a.dropped == 3 and a.join_misses == 0
        lines = [ln for ln in encode_text(a.families).split(b"\n") if ln.startswith(b"container_")]
        assert len(lines) == 3 and all(b'pod="web-1"' in ln and b"id=" not in ln for ln in lines)
        assert {ln.rpartition(b" ")[2] for ln in lines} == {b"1", b"11", b"21"}  # the last of each pair


def test_rewrites_follow_pod_changes():
    """Label texts a batch rewrote are evicted with their pod: after the pod's labels change,
    every series shows the new ones, as a fresh collector's do."""
    def podlist(app: str) -> dict:
        return {"kind": "PodList", "items": [{"metadata": {
            "name": "web-1", "namespace": "default", "uid": "u1", "labels": {"app": app}},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}]}
    payload = b"# TYPE container_memory_usage_bytes gauge\n" + b"".join(
        b'container_memory_usage_bytes{container="c%d",id="/p/c%d",image="i",name="n%d",'
        b'namespace="default",pod="web-1"} %d\n' % (i, i, i, i) for i in range(8))
    collector = offline("cadvisor", {}, podlist("one"))
    before = encode_text(collector.process(payload).families)
    assert before.count(b'label_app="one"') == 8
    collector.transformer.index.replace(parse_podlist(podlist("two")))
    after = encode_text(collector.process(payload).families)
    assert after == encode_text(offline("cadvisor", {}, podlist("two")).process(payload).families)
    assert after.count(b'label_app="two"') == 8 and b'label_app="one"' not in after


def test_an_upstream_cgroup_kind_is_kept_renamed():
    payload = (b"# TYPE container_cpu_usage_seconds_total counter\n"
               b'container_cpu_usage_seconds_total{cgroup_kind="x",id="/system.slice/a"} 1\n')
    collector = offline("cadvisor")
    for _ in range(2):  # cold, then replayed
        text = encode_text(collector.process(payload).families).decode()
        assert text.count("cgroup_kind=") == 2 and 'exported_cgroup_kind="x"' in text
        assert 'cgroup_kind="system"' in text


def test_label_caches_stay_bounded_under_series_churn():
    """Series that name no pod are not evicted with one: when systemd's transient units come
    and go, the label caches are dropped once they outgrow the payload (here 20 series)."""
    collector = offline("cadvisor")
    sizes = []
    for scrape in range(200):
        payload = b"# TYPE container_memory_usage_bytes gauge\n" + b"".join(
            b'container_memory_usage_bytes{container="",id="/system.slice/run-%d.scope",image="",'
            b'name="",namespace="",pod=""} 1\n' % (scrape * 20 + i) for i in range(20))
        assert collector.process(payload).series_out == 20
        t = collector.transformer
        sizes.append(t.rewriter.size())
    assert max(sizes) <= 2 * 22 + 1024 < 200 * 20  # (without the bound: one entry per series ever seen)
