"""The join: workload resolution for every kind, label sanitising, both label generations."""
from __future__ import annotations

import asyncio
import json

import pytest

from exporter.expfmt import encode_text
from exporter.transform import NoHook, Options, Transformer
from exporter.podindex import PodIndex
from exporter.pods import LabelPolicy, label_name, parse_podlist, pod_labels, workload_of
from tests.conftest import Fixtures

PODS = Fixtures("kubelet")


def pod(name, owners=(), labels=None, annotations=None, node="n1", ns="default", host_network=False):
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {},
                         "annotations": annotations or {},
                         "ownerReferences": [{"kind": k, "name": n, "controller": True} for k, n in owners]},
            "spec": {"nodeName": node, "hostNetwork": host_network}}


WORKLOADS = [
    (pod("web-7d9f8-abcde", [("ReplicaSet", "web-7d9f8")], {"pod-template-hash": "7d9f8"}),
     ("web", "Deployment")),
    (pod("rs-only-x1", [("ReplicaSet", "rs-only")]), ("rs-only", "ReplicaSet")),
    (pod("db-0", [("StatefulSet", "db")]), ("db", "StatefulSet")),
    (pod("agent-x", [("DaemonSet", "agent")]), ("agent", "DaemonSet")),
    (pod("migrate-abc", [("Job", "migrate")]), ("migrate", "Job")),
    (pod("backup-29707813-h2f28", [("Job", "backup-29707813")]), ("backup", "CronJob")),
    (pod("etcd-n1", [("Node", "n1")]), ("etcd", "StaticPod")),
    (pod("kube-apiserver-n1", annotations={"kubernetes.io/config.source": "file"}),
     ("kube-apiserver", "StaticPod")),
    (pod("lonely"), ("lonely", "Pod")),
    (pod("wf-1", [("Workflow", "wf")]), ("wf", "Workflow")),
]


@pytest.mark.parametrize("item,expected", WORKLOADS, ids=lambda x: x[1] if isinstance(x, tuple) else "")
def test_workload_kinds(item, expected):
    from exporter.pods import pod_meta
    m = pod_meta(item)
    assert (m.workload, m.workload_kind) == expected


@pytest.mark.parametrize("key,name", [("app", "label_app"),
                                      ("app.kubernetes.io/name", "label_app_kubernetes_io_name"),
                                      ("k8s-app", "label_k8s_app"), ("appVersion", "label_app_version"),
                                      ("Team", "label_team"), ("helm.sh/chart", "label_helm_sh_chart")])
def test_label_name(key, name):
    assert label_name(key) == name


def test_conflicting_sanitised_names_get_suffixes():
    labels = {"a.b": "1", "a-b": "2", "c": "3"}
    assert pod_labels(labels, LabelPolicy(frozenset({"*"}))) == [
        ("label_a_b_conflict1", "2"), ("label_a_b_conflict2", "1"), ("label_c", "3")]


def test_generated_conflict_name_never_clashes():
    labels = {"a.b": "1", "a-b": "2", "a_b_conflict1": "3"}
    pairs = pod_labels(labels, LabelPolicy(frozenset({"*"})))
    names = [n for n, _ in pairs]
    assert len(set(names)) == 3 and ("label_a_b_conflict1", "3") in pairs
    assert sorted(v for _, v in pairs) == ["1", "2", "3"]


def test_allow_deny_and_wildcard():
    labels = {"app": "x", "team": "y", "secret-thing": "z"}
    assert pod_labels(labels, LabelPolicy()) == [("label_app", "x")]
    assert pod_labels(labels, LabelPolicy(frozenset({"*"}), frozenset({"secret-thing"}))) == [
        ("label_app", "x"), ("label_team", "y")]


def _index(items, policy=None):
    idx = PodIndex(policy)
    idx.replace(parse_podlist({"items": items}))
    return idx


