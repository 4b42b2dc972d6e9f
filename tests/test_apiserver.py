"""apiserver: /metrics passthrough (golden per version), health checks, component statuses,
and 401/403 reported as not_permitted, against the replay apiserver."""
from __future__ import annotations

import aiohttp
import pytest

from exporter.errors import NotPermittedError
from exporter.expfmt import encode_text
from exporter.runner import Source
from tests.conftest import offline
from tests.conftest import Fixtures
from tests.replay_api import collector, config, replay, samples, value

APISERVER = Fixtures("apiserver")


@pytest.mark.parametrize("version", ["1.16", "1.24", "1.35"])
def test_metrics_golden(version, golden):
    c = offline("apiserver")
    payload = (APISERVER / f"nri-k8s-{version}-apiserver-metrics.txt").read_bytes()
    res = c.process(payload)
    assert res.malformed == 0 and res.join_misses == 0 and res.series_out == res.series_in
    text = encode_text(res.families)
    golden(f"apiserver-{version}.txt", text)
    if version == "1.16":  # camelCase build info and the legacy summaries pass through as they are
        assert b'kubernetes_build_info{buildDate="2020-09-02T11:31:21Z"' in text
        assert b"# TYPE apiserver_request_latencies_summary summary" in text


async def test_collect_metrics_checks_and_componentstatuses(tmp_path):
    async with replay(tmp_path) as srv, aiohttp.ClientSession() as session:
        c = collector(config(srv, "apiserver", tmp_path, kubeconfig=True, top={"cluster": "demo"}),
                      "apiserver", session)
        fams = await c.collect(10)
        assert c.stats["series_in"] == 22853 and c.stats["response_bytes"] == len(srv.metrics)
        assert value(fams, "kubernetes_build_info", git_version="v1.35.0", collector="apiserver",
                     cluster="demo") == 1
        assert value(fams, "kubebridge_apiserver_healthy", endpoint="readyz") == 1
        assert value(fams, "kubebridge_apiserver_check", endpoint="readyz", check="informer-sync") == 1
        assert value(fams, "kubebridge_apiserver_componentstatus_healthy", component="scheduler") == 1

        srv.failing_checks["etcd"] = "context deadline exceeded"
        srv.unhealthy_components["scheduler"] = "connection refused"
        fams = await c.collect(10)
        for ep in ("livez", "readyz", "healthz"):
            assert value(fams, "kubebridge_apiserver_healthy", endpoint=ep) == 0
            assert value(fams, "kubebridge_apiserver_check", endpoint=ep, check="etcd") == 0
            assert value(fams, "kubebridge_apiserver_check", endpoint=ep, check="ping") == 1
        assert value(fams, "kubebridge_apiserver_componentstatus_healthy", component="scheduler") == 0
        assert value(fams, "kubebridge_apiserver_componentstatus_healthy", component="etcd-0") == 1


async def test_refused_optional_endpoints_are_skipped_quietly(tmp_path):
    async with replay(tmp_path) as srv, aiohttp.ClientSession() as session:
        srv.forbid("/api/v1/componentstatuses")
        srv.forbid("/healthz")
        c = collector(config(srv, "apiserver", tmp_path), "apiserver", session)
        fams = await c.collect(10)
        names = {f.name for f in fams}
        assert "kubebridge_apiserver_componentstatus_healthy" not in names
        healthy = samples([f for f in fams if f.name == "kubebridge_apiserver_healthy"])
        assert {dict(labels)["endpoint"] for _, labels in healthy} == {"livez", "readyz"}
        assert value(fams, "kubebridge_apiserver_healthy", endpoint="livez") == 1
        assert "apiserver_request_total" in names


async def test_health_golden(tmp_path, golden):
    async with replay(tmp_path) as srv, aiohttp.ClientSession() as session:
        srv.failing_checks["etcd"] = "context deadline exceeded"
        srv.unhealthy_components["controller-manager"] = "connection refused"
        c = collector(config(srv, "apiserver", tmp_path), "apiserver", session)
        fams = await c.collect(10)
    golden("apiserver-health.txt", encode_text([f for f in fams if f.name.startswith("kubebridge_")]))


@pytest.mark.parametrize("how", ["wrong token", "forbidden", "kubeconfig with a stale token"])
async def test_metrics_refused_is_not_permitted(tmp_path, how):
    async with replay(tmp_path) as srv, aiohttp.ClientSession() as session:
        token = None
        if how == "forbidden":
            srv.forbid("/metrics")
        elif how == "wrong token":
            token = tmp_path / "other-token"
            token.write_text("not-the-token")
        cfg = config(srv, "apiserver", tmp_path, token_file=token, kubeconfig=how.startswith("kubeconfig"))
        if how.startswith("kubeconfig"):
            srv.token_file.write_text("rotated-on-the-server")
        c = collector(cfg, "apiserver", session)
        with pytest.raises(NotPermittedError):
            await c.collect(10)
        outcome = await Source("apiserver", c).collect(10)
        assert outcome.status == "not_permitted" and outcome.reason == "not_permitted"
