"""The autodiscovery collector: triggers and precedence, template variables, the join, churn,
the safety rules (untrusted annotations), per-target limits, template errors, and the golden.

App pods are small aiohttp servers on 127.0.0.1 (free ports); their pods either live in a real
replay kubelet (added through its churn API, pod IP 127.0.0.1) or in a PodIndex built here.
Every test config also sets `networks: [127.0.0.0/8]`: nothing but loopback is ever scraped.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket

import pytest
from aiohttp import web

from exporter import config as config_mod
from exporter.autodiscovery.templates import (PodContext, Template, TemplateError, candidates, image_name,
                                               parse, parse_text, render)
from exporter.expfmt import encode_text
from exporter.merge import merge
from exporter.pods import parse_podlist
from exporter.replay.apps import OPENMETRICS, add_app_pod
from exporter.replay.cluster import ReplayCluster
from exporter.server import build_app
from tests.autodiscovery_apps import (ESCAPES, OM_APP, TEXT_APP, app_config, app_servers, check, collect,
                                      make, pod, replay_kubelet, scrape_until)
from tests.etcd_cluster import Series


@pytest.fixture
async def apps():
    async with app_servers() as start:
        yield start


@pytest.fixture
async def kubelet(tmp_path):
    async with replay_kubelet(tmp_path) as replay:
        yield replay


def lines(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


# --- templates ---------------------------------------------------------------------------

@pytest.mark.parametrize("image,name", [
    ("registry.example.com/team/nginx:1.27", "nginx"), ("nginx", "nginx"), ("nginx:alpine", "nginx"),
    ("localhost:5000/a/b/redis:7@sha256:" + "a" * 64, "redis"),
    ("docker.io/library/nginx@sha256:" + "b" * 64, "nginx"),
])
def test_image_short_name(image, name):
    assert image_name(image) == name


def test_template_json_yaml_and_url_forms():
    a = parse_text('{"port": "%%port_metrics%%", "path": "/m", "interval": "30s", "labels": {"team": "x"}}')
    b = parse_text("port: '%%port_metrics%%'\npath: /m\ninterval: 30s\nlabels: {team: x}\n")
    assert a == b == Template(port="%%port_metrics%%", path="/m", interval=30.0, labels=(("team", "x"),))
    c = parse({"openmetrics_endpoint": "https://%%host%%:%%port%%/stats?format=prom"})
    assert (c.scheme, c.host, c.port, c.path) == ("https", "%%host%%", "%%port%%", "/stats?format=prom")
    ctx = PodContext("10.1.2.3", "shop", "web-1", "app", (("http", 8080), ("metrics", 9100)))
    assert render(c, ctx, 5.0).url == "https://10.1.2.3:8080/stats?format=prom"
    d = parse({"port": "%%port_metrics%%",
               "path": "/%%kube_namespace%%/%%kube_pod_name%%/%%kube_container_name%%",
               "labels": {"where": "%%kube_pod_name%%"}})
    ep = render(d, ctx, 5.0)
    assert (ep.url, ep.labels, ep.timeout) == (
        "http://10.1.2.3:9100/shop/web-1/app", (("where", "web-1"),), 5.0)
    ipv6 = PodContext("fd00::1", "n", "p", "c")
    assert render(parse({"port": 1}), ipv6, 1).url == "http://[fd00::1]:1/metrics"


@pytest.mark.parametrize("doc,message", [
    ("{port: 1", "not valid JSON or YAML at line 1"),
    ('{"port": "%%env_SECRET%%"}', "unknown template variable %%env_SECRET%%"),
    ('{"path": "/%%host"}', "unterminated template variable"),
    ('{"prot": 80}', "unknown key 'prot' (did you mean 'port'?)"),
    ('{"port": 80, "labels": {"pod": "other"}}', "'pod' is set by kubebridge"),
    ('{"port": 80, "labels": {"label_app": "x"}}', "'label_app' is set by kubebridge"),
    ('[{"port": 1}, {"port": 2}]', "exactly one instance"),
    ('{"port": 80, "relabel_configs": [{"action": "nope"}]}', "unknown action"),
    ('{"port": 80, "interval": "soon"}', "not a duration"),
    ('{"port": 80, "path": "/%s"}' % ("x" * 20000), "a template is at most 16384"),
])
def test_invalid_templates_say_why(doc, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_text(doc)


CTX = PodContext("10.1.2.3", "shop", "web-1", "app", (("metrics", 9100),))


@pytest.mark.parametrize("doc,message", [
    ({"host": "10.9.9.9", "port": 80}, "host '10.9.9.9' refused"),
    ({"url": "https://kubernetes.default.svc:443/metrics"}, "host 'kubernetes.default.svc' refused"),
    ({"url": "http://%%kube_pod_name%%:80/"}, "refused"),
    ({"port": "%%port_admin%%"}, "no port named 'admin'"),
    ({"port": 70000}, "must be a number from 1 to 65535"),
    ({"port": "\u00b2"}, "must be a number from 1 to 65535"),            # passes str.isdigit()
    ({"port": "\u0661\u0660\u0662\u0665\u0660"}, "must be a number from 1 to 65535"),  # Arabic-Indic 10250
    ({"port": "0"}, "must be a number from 1 to 65535"),
    ({"scheme": "file", "port": 1}, "must be http or https"),
])
def test_render_refuses(doc, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(parse(doc), CTX, 1.0)


def test_host_network_pods_never_target_the_kubelet_or_kubebridge():
    host = PodContext("192.168.1.5", "kube-system", "node-agent", "agent", (("m", 9100),), True,
                      frozenset({9500}))
    for port in (10250, 10255, 10248, 9500):
        with pytest.raises(TemplateError, match=f"port {port} refused"):
            render(parse({"port": port}), host, 1.0)
    assert render(parse({"port": 9100}), host, 1.0).url == "http://192.168.1.5:9100/metrics"
    # The same ports on an ordinary pod IP are the application's own.
    assert render(parse({"port": 10250}), CTX, 1.0).port == 10250


def test_trigger_precedence_per_container():
    images = {"app": ("file", parse({"port": 1, "path": "/image"})), "side": ("etcd", parse({"port": 2}))}
    conts = [("app", "r/team/app:1", [("metrics", 9000)]), ("side", "side:2", [("s", 9001)]),
             ("other", "app:3", [("o", 9002)])]
    item = pod("p", containers=conts, annotations={
        **check(port=7), "prometheus.io/scrape": "true", "prometheus.io/port": "9001"})
    got = {c.container: (c.trigger, c.template.port if c.template else c.error)
           for c in candidates(item, images)}
    # annotation > prometheus.io (the container declaring the port) > image (every container of it)
    assert got == {"app": ("annotation", "7"), "side": ("prometheus_io", "9001"), "other": ("file", "1")}
    only_images = {c.container: c.trigger
                   for c in candidates(item, images, annotations=False, prometheus=False)}
    assert only_images == {"app": "file", "side": "etcd", "other": "file"}
    # prometheus.io without a port: the first container declaring one, its first port.
    plain = pod("q", containers=conts,
                annotations={"prometheus.io/scrape": "true", "prometheus.io/path": "/x"})
    [c] = candidates(plain, {})
    assert (c.container, c.template.port, c.template.path) == ("app", "%%port%%", "/x")
    assert candidates(pod("r", annotations={"prometheus.io/scrape": "false"}), {}) == []


# --- scraping, join and triggers, end to end ------------------------------------------------

async def test_discovered_through_each_trigger_with_the_full_join(kubelet, apps, aiohttp_client, tmp_path):
    text_app, om_app = await apps(TEXT_APP), await apps(OM_APP, OPENMETRICS)
    esc_app = await apps(ESCAPES, path="/custom")
    a = add_app_pod(kubelet, container="web", image="r.example.com/team/kb-web:1.2", port=text_app.port,
                    annotations={"kubebridge.io/web.check": json.dumps(
                        {"port": "%%port%%", "labels": {"tier": "%%kube_container_name%%"}})})
    b = add_app_pod(kubelet, container="jobs", image="kb-jobs:3", port=om_app.port,
                    annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(om_app.port)})
    c = add_app_pod(kubelet, container="esc", image=f"r.example.com:5000/team/kb-escapes:2@sha256:{'0' * 64}",
                    port=esc_app.port, port_name="http")
    (tmp_path / "templates.yaml").write_text("kb-escapes:\n  port: '%%port_http%%'\n  path: /custom\n")
    cfg = app_config(kubelet, templates_path=str(tmp_path / "templates.yaml"))
    client = await aiohttp_client(build_app(cfg))
    text = await scrape_until(client, lambda t: t.count("kubebridge_autodiscovery_target_up{") == 3
                              and "esc_info{" in t)
    join = ('label_app="deployment",workload="e2e-deployment",workload_kind="Deployment",'
            'node="datagen-1-35",cluster="e2e",collector="autodiscovery"')
    assert lines(text, "app_requests_total{") == [
        f'app_requests_total{{code="200",exported_pod="upstream-pod",tier="web",namespace="scraper",'
        f'pod="{a[1]}",container="web",{join}}} 12',
        f'app_requests_total{{code="500",tier="web",namespace="scraper",pod="{a[1]}",container="web",'
        f'{join}}} 1']
    assert (f'app_temperature_celsius{{tier="web",namespace="scraper",pod="{a[1]}",container="web",'
            f'{join}}} 21.5') in text
    assert lines(text, "om_jobs_total{") == [
        f'om_jobs_total{{queue="a",namespace="scraper",pod="{b[1]}",container="jobs",{join}}} 3']
    assert "# TYPE om_jobs_created gauge" in text and "# TYPE om_size_bytes gauge" in text
    assert lines(text, "esc_info{") == [
        'esc_info{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb",namespace="scraper",'
        f'pod="{c[1]}",container="esc",{join}}} 1']
    assert "# HELP esc_info Label values with escapes: a \\\\ backslash and a \\n newline." in text
    for key, cont, trigger in ((a, "web", "annotation"), (b, "jobs", "prometheus_io"), (c, "esc", "image")):
        assert (f'kubebridge_autodiscovery_target_up{{namespace="scraper",pod="{key[1]}",container="{cont}",'
                'cluster="e2e",collector="autodiscovery"} 1') in text
        assert (f'kubebridge_autodiscovery_targets{{trigger="{trigger}",cluster="e2e",'
                'collector="autodiscovery"} 1') in text
    assert 'kubebridge_up{collector="autodiscovery",cluster="e2e"} 1' in text
    assert len(esc_app.requests) >= 1 and len(text_app.requests) >= 1


async def test_churn_adds_and_removes_targets(kubelet, apps, aiohttp_client):
    app = await apps()
    client = await aiohttp_client(build_app(app_config(kubelet)))
    up = 'kubebridge_up{collector="autodiscovery",cluster="e2e"} 1'
    text = await scrape_until(client, lambda t: up in t)
    assert "kubebridge_autodiscovery_target_up{" not in text  # the captured pods ask for nothing
    ns, name = add_app_pod(kubelet, container="app", image="kb-app:1", port=app.port,
                           annotations=check(port="%%port_metrics%%"))
    want = f'app_temperature_celsius{{namespace="{ns}",pod="{name}",container="app"'
    text = await scrape_until(client, lambda t: want in t)
    assert want in text
    assert f'kubebridge_autodiscovery_target_up{{namespace="{ns}",pod="{name}",container="app"' in text
    kubelet.remove_pod(ns, name)
    text = await scrape_until(client, lambda t: f'pod="{name}"' not in t)
    assert f'pod="{name}"' not in text and "app_temperature_celsius" not in text


async def test_targets_are_scraped_concurrently_and_honour_interval(apps):
    slow_release = asyncio.Event()
    hits = {"slow": 0}

    async def slow(request):
        hits["slow"] += 1
        await slow_release.wait()
        return web.Response(body=TEXT_APP, content_type="text/plain")
    app = web.Application()
    app.router.add_get("/metrics", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    slow_port = runner.addresses[0][1]
    fast = await apps()
    items = [pod("slow", annotations=check(port=slow_port)),
             pod("fast", annotations=check(port=fast.port, interval="1h"))]
    c = make(items)
    try:
        task = asyncio.create_task(c.collect(5.0))
        for _ in range(500):  # both in flight at once: concurrent
            if hits["slow"] and fast.requests:
                break
            await asyncio.sleep(0.01)
        assert hits["slow"] == 1 and len(fast.requests) == 1 and not task.done()
        slow_release.set()
        s = Series(merge([("a", await task)])[0])
        assert s.value("kubebridge_autodiscovery_target_up", pod="slow") == 1.0
        await collect(c)
        assert len(fast.requests) == 1  # interval 1h: the cached result is served again
        assert hits["slow"] == 2
    finally:
        await c.engine.close()
        await runner.cleanup()


# --- safety ----------------------------------------------------------------------------------

async def test_no_credentials_cookies_or_redirects_reach_targets(kubelet, apps, aiohttp_client):
    elsewhere = await apps()

    async def tempt(request):
        tempt.headers.append(dict(request.headers))
        if request.path == "/redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{elsewhere.port}/metrics")
        resp = web.Response(body=TEXT_APP, content_type="text/plain")
        resp.set_cookie("session", "s3cret")
        return resp
    tempt.headers = []
    app = web.Application()
    app.router.add_get("/{tail:.*}", tempt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        add_app_pod(kubelet, container="app", image="kb-capture:1", port=port,
                    annotations=check(port="%%port%%", path="/metrics"))
        add_app_pod(kubelet, container="app", image="kb-capture:1", port=port,
                    annotations=check(port="%%port%%", path="/redirect"))
        client = await aiohttp_client(build_app(app_config(kubelet)))
        await scrape_until(client, lambda t: len(tempt.headers) >= 4)
        text = await scrape_until(client, lambda t: 'reason="http_status"' in t)
    finally:
        await runner.cleanup()
    token = kubelet.token_file.read_text().strip()
    assert any(h.get("Authorization") == f"Bearer {token}" for _, h in kubelet.requests)  # the kubelet has it
    assert tempt.headers and all("Authorization" not in h and "Cookie" not in h for h in tempt.headers)
    assert all(token not in json.dumps(h) for h in tempt.headers)
    assert elsewhere.requests == []  # the redirect was not followed
    assert re.search(r'kubebridge_autodiscovery_target_errors_total\{[^}]*reason="http_status"[^}]*\} [1-9]',
                     text)


def _other_loopback_server_possible() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
            return True
        except OSError:
            return False


async def test_annotations_cannot_point_elsewhere(caplog):
    """Targets naming another host, the kubelet ports of a hostNetwork pod or kubebridge's own
    port are refused before any connection; a capture server on 127.0.0.2 proves it."""
    hits = []

    async def capture(request):
        hits.append(request.path)
        return web.Response(text="")
    runner = None
    other = "127.0.0.2" if _other_loopback_server_possible() else "127.0.0.1"
    app = web.Application()
    app.router.add_get("/{tail:.*}", capture)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, other, 0).start()
    port = runner.addresses[0][1]
    items = [
        pod("other-host", annotations=check(url=f"http://{other}:{port}/metrics")
            if other != "127.0.0.1" else check(host="10.0.0.1", port=port)),
        pod("apiserver", annotations=check(url="https://kubernetes.default.svc/metrics")),
        pod("kubelet", host_network=True,
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "10250"}),
        pod("readonly", host_network=True, annotations=check(port=10255)),
        pod("myself", host_network=True, annotations=check(port=port)),
    ]
    c = make(items, listen=f"127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
            s = await collect(c)
    finally:
        await c.engine.close()
        await runner.cleanup()
    assert hits == []
    assert s.get("kubebridge_autodiscovery_target_up") == []
    assert s.by("kubebridge_autodiscovery_template_errors_total", "source") == {
        "annotation": 4.0, "prometheus_io": 1.0}
    assert "pod shop/apiserver container 'app': annotation kubebridge.io/app.check rejected: host " \
           "'kubernetes.default.svc' refused" in caplog.text
    assert ("pod shop/kubelet container 'app': annotation prometheus.io/scrape rejected: port 10250 "
            "refused") in caplog.text


async def test_only_this_nodes_running_pods_with_an_ip(apps):
    app = await apps()
    items = [pod("here", annotations=check(port=app.port)),
             pod("elsewhere", node="n2", annotations=check(port=app.port)),
             pod("pending", ip="", phase="Pending", annotations=check(port=app.port)),
             pod("done", phase="Succeeded", annotations=check(port=app.port)),
             pod("outside", ip="10.1.2.3", annotations=check(port=app.port)),  # not in `networks`
             pod(socket.gethostname(), annotations=check(port=app.port))]  # kubebridge's own pod
    c = make(items)
    try:
        s = await collect(c)
    finally:
        await c.engine.close()
    assert s.by("kubebridge_autodiscovery_target_up", "pod") == {"here": 1.0}
    assert s.get("kubebridge_autodiscovery_template_errors_total") == []
    assert len(app.requests) == 1


async def test_template_relabeling_cannot_spoof_identity(apps):
    app = await apps()
    rules = [{"target_label": "pod", "replacement": "someone-else"},
             {"action": "labelmap", "regex": "exported_(.*)"},
             {"source_labels": ["code"], "regex": "5..", "action": "drop"},
             {"target_label": "team", "replacement": "$$literal"}]
    c = make([pod("web-1", annotations=check(port=app.port, relabel_configs=rules))])
    try:
        s = await collect(c)
    finally:
        await c.engine.close()
    [(labels, value)] = s.get("app_requests_total")
    assert (labels["pod"], labels["namespace"], labels["container"], labels["workload"], value) == (
        "web-1", "shop", "app", "web", 12.0)
    assert (labels["team"], labels["cluster"], labels["collector"]) == ("$literal", "c1", "autodiscovery")


# --- limits ------------------------------------------------------------------------------------

async def test_limits_cut_off_one_target_and_nothing_else(apps):
    never = asyncio.Event()

    async def hang(request):
        await never.wait()
    app = web.Application()
    app.router.add_get("/metrics", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hung = runner.addresses[0][1]
    good = await apps()
    big = await apps(b"# TYPE big gauge\n" + b"big 1\n" * 400)
    many = await apps(b"# TYPE many gauge\n" + b"".join(b'many{i="%d"} 1\n' % i for i in range(50)))
    wide = await apps(b'wide{a="1",b="2",c="3",d="4",e="5",f="6"} 1\n')
    long = await apps(b'long{v="' + b"x" * 300 + b'"} 1\n')
    items = [pod(n, annotations=check(port=p)) for n, p in (
        ("good", good.port), ("big", big.port), ("many", many.port), ("wide", wide.port), ("long", long.port),
        ("hung", hung))]
    c = make(items, max_body_bytes=2000, max_series=40, max_labels=5, max_label_value_length=100,
             target_timeout=0.5)
    try:
        for round_ in (1, 2):
            s = await collect(c)
            assert s.by("kubebridge_autodiscovery_target_up", "pod") == {
                "good": 1.0, "big": 0.0, "many": 0.0, "wide": 0.0, "long": 0.0, "hung": 0.0}
            errors = {lb["pod"]: (lb["reason"], v)
                      for lb, v in s.get("kubebridge_autodiscovery_target_errors_total")}
            assert errors == {"big": ("body_too_large", round_), "many": ("too_many_series", round_),
                              "wide": ("label_limit", round_), "long": ("label_limit", round_),
                              "hung": ("timeout", round_)}
            assert {lb["pod"] for lb, _ in s.get("app_requests_total")} == {"good"}
            assert not any(n in ("big", "many", "wide", "long") for n, _, _ in s.samples)
            assert s.value("kubebridge_autodiscovery_target_series", pod="many") == 0.0
    finally:
        never.set()
        await c.engine.close()
        await runner.cleanup()


# --- template errors -----------------------------------------------------------------------------

async def test_invalid_templates_are_logged_once_and_counted(caplog):
    items = [pod("bad-yaml", annotations={"kubebridge.io/app.check": "{port: [1"}),
             pod("bad-var", annotations=check(port="%%port_nope%%")),
             pod("bad-container", annotations={"kubebridge.io/sidecar.check": '{"port": 1}'}),
             pod("bad-prom", annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "http"})]
    c = make(items)
    with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
        c.sync()
        c.deps.index.replace({**parse_podlist({"items": items + [pod("fine")]})})  # a new generation
        c.sync()
    assert c.errors.counts == {"annotation": 3, "prometheus_io": 1}
    assert caplog.text.count("rejected") == 4
    assert ("pod shop/bad-yaml container 'app': annotation kubebridge.io/app.check rejected: "
            "not valid JSON or YAML") in caplog.text
    assert ("pod shop/bad-var container 'app': annotation kubebridge.io/app.check rejected: "
            "port: %%port_nope%% but container 'app' declares no port named 'nope'") in caplog.text
    assert "annotation kubebridge.io/sidecar.check rejected: no container named 'sidecar'" in caplog.text
    assert "annotation prometheus.io/port rejected: not a port number: 'http'" in caplog.text
    # Fixed, then broken again: a new error, counted again.
    fixed = [pod("bad-yaml", annotations=check(port=1))] + items[1:]
    c.deps.index.replace(parse_podlist({"items": fixed}))
    c.sync()
    c.deps.index.replace(parse_podlist({"items": items}))
    c.sync()
    assert c.errors.counts == {"annotation": 4, "prometheus_io": 1}


def test_a_pod_shaped_like_no_pod_loses_only_its_own_targets(caplog):
    """A kubelet can hand us anything. Containers that are text read as none: that pod's
    annotation names no container (its error, logged by name). Ports that are a number read as
    none: its explicit port stands. And a pod whose item cannot be read at all (no parse of
    /pods makes one; the sync guards against any that would) is counted and logged by name.
    The neighbours' targets stay."""
    odd = pod("odd", annotations=check(port=1))
    odd["spec"]["containers"] = ["app"]
    portless = pod("portless", annotations=check(port=1))
    portless["spec"]["containers"][0]["ports"] = 5
    c = make([odd, portless, pod("fine", annotations=check(port=1))])
    broken = dataclasses.replace(c.deps.index.get("shop", "fine"), name="broken", raw=["not", "a", "pod"])
    c.deps.index.replace({**{m.key: m for m in c.deps.index.pods()}, broken.key: broken})
    with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
        c.sync()
    assert [k[1] for k in c.engine.targets] == ["fine", "portless"]
    assert c.errors.counts == {"annotation": 1, "pod": 1}
    assert "pod shop/odd container 'app': annotation kubebridge.io/app.check rejected: no container" \
        in caplog.text
    assert "pod shop/broken: unreadable, not scraped (AttributeError" in caplog.text


