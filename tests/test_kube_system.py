"""kube_system: control-plane pod health from the API server (golden on the real 1.35 pods),
live updates through the watch, and alerts that resolve when a container recovers."""
from __future__ import annotations

import copy
import json

import pytest

from exporter.errors import NotPermittedError
from exporter.expfmt import encode_text
from tests.conftest import offline
from tests.conftest import Fixtures
from tests.replay_api import background, collector, config, eventually, fast, replay, value

PODS = Fixtures("kubelet") / "nri-k8s-1.35-kubelet-pods.json"
P = "kubebridge_kube_system"


@pytest.mark.parametrize("namespaces,name", [(None, "kube_system.txt"), (["*"], "kube_system-all.txt")])
def test_golden_offline(namespaces, name, golden):
    doc = {"collectors": {"kube_system": {"namespaces": namespaces}}} if namespaces else {}
    res = offline("kube_system", doc).process(PODS.read_bytes())
    golden(name, encode_text(res.families))
    fams = res.families
    assert value(fams, f"{P}_pod_ready", pod="kube-apiserver-datagen-1-35", workload="kube-apiserver",
                 workload_kind="StaticPod", node="datagen-1-35", label_component="kube-apiserver") == 1
    if namespaces:  # a pod restarting after failures, from the capture
        assert value(fams, f"{P}_container_restarts_total", pod="e2e-container-creating") == 2
        assert value(fams, f"{P}_container_last_terminated", pod="e2e-container-creating") == 1
        assert value(fams, f"{P}_pod_ready", pod="e2e-failjob-64h4g") == 0  # finished: left out
    else:
        assert value(fams, f"{P}_containers", state="running") == 9
        assert value(fams, f"{P}_pod_ready", namespace="scraper") == 0


def test_golden_crashloop(golden):
    """The real capture with coredns put into CrashLoopBackOff after an OOM kill."""
    doc = json.loads(PODS.read_text())
    doc["items"] = [_crashing(p) if p["metadata"]["name"].startswith("coredns-") else p for p in doc["items"]]
    res = offline("kube_system").process(json.dumps(doc).encode())
    golden("kube_system-crashloop.txt", encode_text(res.families))
    assert value(res.families, f"{P}_container_waiting", reason="CrashLoopBackOff", workload="coredns") == 1
    assert value(res.families, f"{P}_container_waiting") == 1


def _crashing(pod: dict) -> dict:
    pod = copy.deepcopy(pod)
    cs = pod["status"]["containerStatuses"][0]
    cs.update(restartCount=4, ready=False, state={"waiting": {"reason": "CrashLoopBackOff",
                                                              "message": "back-off 40s"}},
              lastState={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    for cond in pod["status"]["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["status"] = "False"
    return pod


async def test_watch_follows_crashloop_and_recovery(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "kube_system", tmp_path, kubeconfig=True), "kube_system"))
        async with background(c):
            await eventually(lambda: c.reflectors and c.reflectors[0][0].synced.is_set())
            fams = await c.collect(5)
            assert value(fams, f"{P}_pod_ready", pod="coredns-7d764666f9-qdcxt") == 1
            assert f"{P}_container_waiting" not in {f.name for f in fams}
            healthy = srv.store.get("pods", "kube-system", "coredns-7d764666f9-qdcxt")

            srv.update_pod(_crashing(healthy))
            await eventually(lambda: value(c._families(_pods(c)).families, f"{P}_container_waiting") == 1)
            fams = await c.collect(5)
            labels = dict(namespace="kube-system", pod="coredns-7d764666f9-qdcxt", container="coredns",
                          workload="coredns", workload_kind="Deployment")
            assert value(fams, f"{P}_container_waiting", reason="CrashLoopBackOff", **labels) == 1
            assert value(fams, f"{P}_container_restarts_total", **labels) == 4
            assert value(fams, f"{P}_container_last_terminated", reason="OOMKilled", exit_code="137",
                         **labels) == 1
            assert value(fams, f"{P}_pod_ready", pod="coredns-7d764666f9-qdcxt") == 0
            assert value(fams, f"{P}_containers", state="waiting", workload="coredns") == 1

            recovered = _crashing(healthy)
            recovered["status"] = copy.deepcopy(healthy["status"])
            recovered["status"]["containerStatuses"][0].update(
                restartCount=4, lastState={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
            srv.update_pod(recovered)
            await eventually(lambda: value(c._families(_pods(c)).families, f"{P}_container_waiting") == 0)
            fams = await c.collect(5)
            assert f"{P}_container_waiting" not in {f.name for f in fams}  # the alert resolves
            assert value(fams, f"{P}_container_restarts_total", **labels) == 4
            assert value(fams, f"{P}_containers", state="waiting", workload="coredns") == 0

            srv.delete_pod("kube-system", "coredns-7d764666f9-qdcxt")
            srv.add_pod({"metadata": {"name": "elsewhere", "namespace": "default"}})  # not watched
            await eventually(lambda: len(_pods(c)) == 8)
            fams = await c.collect(5)
            assert value(fams, f"{P}_pod_ready", pod="coredns-7d764666f9-qdcxt") == 0
            assert value(fams, f"{P}_pod_ready", namespace="default") == 0


async def test_several_namespaces_and_not_permitted(tmp_path):
    async with replay(tmp_path) as srv:
        srv.forbid("/api/v1/namespaces/scraper/pods")
        c = fast(collector(config(srv, "kube_system", tmp_path, namespaces=["kube-system", "scraper"]),
                           "kube_system"))
        async with background(c):
            await eventually(lambda: len(c.reflectors) == 2 and c.reflectors[1][0].error is not None
                             and c.reflectors[0][0].synced.is_set())
            with pytest.raises(NotPermittedError):
                await c.collect(5)
            srv.allow("/api/v1/namespaces/scraper/pods")
            await eventually(lambda: all(r.synced.is_set() and r.error is None for r, _ in c.reflectors))
            fams = await c.collect(5)
        assert value(fams, f"{P}_pod_ready", namespace="scraper") > 0
        assert value(fams, f"{P}_pod_ready", namespace="kube-system") == 9


def _pods(c) -> list[dict]:
    return [p for _, s in c.reflectors for p in s.pods.values()]
