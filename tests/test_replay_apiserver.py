"""The replay apiserver speaks enough of the real protocol for an unmodified kubernetes-asyncio
client: authentication, authorization, chunked lists, watches with bookmarks and 410s,
leases with optimistic concurrency, and the health/metrics/version endpoints."""
from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import FIXTURES, Fixtures
from tests.replay_api import TOKEN, event, eventually, replay

from exporter.replay.apiserver import ReplayApiserver


async def raw(srv: ReplayApiserver, path: str, token: str | None = TOKEN,
              **kwargs: object) -> tuple[int, dict, bytes]:
    tls = ssl.create_default_context(cafile=str(srv.ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(kwargs.pop("method", "GET"), srv.base_url + path, ssl=tls,
                             headers=headers, **kwargs) as r:
            return r.status, dict(r.headers), await r.read()


async def api_client(srv: ReplayApiserver, tmp_path: Path) -> client.ApiClient:
    conf = client.Configuration()
    await config.load_kube_config(config_file=str(srv.kubeconfig_path(tmp_path)),
                                  client_configuration=conf, persist_config=False)
    return client.ApiClient(conf)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_missing_or_wrong_token_is_401_status(tmp_path, token):
    async with replay(tmp_path) as srv:
        status, headers, body = await raw(srv, "/api/v1/pods", token=token)
    assert status == 401 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


async def test_token_file_is_reread_and_health_is_public(tmp_path):
    async with replay(tmp_path) as srv:
        assert (await raw(srv, "/livez", token=None))[:3:2] == (200, b"ok")  # anonymous allowed
        assert (await raw(srv, "/livez", token="wrong"))[0] == 401  # a bad token never is
        srv.token_file.write_text("rotated\n")
        assert (await raw(srv, "/api/v1/nodes"))[0] == 401
        assert (await raw(srv, "/api/v1/nodes", token="rotated"))[0] == 200


async def test_forbidden_paths_answer_the_authorizers_status(tmp_path):
    async with replay(tmp_path) as srv:
        srv.forbid("/api/v1/namespaces/kube-system/pods")
        srv.forbid("/metrics")
        status, _, body = await raw(srv, "/api/v1/namespaces/kube-system/pods?watch=true")
        doc = json.loads(body)
        assert status == 403 and doc["reason"] == "Forbidden" and doc["code"] == 403
        assert doc["message"] == (
            'pods is forbidden: User "system:serviceaccount:kubebridge:kubebridge" '
            'cannot watch resource "pods" in API group "" in the namespace "kube-system"')
        status, _, body = await raw(srv, "/metrics")
        assert status == 403 and json.loads(body)["message"].endswith('cannot get path "/metrics"')
        srv.allow("/metrics")
        assert (await raw(srv, "/metrics"))[0] == 200


async def test_chunked_list_through_kubernetes_asyncio(tmp_path):
    expected = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in json.loads(
        (Fixtures("kubelet") / "nri-k8s-1.35-kubelet-pods.json").read_text())["items"]}
    async with replay(tmp_path) as srv, await api_client(srv, tmp_path) as api:
        v1 = client.CoreV1Api(api)
        seen, token, rvs, pages = [], None, set(), 0
        while True:
            page = await v1.list_pod_for_all_namespaces(limit=7, _continue=token)
            pages += 1
            seen += [(p.metadata.namespace, p.metadata.name) for p in page.items]
            rvs.add(page.metadata.resource_version)
            # Written after the first page: not part of this list's snapshot.
            srv.add_pod({"metadata": {"name": f"late-{pages}", "namespace": "default"}})
            token = page.metadata._continue
            if not token:
                break
            assert page.metadata.remaining_item_count == len(expected) - len(seen)
        assert pages == 4 and len(rvs) == 1 and len(seen) == len(set(seen))
        assert set(seen) == expected  # one consistent snapshot: later pods are not in it
        ns = await v1.list_namespaced_pod("kube-system")
        assert {p.metadata.namespace for p in ns.items} == {"kube-system"} and len(ns.items) == 9


async def test_continue_token_is_410_after_compaction(tmp_path):
    async with replay(tmp_path) as srv, await api_client(srv, tmp_path) as api:
        v1 = client.CoreV1Api(api)
        first = await v1.list_event_for_all_namespaces(limit=5)
        srv.expire_history()
        with pytest.raises(ApiException) as err:
            await v1.list_event_for_all_namespaces(limit=5, _continue=first.metadata._continue)
        assert err.value.status == 410 and json.loads(err.value.body)["reason"] == "Expired"


async def test_watch_from_resource_version_with_bookmarks(tmp_path):
    async with replay(tmp_path) as srv, await api_client(srv, tmp_path) as api:
        v1 = client.CoreV1Api(api)
        rv = (await v1.list_event_for_all_namespaces()).metadata.resource_version
        srv.add_event(event("one.1", "BackOff"))
        srv.add_event(event("two.1", "Killing"))
        srv.add_pod({"metadata": {"name": "other", "namespace": "default"}})  # not an event
        got = []
        async with watch.Watch().stream(v1.list_event_for_all_namespaces, resource_version=rv,
                                        allow_watch_bookmarks=True, timeout_seconds=5) as stream:
            async for ev in stream:
                got.append((ev["type"], ev["raw_object"]["metadata"].get("name")))
                if len(got) == 2:
                    srv.send_bookmarks()
                if ev["type"] == "BOOKMARK":
                    assert ev["raw_object"]["metadata"]["resourceVersion"] == str(srv.store.rv)
                    break
        assert got == [("ADDED", "one.1"), ("ADDED", "two.1"), ("BOOKMARK", None)]


async def test_watch_older_than_history_is_an_error_event_410(tmp_path):
    async with replay(tmp_path) as srv:
        rv = srv.store.rv
        srv.add_event(event("x.1", "BackOff"))
        srv.expire_history()
        status, _, body = await raw(srv, f"/api/v1/events?watch=1&resourceVersion={rv}")
        assert status == 200  # the apiserver reports it inside the stream
        line = json.loads(body.splitlines()[0])
        assert line["type"] == "ERROR" and line["object"]["code"] == 410
        assert line["object"]["message"] == f"too old resource version: {rv} ({srv.store.rv})"
        async with await api_client(srv, tmp_path) as api:  # and the client raises it
            with pytest.raises(ApiException) as err:
                async with watch.Watch().stream(client.CoreV1Api(api).list_event_for_all_namespaces,
                                                resource_version=str(rv), timeout_seconds=5) as stream:
                    async for _ in stream:
                        pass
            assert err.value.status == 410


async def test_watch_ends_at_timeout_and_on_disconnect(tmp_path):
    async with replay(tmp_path) as srv, await api_client(srv, tmp_path) as api:
        v1 = client.CoreV1Api(api)
        rv = str(srv.store.rv)
        async with watch.Watch().stream(v1.list_node, resource_version=rv, timeout_seconds=1) as stream:
            assert [e async for e in stream] == []  # ended cleanly by the server
        got = []

        async def drop() -> None:
            await eventually(lambda: srv.store.watchers, what="watch open")
            srv.add_event(event("y.1", "Killing"))
            await eventually(lambda: got, what="event delivered")
            srv.disconnect_watches()

        task = asyncio.create_task(drop())
        with pytest.raises(aiohttp.ClientPayloadError):  # abrupt: no terminating chunk
            async with watch.Watch().stream(v1.list_event_for_all_namespaces, resource_version=rv,
                                            timeout_seconds=30) as stream:
                async for ev in stream:
                    got.append(ev["raw_object"]["metadata"]["name"])
        await task
        assert got == ["y.1"]
        await eventually(lambda: not srv.store.watchers, what="watcher released")


async def test_leases_have_optimistic_concurrency(tmp_path):
    async with replay(tmp_path) as srv, await api_client(srv, tmp_path) as api:
        coord = client.CoordinationV1Api(api)
        with pytest.raises(ApiException) as err:
            await coord.read_namespaced_lease("lock", "default")
        assert err.value.status == 404
        body = {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 5}}
        lease = await coord.create_namespaced_lease("default", body)
        with pytest.raises(ApiException) as err:
            await coord.create_namespaced_lease("default", body)
        assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
        lease.spec.holder_identity = "b"
        updated = await coord.replace_namespaced_lease("lock", "default", lease)  # carries the read RV
        assert int(updated.metadata.resource_version) > int(lease.metadata.resource_version)
        with pytest.raises(ApiException) as err:
            await coord.replace_namespaced_lease("lock", "default", lease)  # stale RV
        assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
        assert (await coord.read_namespaced_lease("lock", "default")).spec.holder_identity == "b"