@pytest.mark.parametrize("line", [
    b'container_cpu_usage_seconds_total{container="app",namespace="default",pod="web-7d9f8-abcde"} 1',
    b'container_cpu_usage_seconds_total{container_name="app",namespace="default",'
    b'pod_name="web-7d9f8-abcde"} 1',
])
def test_join_both_label_generations(line):
    idx = _index([pod("web-7d9f8-abcde", [("ReplicaSet", "web-7d9f8")],
                      {"pod-template-hash": "7d9f8", "app": "web"})])
    t = Transformer(Options(collector="cadvisor", cluster="prod"), idx)
    for _ in range(2):
        res = t.transform(b"# TYPE container_cpu_usage_seconds_total counter\n" + line + b"\n")
        assert (b'label_app="web",workload="web",workload_kind="Deployment",node="n1",cluster="prod",'
                b'collector="cadvisor"} 1') in encode_text(res.families)


def test_join_follows_pod_changes_and_counts_misses():
    idx = _index([pod("a", labels={"app": "one"})])
    t = Transformer(Options(collector="c"), idx)
    payload = b'# TYPE m gauge\nm{namespace="default",pod="a"} 1\nm{namespace="default",pod="b"} 2\n'
    res = t.transform(payload)
    assert res.join_misses == 1
    assert b'label_app="one"' in encode_text(res.families)
    idx.replace(parse_podlist({"items": [pod("a", labels={"app": "two"}),
                                         pod("b", labels={"app": "three"})]}))
    res = t.transform(payload)
    text = encode_text(res.families)
    assert res.join_misses == 0 and b'label_app="two"' in text and b'label_app="three"' in text
    assert b'label_app="one"' not in text


def test_a_pod_change_rewrites_that_pods_series_only():
    """After one pod's labels change, its series show the new labels, the other pod's rewrites
    stay cached, and the output is what a fresh transformer makes; the next scrape replays."""
    def items(app_a: str) -> list:
        return [pod("a", labels={"app": app_a}), pod("b", labels={"app": "bee"})]
    idx = _index(items("one"))
    t = Transformer(Options(collector="c"), idx)
    payload = b"# TYPE m gauge\n" + b"".join(
        b'm{namespace="default",pod="%s",k="%d"} %d\n' % (p, k, k) for p in (b"a", b"b") for k in range(5))
    t.transform(payload)
    t.transform(payload)
    assert t.plan is not None
    idx.replace(parse_podlist({"items": items("two")}))
    assert t.rewriter.evict([]) is False and t.rewriter.size() == 10
    got = t.transform(payload)
    assert t.rewriter.size() == 10
    assert encode_text(got.families) == encode_text(
        Transformer(Options(collector="c"), _index(items("two"))).transform(payload).families)
    assert encode_text(got.families).count(b'label_app="two"') == 5 and t.plan is not None
    assert encode_text(t.transform(payload).families) == encode_text(got.families)


def test_upstream_label_wins_and_collector_label_kept_as_exported():
    idx = _index([pod("a", node="real-node")])
    t = Transformer(Options(collector="c"), idx)
    res = t.transform(b'# TYPE m gauge\nm{namespace="default",pod="a",node="upstream",collector="x"} 1\n')
    line = res.families[0].lines[0]
    assert b'node="upstream"' in line and b'node="real-node"' not in line
    assert b'exported_collector="x"' in line and line.count(b'collector="c"') == 1
    assert res.label_conflicts == 1


def test_real_podlists_parse():
    for path in PODS.glob("*pod*.json"):
        pods = parse_podlist(json.loads(path.read_text()))
        assert pods, path
        for meta in pods.values():
            assert meta.workload and meta.workload_kind, (path, meta.name)


def test_real_135_static_pods_and_cronjobs():
    pods = parse_podlist(json.loads((PODS / "nri-k8s-1.35-kubelet-pods.json").read_text()))
    assert pods[("kube-system", "kube-apiserver-datagen-1-35")].workload == "kube-apiserver"
    assert pods[("kube-system", "kube-apiserver-datagen-1-35")].workload_kind == "StaticPod"
    assert pods[("scraper", "e2e-cronjob-29707813-dhlr2")].workload_kind == "CronJob"
    assert pods[("scraper", "e2e-cronjob-29707813-dhlr2")].workload == "e2e-cronjob"
    assert pods[("scraper", "e2e-failjob-64h4g")].workload_kind == "Job"
    assert workload_of({"metadata": {}}) == ("", "Pod")


