"""Pod and container health from /pods: goldens for every pod list, quantities, the join, and a
crash loop that fires and resolves against the replay kubelet."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors._pods import parse_quantity, resource_label
from exporter import config as config_mod
from exporter.deps import Deps
from exporter.errors import NoDataError
from exporter.expfmt import encode_text
from exporter.merge import merge
from exporter.pods import parse_podlist
from exporter.registry import get
from exporter.replay.kubelet import ReplayKubelet
from exporter.replay.podstatus import crash_loop_backoff, running_again
from exporter.server import build_app
from tests.conftest import Fixtures, offline, pod_index
from tests.test_e2e import ready, scrape

PODS = Fixtures("kubelet")
LISTS = ["dd-kubelet-pods", "dd-kubernetes-1.1-pods_list", "nri-2018-minikube-kubelet_pods_payload",  # golden
         "nri-k8s-1.16-kubelet-pods", "nri-k8s-1.24-kubelet-pods", "nri-k8s-1.35-kubelet-pods"]


def exposition(res) -> bytes:
    return encode_text(merge([("pods", res.families)])[0])


def transform(podlist: str, config: dict | None = None) -> str:
    return exposition(offline("pods", config).process((PODS / f"{podlist}.json").read_bytes())).decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


@pytest.mark.parametrize("podlist", LISTS)
def test_golden(podlist, golden):
    res = offline("pods").process((PODS / f"{podlist}.json").read_bytes())
    assert res.malformed == 0 and res.series_out > 10
    golden(f"pods-{podlist}.txt", exposition(res))


def test_the_index_keeps_only_what_is_read_of_a_pod():
    raw = (PODS / "nri-k8s-1.35-kubelet-pods.json").read_bytes()
    doc = json.loads(raw)
    doc["items"][0]["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "c"},
                                               "projected": {"sources": []}})
    doc["items"][1]["spec"]["containers"] = "odd"  # (an unexpected type is kept as it is)
    before = json.dumps(doc)
    pods = {m.name: m for m in parse_podlist(doc).values()}
    assert json.dumps(doc) == before  # the input is not changed
    kept = json.dumps([m.raw for m in pods.values()])
    for unread in ("managedFields", '"env"', "volumeMounts", "livenessProbe", "tolerations", "projected",
                   "last-applied-configuration"):
        assert unread in before and unread not in kept, unread
    first = pods[doc["items"][0]["metadata"]["name"]].raw
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "c"}} in first["spec"]["volumes"]
    assert first["spec"]["containers"][0]["resources"] and first["status"]["containerStatuses"][0]["state"]
    assert pods[doc["items"][1]["metadata"]["name"]].raw["spec"]["containers"] == "odd"
    assert len(kept) < 0.6 * len(raw)


def test_cli_transform_source_pods():
    out = subprocess.run([sys.executable, "-m", "exporter", "transform", "--source", "pods",
                          str(PODS / "nri-k8s-1.35-kubelet-pods.json")], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == transform("nri-k8s-1.35-kubelet-pods")


@pytest.mark.parametrize("text,value", [
    ("5m", 0.005), ("100m", 0.1), ("1", 1.0), ("2.5", 2.5), (".5", 0.5), ("5M", 5e6), ("64Mi", 64 * 2**20),
    ("92960Ki", 92960 * 1024), ("1Gi", 2**30), ("1.5Gi", 1.5 * 2**30), ("1G", 1e9), ("1k", 1e3),
    ("1e3", 1e3), ("1E3", 1e3), ("12e-1", 1.2), ("1E", 1e18), ("1Ei", 2**60), ("500n", 5e-7), ("3u", 3e-6),
    ("-1", -1.0), ("+2", 2.0), (3, 3.0),
])
def test_quantities(text, value):
    assert parse_quantity(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["", "m", "5mi", "1KI", "1K", "e3", "1e", "1.2.3", "1 Gi", "Gi1", None,
                                  True])
def test_bad_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize("name,label,unit", [
    ("cpu", "cpu", "core"), ("memory", "memory", "byte"), ("ephemeral-storage", "ephemeral_storage", "byte"),
    ("hugepages-2Mi", "hugepages_2Mi", "byte"), ("nvidia.com/gpu", "nvidia_com_gpu", "integer"),
    ("pods", "pods", "integer"),
])
def test_resource_labels_as_kube_state_metrics(name, label, unit):
    assert resource_label(name) == (label, unit)


def test_requests_and_limits_in_base_units_with_the_join():
    text = transform("nri-k8s-1.35-kubelet-pods", {"cluster": "c"})
    req = {(lb["pod"], lb["resource"], lb["unit"]): (v, lb)
           for lb, v in samples(text, "kubebridge_pods_container_resource_requests")}
    cpu, labels = req[("e2e-container-creating", "cpu", "core")]
    assert cpu == 0.005 and req[("e2e-container-creating", "memory", "byte")][0] == 5_000_000  # 5m, 5M
    assert labels == {"namespace": "scraper", "pod": "e2e-container-creating", "container": "alpine",
                      "resource": "cpu", "unit": "core", "label_app": "creating",
                      "workload": "e2e-container-creating", "workload_kind": "Pod", "node": "datagen-1-35",
                      "cluster": "c", "collector": "pods"}
    limits = {(lb["pod"], lb["resource"]): v
              for lb, v in samples(text, "kubebridge_pods_container_resource_limits")}
    assert limits[("coredns-7d764666f9-qdcxt", "memory")] == 170 * 2**20


def test_phases_are_one_hot_and_states_reported():
    text = transform("nri-k8s-1.16-kubelet-pods")
    phases = sorted((lb["phase"], v) for lb, v in samples(text, "kubebridge_pods_phase")
                    if lb["pod"] == "e2e-container-creating")
    assert phases == [("Failed", 0), ("Pending", 1), ("Running", 0), ("Succeeded", 0), ("Unknown", 0)]
    ((waiting, value),) = samples(text, "kubebridge_pods_container_waiting")
    assert (waiting["container"], waiting["reason"], value) == ("alpine", "ContainerCreating", 1)
    ((last, _),) = samples(text, "kubebridge_pods_container_last_terminated")
    assert (last["pod"], last["reason"], last["exit_code"]) == ("storage-provisioner", "Error", "1")
    ((_, finished),) = samples(text, "kubebridge_pods_container_last_terminated_timestamp_seconds")
    assert finished == 1639575853  # finishedAt 2021-12-15T13:44:13Z
    text = transform("nri-k8s-1.24-kubelet-pods")
    failed = [lb for lb, _ in samples(text, "kubebridge_pods_container_terminated")
              if lb.get("reason") == "Error"]
    assert len(failed) == 6 and all(lb["exit_code"] != "0" for lb in failed)


def test_old_pod_lists_without_fields():
    # Kubernetes 1.1: a pod without phase, no conditions: nothing invented for them.
    text = transform("dd-kubernetes-1.1-pods_list")
    phased = {lb["pod"] for lb, _ in samples(text, "kubebridge_pods_phase")}
    doc = json.loads((PODS / "dd-kubernetes-1.1-pods_list.json").read_text())
    unphased = {i["metadata"]["name"] for i in doc["items"] if not i.get("status", {}).get("phase")}
    assert unphased and not unphased & phased


def test_bad_quantity_is_counted_not_guessed():
    doc = {"items": [{"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [
        {"name": "c", "resources": {"requests": {"cpu": "lots", "memory": "1Mi"}}}]}}]}
    res = offline("pods").process(json.dumps(doc).encode())
    assert res.malformed == 1
    (row,) = samples(exposition(res).decode(), "kubebridge_pods_container_resource_requests")
    assert row[0]["resource"] == "memory" and row[1] == 2**20


# -- against the replay kubelet --------------------------------------------------------


def config(replay: ReplayKubelet) -> config_mod.Config:
    ep = {"url": replay.base_url, "token_file": str(replay.token_file), "ca_file": str(replay.ca_file)}
    doc = {"cluster": "e2e", "node_name": replay.node_name, "pod_refresh_interval": "0.1s", "kubelet": ep}
    return config_mod.parse(doc, env={})


WAITING = ('kubebridge_pods_container_waiting{namespace="scraper",pod="e2e-container-creating",'
           'container="alpine"')


async def until(client, check, what: str) -> str:
    for _ in range(200):
        text = (await scrape(client)).decode()
        if check(text):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_crash_loop_fires_then_resolves(replay, aiohttp_client):
    client = await aiohttp_client(build_app(config(replay)))
    await ready(client)
    text = (await scrape(client)).decode()
    assert WAITING not in text  # the capture caught it just terminated, between two restarts
    replay.update_pod("scraper", "e2e-container-creating", lambda p: crash_loop_backoff(p, "alpine"))
    text = await until(client, lambda t: WAITING in t, "the crash loop never showed")
    (line,) = [ln for ln in text.splitlines() if ln.startswith(WAITING)]
    assert 'reason="CrashLoopBackOff",label_app="creating",workload="e2e-container-creating"' in line
    assert line.endswith(' 1') and 'cluster="e2e",collector="pods"' in line
    assert 'kubebridge_pods_container_restarts_total{namespace="scraper",pod="e2e-container-creating",' \
           'container="alpine",label_app="creating",workload="e2e-container-creating",workload_kind="Pod",' \
           'node="datagen-1-35",cluster="e2e",collector="pods"} 2' in text
    (last,) = [ln for ln in text.splitlines() if "e2e-container-creating" in ln
               and ln.startswith("kubebridge_pods_container_last_terminated{")]
    assert 'reason="Completed",exit_code="0"' in last
    # It recovers: the waiting series disappears (Prometheus marks it stale: the alert resolves).
    replay.update_pod("scraper", "e2e-container-creating",
                      lambda p: running_again(p, "alpine", "2026-06-26T10:20:00Z"))
    text = await until(client, lambda t: WAITING not in t, "the waiting series never went away")
    assert 'container="alpine",state="running",label_app="creating"' in text
    assert 'container="alpine",label_app="creating",workload="e2e-container-creating",workload_kind="Pod",' \
           'node="datagen-1-35",cluster="e2e",collector="pods"} 3' in text  # restarts_total 3, ready 1
    assert 'kubebridge_up{collector="pods",cluster="e2e"} 1' in text


async def test_no_data_before_the_index_synced_and_down_when_stale(replay):
    """The index is the source: not synced yet is no data; not refreshed for long is down."""
    cfg = config(replay)
    index = pod_index(None, cfg)  # never synced
    collector = get("pods").factory(Deps(cfg, None, index), cfg.collectors["pods"])
    with pytest.raises(NoDataError):
        await collector.collect(1.0)
    index.replace({})
    assert await collector.collect(1.0) == []
    index.last_sync = time.time() - 3600  # the kubelet has refused /pods for an hour
    with pytest.raises(ConnectionError):
        await collector.collect(1.0)


async def test_series_are_built_once_per_index_refresh(replay):
    """Between two refreshes of the index a scrape serves the families built at the last one;
    a refresh (even one where only a pod's status changed) builds them again."""
    cfg = config(replay)
    index = pod_index(None, cfg)
    doc = json.loads(replay._body("/pods"))
    index.replace(parse_podlist(doc))
    collector = get("pods").factory(Deps(cfg, None, index), cfg.collectors["pods"])
    first = await collector.collect(1.0)
    assert await collector.collect(1.0) is first
    item = next(i for i in doc["items"] if i["status"].get("containerStatuses"))
    item["status"]["containerStatuses"][0]["restartCount"] = 4242
    index.replace(parse_podlist(doc))
    again = await collector.collect(1.0)
    assert again is not first
    restarts = [ln for f in again if f.name.endswith("container_restarts_total") for ln in f.lines]
    assert any(ln.endswith(b" 4242") for ln in restarts)
