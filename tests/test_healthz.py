"""The kubelet's /healthz?verbose: checks parsed, a 500 is data, reachability is data, the runtime
signal follows `syncloop`."""
from __future__ import annotations


import pytest

from collectors.healthz import checks
from exporter import config as config_mod
from exporter.expfmt import encode_text
from exporter.replay.kubelet import ReplayKubelet
from exporter.server import build_app
from tests.conftest import offline
from tests.test_e2e import ready, scrape

# k8s.io/apiserver healthz output, as the kubelet writes it (verbose, passing and failing).
PASSING = "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n"
FAILING = "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
# Kubernetes 1.6-era kubelets had runtime checks of their own.
OLD = "[+]ping ok\n[+]docker ok\n[-]pleg failed: reason withheld\n[+]syncloop ok\nhealthz check failed\n"


@pytest.mark.parametrize("body,expected", [
    (PASSING, {"ping": True, "log": True, "syncloop": True}),
    (FAILING, {"ping": True, "log": True, "syncloop": False}),
    (OLD, {"ping": True, "docker": True, "pleg": False, "syncloop": True}),
    ("ok", {}),
    ("[+]etcd-readiness ok\n[-]poststarthook/rbac/bootstrap-roles failed: not finished\n",
     {"etcd-readiness": True, "poststarthook/rbac/bootstrap-roles": False}),
])
def test_checks(body, expected):
    assert checks(body) == expected


@pytest.mark.parametrize("body,healthy,runtime",
                         [(PASSING, 1, 1), (FAILING, 0, 0), (OLD, 0, 0), ("ok", 1, None)])
def test_offline_transform(body, healthy, runtime):
    text = encode_text(offline("healthz").process(body.encode()).families).decode()
    assert 'kubebridge_healthz_up{collector="healthz"} 1' in text
    assert f'kubebridge_healthz_healthy{{collector="healthz"}} {healthy}' in text
    if runtime is None:
        assert "kubebridge_healthz_runtime_healthy" not in text and "kubebridge_healthz_check" not in text
    else:
        assert f'kubebridge_healthz_runtime_healthy{{collector="healthz"}} {runtime}' in text


def config(replay: ReplayKubelet) -> config_mod.Config:
    return config_mod.parse({"node_name": replay.node_name, "pod_refresh_interval": "0.2s",
                             "kubelet": {"url": replay.base_url, "token_file": str(replay.token_file),
                                         "ca_file": str(replay.ca_file)}}, env={})


async def test_a_500_is_data_and_syncloop_is_the_runtime_signal(replay, aiohttp_client):
    client = await aiohttp_client(build_app(config(replay)))
    await ready(client)
    text = (await scrape(client)).decode()
    node = 'node="datagen-1-35",collector="healthz"'
    for line in (f'kubebridge_healthz_check{{check="syncloop",{node}}} 1',
                 f'kubebridge_healthz_healthy{{{node}}} 1',
                 f'kubebridge_healthz_runtime_healthy{{{node}}} 1', f'kubebridge_healthz_up{{{node}}} 1'):
        assert line in text, line
    # The runtime is down: the kubelet's sync loop stalls and its check fails (HTTP 500).
    replay.healthz_failures["syncloop"] = "sync Loop took longer than expected"
    text = (await scrape(client)).decode()
    assert 'kubebridge_up{collector="healthz"} 1' in text  # the kubelet answered: data, not an error
    for line in (f'kubebridge_healthz_check{{check="syncloop",{node}}} 0',
                 f'kubebridge_healthz_check{{check="ping",{node}}} 1',
                 f'kubebridge_healthz_healthy{{{node}}} 0',
                 f'kubebridge_healthz_runtime_healthy{{{node}}} 0', f'kubebridge_healthz_up{{{node}}} 1'):
        assert line in text, line
    assert "reason withheld" not in text and "took longer" not in text
    assert any(p == "/healthz?verbose" for p, _ in replay.requests)


async def test_unreachable_kubelet_is_healthz_up_0(replay, aiohttp_client):
    client = await aiohttp_client(build_app(config(replay)))
    await ready(client)
    await replay.stop()
    text = (await scrape(client)).decode()
    assert 'kubebridge_healthz_up{node="datagen-1-35",collector="healthz"} 0' in text
    assert 'kubebridge_up{collector="healthz"} 1' in text and "kubebridge_healthz_check{" not in text
    assert 'kubebridge_source_status{collector="cadvisor",status="down"} 1' in text


async def test_forbidden_is_not_permitted_not_unhealthy(replay, aiohttp_client):
    replay.forbidden_paths.add("/healthz")
    client = await aiohttp_client(build_app(config(replay)))
    await ready(client)
    text = (await scrape(client)).decode()
    assert 'kubebridge_source_status{collector="healthz",status="not_permitted"} 1' in text
    assert "kubebridge_healthz_up{" not in text