class _Spy(PodIndex):
    refreshes = 0

    def request_refresh(self) -> None:
        self.refreshes += 1


def test_unknown_pods_are_replayed_and_still_counted():
    """A series of a pod the index lacks does not keep the payload off the fast path: it is
    replayed with the join it had (none), still counted as a miss and still asks for a
    refresh; once the pod is known its series are joined."""
    idx = _Spy()
    idx.replace(parse_podlist({"items": [pod("a", labels={"app": "one"})]}))
    t = Transformer(Options(collector="c"), idx)
    payload = (b'# TYPE m gauge\nm{namespace="default",pod="a",app="x"} %d\n'
               b'm{namespace="default",pod="b"} %d\n')
    for v in range(3):
        res = t.transform(payload % (v, v))
        fresh = Transformer(Options(collector="c"), idx).transform(payload % (v, v))
        assert encode_text(res.families) == encode_text(fresh.families)
        assert (res.join_misses, res.label_conflicts, res.series_out) == (1, 0, 2)
    assert t.plan is not None and t.plan.counts.join_misses == 1  # the last two were replays
    assert idx.refreshes >= 3 + 3  # each transform asked (and each fresh one)
    idx.replace(parse_podlist({"items": [pod("a", labels={"app": "one"}), pod("b", labels={"app": "two"})]}))
    res = t.transform(payload % (9, 9))
    assert res.join_misses == 0 and b'label_app="two"' in encode_text(res.families)


def test_conflicts_are_counted_on_replay_too():
    idx = _index([pod("a", node="real-node")])
    t = Transformer(Options(collector="c"), idx)
    payload = b'# TYPE m gauge\nm{namespace="default",pod="a",node="upstream"} %d\n'
    assert [t.transform(payload % v).label_conflicts for v in range(3)] == [1, 1, 1]
    assert t.plan is not None


async def test_refresh_asked_from_a_worker_thread_wakes_the_index():
    """Large payloads are transformed in a thread; its refresh request must reach the loop."""
    idx, calls = PodIndex(), []

    async def fetch() -> dict:
        calls.append(1)
        return {}
    task = asyncio.create_task(idx.run(fetch, interval=60, min_gap=0.05))
    try:
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # past min_gap: now waiting for the interval or a request
        await asyncio.to_thread(idx.request_refresh)
        for _ in range(200):
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(calls) >= 2
    finally:
        task.cancel()


class _Adding(NoHook):
    """A hook that adds labels after the upstream ones."""

    def __init__(self, added):
        self.added = added

    def variant(self, family):
        return "v"

    def rewrite(self, variant, pairs, pod):
        return list(pairs) + self.added


@pytest.mark.parametrize("added", [
    [("kind", "x")],                     # a plain addition
    [("b", "y")],                        # named like an upstream label
    [("cluster", "mine")],               # an addition named like a join label: the hook's wins
    [("kind", "x"), ("cluster", "mine")],
])
def test_hook_additions_merge_with_the_join(added):
    """A hook's additions that name an upstream label or a join label come out once, the
    hook's value winning over the join's; cold and warm give the same exposition."""
    payload = b"# TYPE m gauge\n" + b"".join(b'm{a="%d",b="x%d"} %d\n' % (i, i, i) for i in range(6))
    t = Transformer(Options(collector="t", cluster="prod"), None, _Adding(added))
    outs = [encode_text(t.transform(payload).families) for _ in range(2)]
    assert outs[0] == outs[1]
    assert outs[0].count(b"cluster=") == 6
    for line in outs[0].split(b"\n")[1:-1]:
        names = [p.split(b"=")[0] for p in line.split(b"{")[1].split(b"}")[0].split(b",")]
        assert len(names) == len(set(names)), line
    if ("cluster", "mine") in added:
        assert outs[0].count(b'cluster="mine"') == 6