async def test_an_annotations_regex_is_re2(apps, caplog):
    """The regex a pod writes runs on RE2: a backtracking bomb against the pod's own long value
    answers at once, and what RE2 rejects (lookaround) is that pod's template error."""
    app = await apps(b'slow{v="' + b"a" * 1000 + b'b"} 1\n')
    def rule(regex: str) -> list[dict]:
        return [{"source_labels": ["v"], "regex": regex, "action": "drop"}]
    bomb = check(port=app.port, relabel_configs=rule("(a+)+"))
    look = check(port=app.port, relabel_configs=rule("a(?=b)"))
    c = make([pod("bomb", annotations=bomb), pod("look", annotations=look)])
    try:
        with caplog.at_level(logging.WARNING, "kubebridge.autodiscovery"):
            s = await collect(c)
        assert s.by("kubebridge_autodiscovery_target_up", "pod") == {"bomb": 1.0}
        assert [lb["pod"] for lb, _ in s.get("slow")] == ["bomb"]
        assert "invalid regex 'a(?=b)': invalid perl operator: (?=" in caplog.text
        assert c.errors.counts == {"annotation": 1}
    finally:
        await c.engine.close()


# --- golden (offline, as `kubebridge transform --source autodiscovery`) ---------------------------

def test_golden(tmp_path, golden):
    (tmp_path / "t.yaml").write_text("kb-escapes: {port: '%%port%%', labels: {team: storage}}\n"
                                     "kb-broken: {port: '%%port_nope%%', path: '%%oops%%'}\n")
    items = [pod("web-1", annotations=check(port="%%port_metrics%%", labels={"tier": "front"})),
             pod("jobs-1", annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9000"}),
             pod("esc-1", containers=[("esc", "r.example.com/kb-escapes:2", [("http", 8080)])]),
             pod("many-1", annotations=check(port=9000)),
             pod("broken-1", annotations={"kubebridge.io/app.check": "port: ["})]
    c = make(items, templates_path=str(tmp_path / "t.yaml"), max_series=40)
    many = b"".join(b'many{i="%d"} 1\n' % i for i in range(50))
    res = c.process(ESCAPES, OM_APP, many, TEXT_APP)  # esc-1, jobs-1, many-1, web-1
    text = encode_text(merge([("autodiscovery", res.families)])[0]).decode()
    text = re.sub(r"(kubebridge_autodiscovery_target_scrape_duration_seconds\{.*\}) .*", r"\1 0", text)
    golden("autodiscovery.txt", text)
    s = Series(merge([("a", res.families)])[0])
    assert s.by("kubebridge_autodiscovery_target_up", "pod") == {
        "esc-1": 1.0, "jobs-1": 1.0, "many-1": 0.0, "web-1": 1.0}
    assert s.by("kubebridge_autodiscovery_template_errors_total", "source") == {
        "annotation": 1.0, "file": 1.0}
    assert s.value("kubebridge_autodiscovery_templates", source="file") == 1.0
    assert s.get("esc_info")[0][0]["team"] == "storage"


# --- the demo ----------------------------------------------------------------------------------------

async def test_demo_shows_discovered_app_metrics_joined(tmp_path, aiohttp_client):
    token = tmp_path / "token"
    token.write_text("demo-token")
    cluster = ReplayCluster(tmp_path, token)
    await cluster.start()
    try:
        cfg = config_mod.parse(cluster.exporter_config("127.0.0.1:0"), env={})
        client = await aiohttp_client(build_app(cfg))
        text = await scrape_until(client, lambda t: "checkout_orders_total{" in t and "cart_items{" in t)
    finally:
        await cluster.stop()
    join = 'workload="e2e-deployment",workload_kind="Deployment",node="datagen-1-35",cluster="demo"'
    [checkout] = [ln for ln in lines(text, "checkout_orders_total{") if 'payment="voucher"' in ln]
    assert 'team="payments"' in checkout and 'label_app_kubernetes_io_name="checkout"' in checkout
    assert join in checkout and 'container="app"' in checkout and 'collector="autodiscovery"' in checkout
    [cart] = lines(text, "cart_items{")
    assert 'label_app_kubernetes_io_name="cart"' in cart and join in cart
    for trigger in ("annotation", "prometheus_io"):
        assert (f'kubebridge_autodiscovery_targets{{trigger="{trigger}",cluster="demo",'
                'collector="autodiscovery"} 1') in text


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0660\u0662\u0665\u0660", "99999", "0", "-1"])
def test_a_pods_bad_port_annotation_is_that_pods_error(port: str):
    """Ports are ASCII digits in range: anything else makes an error candidate for that pod (counted
    and logged by the engine), never an exception that would stop the node's target list."""
    conts = [("app", "app:1", [("metrics", 9000)])]
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": port}
    item = pod("p", containers=conts, annotations=annotations)
    [c] = candidates(item, {})
    assert c.error and "port" in c.error and c.template is None
    with pytest.raises(TemplateError):
        render(parse({"port": port}), CTX, 1.0)
