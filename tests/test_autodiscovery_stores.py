"""Autodiscovery's per-image template stores, each changed while kubebridge runs: a file and a
mounted-ConfigMap directory, a REAL etcd (v3 JSON gateway and v2 keys API, started here), and
Consul's KV API (tests/consul_kv.py: no Consul server can be installed here)."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import urllib.parse

import aiohttp
import pytest
from aiohttp import web

from exporter import config as config_mod
from exporter.autodiscovery.stores import (ConsulStore, ErrorLog, EtcdV2Store, FileStore, from_layout,
                                          prefix_end)
from exporter.autodiscovery.templates import Template
from exporter.deps import Deps
from exporter.replay.apps import add_app_pod
from exporter.server import build_app
from tests.autodiscovery_apps import app_config, app_servers, replay_kubelet, scrape_until
from tests.consul_kv import ConsulKV
from tests.etcd_cluster import Cluster, free_ports, have_etcd

real = pytest.mark.skipif(not have_etcd(), reason="etcd (apt: etcd-server) or openssl not installed")


@pytest.fixture
async def apps():
    async with app_servers() as start:
        yield start


@pytest.fixture
async def kubelet(tmp_path):
    async with replay_kubelet(tmp_path) as replay:
        yield replay


def layout(prefix: str, image: str, instance: dict) -> dict[str, str]:
    """The classic keys of one image's template."""
    root = f"{prefix.rstrip('/')}/check_configs/{image}/"
    return {root + "check_names": '["openmetrics"]', root + "init_configs": "[{}]",
            root + "instances": json.dumps([instance])}