async def test_health_endpoints_verbose_format(tmp_path):
    async with replay(tmp_path) as srv:
        status, _, body = await raw(srv, "/livez?verbose")
        lines = body.decode().splitlines()
        assert status == 200 and lines[:3] == ["[+]ping ok", "[+]log ok", "[+]etcd ok"]
        assert lines[-1] == "livez check passed"
        assert "[+]informer-sync ok" in (await raw(srv, "/readyz?verbose"))[2].decode()
        srv.failing_checks["etcd"] = "context deadline exceeded"
        status, _, body = await raw(srv, "/readyz")  # failures are always verbose
        text = body.decode()
        assert status == 500 and "[-]etcd failed: reason withheld\n" in text
        assert text.endswith("readyz check failed\n") and "deadline" not in text
        status, _, body = await raw(srv, "/livez?verbose&exclude=etcd")
        assert status == 200 and "[+]etcd excluded: ok" in body.decode()


async def test_metrics_version_and_componentstatuses(tmp_path):
    async with replay(tmp_path) as srv:
        tls = ssl.create_default_context(cafile=str(srv.ca_file))
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.get(srv.base_url + "/metrics", ssl=tls,
                             headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(await r.read())
        assert body == (Fixtures("apiserver") / "nri-k8s-1.35-apiserver-metrics.txt").read_bytes()
        version = json.loads((await raw(srv, "/version", token=None))[2])
        assert version["gitVersion"] == "v1.35.0" and version["platform"] == "linux/arm64"
        srv.unhealthy_components["scheduler"] = "connection refused"
        status, headers, body = await raw(srv, "/api/v1/componentstatuses")
        items = {i["metadata"]["name"]: i["conditions"][0]["status"] for i in json.loads(body)["items"]}
        assert items == {"scheduler": "False", "controller-manager": "True", "etcd-0": "True"}
        assert "deprecated" in headers["Warning"]


async def test_package_data_serves_the_same_cluster(tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    srv = ReplayApiserver(None, tmp_path / "token")
    fixtures = ReplayApiserver(FIXTURES, tmp_path / "token")
    assert srv.metrics == fixtures.metrics and srv.store.rv == fixtures.store.rv
    assert srv.store.objects["events"].keys() == fixtures.store.objects["events"].keys()


async def test_cluster_agent_against_package_data(tmp_path, aiohttp_client):
    """What the demo runs: the three cluster collectors in the real app, the replay serving
    its package data, one kubeconfig."""
    from exporter import config as config_mod
    from exporter.server import build_app

    (tmp_path / "token").write_text(TOKEN)
    srv = ReplayApiserver(None, tmp_path / "token")
    await srv.start()
    try:
        kubeconfig = str(srv.kubeconfig_path(tmp_path))
        names = ("apiserver", "events", "kube_system")
        cfg = config_mod.parse({"cluster": "demo", "collectors": {
            name: {"enabled": True, "kubeconfig": kubeconfig} for name in names}}, env={})
        http = await aiohttp_client(build_app(cfg))

        async def scrape() -> str:
            return await (await http.get("/metrics")).text()

        async def all_up() -> bool:
            text = await scrape()
            return all(f'kubebridge_up{{collector="{n}",cluster="demo"}} 1' in text for n in names)
        await eventually(all_up, what="every cluster collector up")
        srv.add_event(event("demo.1", "BackOff", involved="coredns-7d764666f9-qdcxt",
                            namespace="kube-system"))

        async def counted() -> bool:
            return 'reason="BackOff",type="Warning",workload="coredns"' in await scrape()
        await eventually(counted, what="the injected event counted")
        text = await scrape()
        assert ('kubebridge_kube_system_pod_ready{namespace="kube-system",'
                'pod="kube-apiserver-datagen-1-35"') in text
        assert 'kubebridge_apiserver_healthy{endpoint="livez",cluster="demo",collector="apiserver"} 1' in text
    finally:
        await srv.stop()
