"""The sidecar collector: kubebridge inside an application pod, identity from the downward API,
no pod index, no kubelet, no credentials; and the example manifest."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from collectors.sidecar import SidecarCollector, infer_workload, parse_labels_file
from exporter import config as config_mod
from exporter.deps import Deps
from exporter.errors import ConfigError
from exporter.merge import merge
from exporter.server import STATE, build_app
from tests.etcd_cluster import Series
from tests.autodiscovery_apps import DEFAULTS_OFF, TEXT_APP, app_servers, scrape_until

ROOT = Path(__file__).resolve().parent.parent
POD = "checkout-7d9f8c6b5-x2x9q"
LABELS = 'app.kubernetes.io/name="checkout"\npod-template-hash="7d9f8c6b5"\nnote="say \\"hi\\" \\\\ bye"\n'


@pytest.fixture
async def apps():
    async with app_servers() as start:
        yield start


def test_downward_api_labels_file():
    text = LABELS + "garbage line\n\n"
    assert parse_labels_file(text) == {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8c6b5",
                                       "note": 'say "hi" \\ bye'}


@pytest.mark.parametrize("name,labels,expected", [
    (POD, {"pod-template-hash": "7d9f8c6b5"}, ("checkout", "Deployment")),
    ("db-0", {"statefulset.kubernetes.io/pod-name": "db-0", "controller-revision-hash": "db-5f"},
     ("db", "StatefulSet")),
    ("agent-x7k2p", {"controller-revision-hash": "6c8", "pod-template-generation": "3"},
     ("agent", "DaemonSet")),
    ("migrate-abcde", {"batch.kubernetes.io/job-name": "migrate"}, ("migrate", "Job")),
    ("backup-29707813-h2f28", {"job-name": "backup-29707813"}, ("backup", "CronJob")),
    ("lonely", {}, ("lonely", "Pod")),
])
def test_workload_from_labels(name, labels, expected):
    assert infer_workload(name, labels) == expected


def sidecar_config(tmp_path: Path, port: int, *, listen: str = "127.0.0.1:9500", kubelet: dict | None = None,
                   **targets) -> config_mod.Config:
    (tmp_path / "labels").write_text(LABELS)
    sa = tmp_path / "sa"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text("service-account-token")
    doc = {"listen_address": listen, "cluster": "prod", "kubelet": kubelet or {},
           "collectors": {**DEFAULTS_OFF, "sidecar": {
               "enabled": True, "pod_name": POD, "labels_file": str(tmp_path / "labels"),
               "targets": targets or {"app": {"port": port, "labels": {"team": "payments"}}}}}}
    env = {"POD_NAMESPACE": "shop", "NODE_NAME": "n1", "KUBEBRIDGE_SA_DIR": str(sa)}
    return config_mod.parse(doc, env=env)


async def test_sidecar_needs_no_kubelet_and_sends_no_credentials(tmp_path, apps, aiohttp_client,
                                                                 aiohttp_server):
    kubelet_hits = []

    async def kubelet(request):
        kubelet_hits.append(request.path)
        return web.Response(text="{}")
    fake = web.Application()
    fake.router.add_get("/{tail:.*}", kubelet)
    fake_kubelet = await aiohttp_server(fake)
    app = await apps()
    kubelet_url = str(fake_kubelet.make_url("")).rstrip("/")
    token = str(tmp_path / "sa" / "token")
    cfg = sidecar_config(tmp_path, app.port, kubelet={"url": kubelet_url, "token_file": token})
    assert cfg.kubelet.token_file == token  # a kubelet token is configured; it must never be used
    server = build_app(cfg)
    client = await aiohttp_client(server)
    assert (await client.get("/readyz")).status == 200  # nothing to sync
    text = await scrape_until(client, lambda t: "app_requests_total{" in t)
    assert server[STATE].index is None
    assert (f'app_requests_total{{code="500",team="payments",namespace="shop",pod="{POD}",container="app",'
            'label_app_kubernetes_io_name="checkout",workload="checkout",workload_kind="Deployment",'
            'node="n1",cluster="prod",collector="sidecar"} 1') in text
    assert (f'kubebridge_autodiscovery_target_up{{namespace="shop",pod="{POD}",container="app",'
            'cluster="prod",collector="sidecar"} 1') in text
    assert 'kubebridge_autodiscovery_targets{trigger="sidecar",cluster="prod",collector="sidecar"} 1' in text
    assert 'kubebridge_up{collector="sidecar",cluster="prod"} 1' in text
    assert kubelet_hits == []
    assert app.requests and all("Authorization" not in h for h in app.requests)


async def test_labels_file_changes_are_followed(tmp_path, apps):
    app = await apps()
    cfg = sidecar_config(tmp_path, app.port)
    c = SidecarCollector(Deps(cfg, None, None), cfg.collectors["sidecar"])
    try:
        s = Series(merge([("s", await c.collect(5.0))])[0])
        assert {lb["label_app_kubernetes_io_name"] for lb, _ in s.get("app_requests_total")} == {"checkout"}
        # The kubelet rewrites the file (atomically, through a symlink swap) when labels change.
        new = tmp_path / "labels.new"
        new.write_text('app.kubernetes.io/name="checkout-v2"\n')
        new.replace(tmp_path / "labels")
        s = Series(merge([("s", await c.collect(5.0))])[0])
        names = {lb["label_app_kubernetes_io_name"] for lb, _ in s.get("app_requests_total")}
        assert names == {"checkout-v2"}
        assert {lb["workload_kind"] for lb, _ in s.get("app_requests_total")} == {"Pod"}  # no hash label now
    finally:
        await c.engine.close()


async def test_own_port_and_other_hosts_refused(tmp_path, caplog):
    with pytest.raises(ConfigError) as err:
        sidecar_config(tmp_path, 1, app={"url": "http://10.0.0.1:8080/metrics"})
    assert err.value.path == "collectors.sidecar.targets" and "host '10.0.0.1' refused" in str(err.value)
    with pytest.raises(ConfigError, match="declares no port"):
        sidecar_config(tmp_path, 1, app={"port": "%%port%%"})
    cfg = sidecar_config(tmp_path, 1, listen="0.0.0.0:9500", app={"port": 9500},
                         web={"url": "http://localhost:9"})
    c = SidecarCollector(Deps(cfg, None, None), cfg.collectors["sidecar"])
    with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
        c.sync()
    assert list(c.engine.targets) == [("shop", POD, "web")]
    assert c.engine.targets[("shop", POD, "web")].spec.endpoint.url == "http://127.0.0.1:9/"
    assert c.errors.counts == {"config": 1}
    assert "sidecar target 'app' rejected: port 9500 refused" in caplog.text


def test_pod_name_from_the_downward_api_env(tmp_path, monkeypatch):
    cfg = sidecar_config(tmp_path, 1)
    monkeypatch.setenv("POD_NAME", "from-env")
    section = cfg.collectors["sidecar"]
    section = dataclasses.replace(section, options={**section.options, "pod_name": ""})
    assert SidecarCollector(Deps(cfg, None, None), section).pod_name == "from-env"


async def test_offline_process(tmp_path):
    cfg = sidecar_config(tmp_path, 1)
    res = SidecarCollector(Deps(cfg, None, None), cfg.collectors["sidecar"]).process(TEXT_APP)
    s = Series(merge([("s", res.families)])[0])
    assert s.value("app_temperature_celsius", pod=POD, container="app", team="payments") == 21.5
    assert res.series_in == 3 and res.series_out == 3


def test_example_manifest(tmp_path):
    text = (ROOT / "manifests" / "sidecar-example.yaml").read_text()
    cm, deploy = [d for d in yaml.safe_load_all(text) if d]
    cfg = config_mod.load(_write(tmp_path / "config.yaml", cm["data"]["config.yaml"]),
                          env={"POD_NAMESPACE": "shop", "NODE_NAME": "n1"})
    assert [c.name for c in cfg.enabled()] == ["sidecar"]  # only a scope "pod" collector: no kubelet
    spec = deploy["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    side = next(c for c in spec["containers"] if c["name"] == "kubebridge")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in side["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
                   "NODE_NAME": "spec.nodeName"}
    labels_file = Path(cfg.collectors["sidecar"].options["labels_file"])
    mount = next(m for m in side["volumeMounts"] if m["mountPath"] == str(labels_file.parent))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["downwardAPI"]["items"] == [
        {"path": labels_file.name, "fieldRef": {"fieldPath": "metadata.labels"}}]
    app_ports = [p["containerPort"] for c in spec["containers"] if c["name"] == "app" for p in c["ports"]]
    assert cfg.collectors["sidecar"].options["targets"]["app"]["port"] in app_ports


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_cancelled_run_closes_the_session(tmp_path, apps):
    app = await apps()
    cfg = sidecar_config(tmp_path, app.port)
    c = SidecarCollector(Deps(cfg, None, None), cfg.collectors["sidecar"])
    task = asyncio.create_task(c.run())
    await c.collect(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert c.engine._session is not None and c.engine._session.closed