def series_with(text: str, name: str, label: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{") and label in ln]


# --- layout parsing ----------------------------------------------------------------------------

def test_classic_layout():
    kv = {**layout("/kb", "nginx", {"openmetrics_endpoint": "http://%%host%%:%%port%%/metrics"}),
          **layout("/kb", "redis", {"port": "%%nope%%"}),
          "/kb/check_configs/half/check_names": '["x"]',  # being written: no instances yet
          "/kb/check_configs/odd/instances": '[{"port": 1}]',
          "/kb/check_configs/odd/check_names": '["a", "b"]',
          "/kb/other/key": "ignored"}
    templates, bad = from_layout(kv, "/kb/check_configs/", "etcd")
    assert templates == {"nginx": Template(host="%%host%%", port="%%port%%", path="/metrics", scheme="http")}
    assert set(bad) == {"redis", "odd"}
    assert "unknown template variable %%nope%%" in bad["redis"][2]
    assert "check_names and instances differ in length" in bad["odd"][2]
    assert prefix_end(b"/kb/") == b"/kb0" and prefix_end(b"a\xff") == b"b"


# --- file and ConfigMap -------------------------------------------------------------------------

def test_file_store_hot_reload_keeps_last_good(tmp_path, caplog):
    path = tmp_path / "templates.yaml"
    path.write_text("web: {port: 8080}\n")
    errors = ErrorLog()
    store = FileStore(errors, str(path), 1.0)
    store.poll()
    assert store.templates == {"web": Template(port="8080")} and store.version == 1
    store.poll()
    assert store.version == 1  # unchanged file: nothing re-read
    path.write_text("web: {port: 9090}\napi: {port: 1, path: /m}\n")
    store.poll()
    assert store.templates == {"web": Template(port="9090"), "api": Template(port="1", path="/m")}
    with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
        path.write_text("web: {port: [\n")  # a broken edit
        store.poll()
        store.poll()
    assert store.templates["web"] == Template(port="9090")  # the last good templates stay
    assert errors.counts == {"file": 1} and f"template file {path} rejected" in caplog.text


def test_configmap_directory_symlink_swap(tmp_path):
    """A mounted ConfigMap: files are symlinks through `..data`, swapped atomically on update."""
    d = tmp_path / "cm"
    d.mkdir()

    def publish(version: str, files: dict[str, str]) -> None:
        ts = d / f"..{version}"
        ts.mkdir()
        for name, text in files.items():
            (ts / name).write_text(text)
        tmp = d / "..data_tmp"
        os.symlink(ts.name, tmp)
        os.replace(tmp, d / "..data")
        for name in files:
            if not (d / name).is_symlink():
                os.symlink(f"..data/{name}", d / name)
    publish("2026_01", {"a.yaml": "web: {port: 1}\n", "b.json": '{"api": {"port": 2}}'})
    store = FileStore(ErrorLog(), str(d), 1.0)
    store.poll()
    assert store.templates == {"web": Template(port="1"), "api": Template(port="2")}
    publish("2026_02", {"a.yaml": "web: {port: 3}\n", "b.json": '{"api": {"port": 2}}'})
    store.poll()
    assert store.templates == {"web": Template(port="3"), "api": Template(port="2")}


async def test_file_template_applies_live(kubelet, apps, aiohttp_client, tmp_path):
    app = await apps()
    path = tmp_path / "templates.yaml"
    path.write_text("kb-file-app: {port: '%%port%%', labels: {rev: one}}\n")
    _, name = add_app_pod(kubelet, container="app", image="registry.example.com/kb-file-app:1", port=app.port)
    client = await aiohttp_client(build_app(app_config(kubelet, templates_path=str(path),
                                                       templates_poll_interval=0.05)))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="one"'))
    assert series_with(text, "app_temperature_celsius", f'pod="{name}"')
    path.write_text("kb-file-app: {port: '%%port%%', labels: {rev: two}}\n")
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="two"'))
    assert series_with(text, "app_temperature_celsius", 'rev="two"') and 'rev="one"' not in text


# --- etcd (real) ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("etcd-templates"), size=1, v2=True, prefix="t")
    cluster.start()
    yield cluster
    cluster.stop()


def put_v3(etcd: Cluster, kv: dict[str, str]) -> None:
    for key, value in kv.items():
        etcd.put_v3(key, value)


@real
async def test_etcd_v3_template_changes_apply_live(etcd, kubelet, apps, aiohttp_client):
    app = await apps()
    _, name = add_app_pod(kubelet, container="app", image="kb-etcd3-app:1", port=app.port)
    put_v3(etcd, layout("/kubebridge", "kb-etcd3-app", {"port": "%%port%%", "labels": {"rev": "one"}}))
    dead = free_ports(1)[0]
    endpoints = [{"url": f"http://127.0.0.1:{dead}"}, {"url": etcd.members[0].url}]  # fails over
    client = await aiohttp_client(build_app(app_config(kubelet, etcd=endpoints)))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="one"'))
    assert series_with(text, "app_temperature_celsius", f'pod="{name}"')
    assert 'template_store_up{source="etcd",cluster="e2e",collector="autodiscovery"} 1' in text
    # Changed while kubebridge runs: the watch stream delivers it.
    put_v3(etcd, layout("/kubebridge", "kb-etcd3-app", {"port": "%%port%%", "labels": {"rev": "two"}}))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="two"'))
    assert series_with(text, "app_temperature_celsius", 'rev="two"') and 'rev="one"' not in text
    # A broken template: counted, and the image has no template any more.
    etcd.put_v3("/kubebridge/check_configs/kb-etcd3-app/instances", '[{"port": "%%bad%%"}]')
    text = await scrape_until(client, lambda t: "app_temperature_celsius" not in t)
    assert 'template_errors_total{source="etcd",cluster="e2e",collector="autodiscovery"} 1' in text
    span = {"key": base64.b64encode(b"/kubebridge/").decode(),
            "range_end": base64.b64encode(prefix_end(b"/kubebridge/")).decode()}
    code, _ = etcd.request(etcd.members[0], "/v3/kv/deleterange", span)
    assert code == 200
    text = await scrape_until(client, lambda t: 'kubebridge_autodiscovery_templates{source="etcd"' in t
                              and 'templates{source="etcd",cluster="e2e",collector="autodiscovery"} 0' in t)
    assert 'templates{source="etcd",cluster="e2e",collector="autodiscovery"} 0' in text


@real
async def test_etcd_v2_template_changes_apply_live(etcd, kubelet, apps, aiohttp_client):
    app = await apps()
    _, name = add_app_pod(kubelet, container="app", image="kb-etcd2-app:1", port=app.port)

    def put(rev: str) -> None:
        template = {"port": "%%port%%", "labels": {"rev": rev}}
        for key, value in layout("/kubebridge-v2", "kb-etcd2-app", template).items():
            etcd.put_v2(key.lstrip("/"), urllib.parse.quote(value, safe=""))
    put("one")
    client = await aiohttp_client(build_app(app_config(
        kubelet, etcd=[{"url": etcd.members[0].url}], etcd_api="v2", etcd_prefix="/kubebridge-v2")))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="one"'))
    assert series_with(text, "app_temperature_celsius", f'pod="{name}"')
    put("two")  # the long poll (?wait=true&waitIndex=) returns, kubebridge lists again
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="two"'))
    assert series_with(text, "app_temperature_celsius", 'rev="two"') and 'rev="one"' not in text
    code, _ = etcd.request(etcd.members[0], "/v2/keys/kubebridge-v2?recursive=true&dir=true", method="DELETE")
    assert code == 200
    text = await scrape_until(client, lambda t: "app_temperature_celsius" not in t)
    assert "app_temperature_celsius" not in text


# --- Consul (KV API stand-in) --------------------------------------------------------------------------

async def test_consul_template_changes_apply_live(kubelet, apps, aiohttp_client, aiohttp_server):
    consul = ConsulKV()
    server = await aiohttp_server(consul.app())
    app = await apps()
    _, name = add_app_pod(kubelet, container="app", image="kb-consul-app:1", port=app.port)
    template = {"port": "%%port%%", "labels": {"rev": "one"}}
    for key, value in layout("kubebridge", "kb-consul-app", template).items():
        await consul.put(key, value)
    cfg = app_config(kubelet, consul=[{"url": str(server.make_url("")).rstrip("/")}])
    client = await aiohttp_client(build_app(cfg))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="one"'))
    assert series_with(text, "app_temperature_celsius", f'pod="{name}"')
    await consul.put("kubebridge/check_configs/kb-consul-app/instances",
                     json.dumps([{"port": "%%port%%", "labels": {"rev": "two"}}]))
    text = await scrape_until(client, lambda t: series_with(t, "app_temperature_celsius", 'rev="two"'))
    assert 'rev="one"' not in text
    assert any("index=" in r and "wait=20s" in r for r in consul.requests)  # blocking queries
    # The backend fails: the store is down, its last templates stay in force.
    consul.fail = True
    await consul.put("kubebridge/unrelated", "x")  # wake the blocking query
    text = await scrape_until(client, lambda t: 'template_store_up{source="consul",collector="autodiscovery",'
                                                'cluster="e2e"} 0' in t)
    assert series_with(text, "app_temperature_celsius", 'rev="two"')
    consul.fail = False
    await consul.delete("kubebridge/check_configs/", recurse=True)
    text = await scrape_until(client, lambda t: "app_temperature_celsius" not in t)
    assert "app_temperature_celsius" not in text


async def test_consul_stand_in_speaks_the_wire_format(aiohttp_client):
    consul = ConsulKV()
    client = await aiohttp_client(consul.app())
    resp = await client.get("/v1/kv/kb/?recurse")
    assert resp.status == 404 and resp.headers["X-Consul-Index"] == "1"
    assert (await client.put("/v1/kv/kb/a", data=b"hello")).status == 200
    resp = await client.get("/v1/kv/kb/?recurse")
    [entry] = await resp.json()
    assert entry == {"LockIndex": 0, "Key": "kb/a", "Flags": 0, "Value": "aGVsbG8=", "CreateIndex": 1,
                     "ModifyIndex": 1}
    assert resp.headers["X-Consul-Index"] == "1"
    blocked = asyncio.ensure_future(client.get("/v1/kv/kb/?recurse&index=1&wait=5s"))
    for _ in range(500):  # the query has arrived...
        if any("index=1" in r for r in consul.requests):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    assert not blocked.done()  # ...and is held until the next change
    await client.delete("/v1/kv/kb/a")
    resp = await blocked
    assert resp.status == 404 and resp.headers["X-Consul-Index"] == "2"  # the tombstone's index
    resp = await client.get("/v1/kv/kb/?recurse&index=2&wait=100ms")  # wait elapses: same index
    assert resp.headers["X-Consul-Index"] == "2"


async def test_a_backend_without_the_api_is_reported_down(aiohttp_server, caplog):
    """etcd without --enable-v2 answers 404 with no X-Etcd-Index; a non-Consul server answers
    without X-Consul-Index: the store is down (warned, retried with backoff), never "empty"."""
    hits: list[str] = []

    async def not_found(request):
        hits.append(request.path)
        return web.Response(status=404, text="404 page not found\n")
    app = web.Application()
    app.router.add_get("/{tail:.*}", not_found)
    server = await aiohttp_server(app)
    ep = config_mod.Endpoint(str(server.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as session:
        deps = Deps(config_mod.parse({}, env={}), session, None)
        for kind in (EtcdV2Store, ConsulStore):
            store = kind(ErrorLog(), deps, [ep], "/kb")
            store.backoff = (0.01, 0.02)
            hits.clear()
            with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
                task = asyncio.create_task(store.run())
                for _ in range(500):
                    if len(hits) >= 2:
                        break
                    await asyncio.sleep(0.01)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert len(hits) >= 2 and store.up == 0.0 and store.version == 0
        assert "no etcd v2 keys API" in caplog.text and "not a Consul KV answer" in caplog.text
