"""Honest status (issue 13): one reason per error, one log line per failure streak, bad input
from one source (or one pod) never takes down another. The end-to-end cases are the fault
matrix (tests/test_faults.py); these pin the rules it relies on."""
from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from aiohttp.http_exceptions import HttpProcessingError

from exporter.errors import NoDataError, NotPermittedError, ParseError
from exporter.failures import REASONS, FailureLog, classify
from exporter.passthrough import check_payload, is_blank
from exporter.podindex import PodIndex
from exporter.pods import parse_podlist
from exporter.runner import Source, collect_all
from exporter.transform import Result
from exporter.upstream import UpstreamError
from exporter.replay import paths
from tests.conftest import offline

PODS = paths.data_file("nri-k8s-1.35-kubelet-pods.json")


def _framing_error() -> aiohttp.ClientResponseError:
    try:
        try:
            raise HttpProcessingError(code=400, message="Invalid character in chunk size")
        except HttpProcessingError as exc:
            raise aiohttp.ClientResponseError(None, (), status=400, message=exc.message) from exc  # type: ignore[arg-type]
    except aiohttp.ClientResponseError as err:
        return err


@pytest.mark.parametrize("exc, reason", [
    (TimeoutError(), "timeout"),
    (aiohttp.ServerTimeoutError("read"), "timeout"),
    (aiohttp.ClientConnectorError(None, OSError(111, "refused")), "connect"),  # type: ignore[arg-type]
    (aiohttp.ServerDisconnectedError(), "connect"),
    (aiohttp.ClientPayloadError("Response payload is not completed"), "connect"),  # reset mid-body
    (_framing_error(), "connect"),  # broken chunked encoding
    (ConnectionResetError(), "connect"),
    (asyncio.IncompleteReadError(b"", 10), "connect"),
    (UpstreamError("u", 500), "http_status"),
    (NotPermittedError("403"), "not_permitted"),
    (NoDataError("404"), "no_data"),
    (ParseError("empty body"), "parse"),
    (json.JSONDecodeError("x", "", 0), "parse"),
    (ExceptionGroup("member", [aiohttp.ClientPayloadError("cut")]), "connect"),
    (KeyError("bug"), "internal"),
    (AttributeError("bug"), "internal"),
])
def test_every_error_reads_as_exactly_one_reason(exc, reason):
    assert classify(exc) == reason and reason in REASONS


def test_failures_log_one_line_per_streak_and_no_traceback(caplog):
    caplog.set_level(logging.DEBUG, logger="t")
    flog = FailureLog(logging.getLogger("t"), "collector x")
    for _ in range(50):
        flog.failed("connect", ConnectionResetError("reset\nby peer"))
    flog.failed("timeout", TimeoutError())
    flog.ok()
    flog.failed("internal", KeyError("bug"))
    msgs = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert msgs == [("WARNING", "collector x: connect (reset by peer)", False),
                    ("WARNING", "collector x: timeout (timed out)", False),
                    ("INFO", "collector x: ok again (after timeout)", False),
                    ("ERROR", "collector x failed: internal ('bug')", True)]


def test_a_repeated_failure_is_logged_again_later_with_a_count(caplog):
    caplog.set_level(logging.INFO, logger="t")
    flog = FailureLog(logging.getLogger("t"), "pod index", repeat=0.0)
    flog.failed("parse", ParseError("a"))
    flog.repeat = 3600
    flog.failed("parse", ParseError("b"))
    flog.repeat = 0.0
    flog.failed("parse", ParseError("c"))
    assert [r.getMessage() for r in caplog.records] == [
        "pod index: parse (a)", "pod index: parse (c); 1 more since"]


class Raising:
    stats: dict = {}

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def collect(self, budget: float):
        raise self.exc


async def test_status_follows_the_reason():
    sources = [Source("a", Raising(aiohttp.ClientPayloadError("cut"))), Source("b", Raising(NoDataError())),
               Source("c", Raising(NotPermittedError())), Source("d", Raising(ParseError("x")))]
    outs = await collect_all(sources, 5.0)
    assert [(o.status, o.reason) for o in outs] == [
        ("down", "connect"), ("no_data", "no_data"), ("not_permitted", "not_permitted"), ("down", "parse")]
    assert [s.errors for s in sources] == [{"connect": 1}, {}, {"not_permitted": 1}, {"parse": 1}]


@pytest.mark.parametrize("body, malformed, series_in, ok", [
    (b"", 0, 0, False), (b" \n\n", 0, 0, False), (b"\t\r\x0b\x0c", 0, 0, False), (b"<html>", 1, 1, False),
    (b"x 1\n", 0, 1, True), (b"# HELP x y\n", 0, 0, True), (b"x 1\ny{ 2\n", 1, 2, True)])
def test_an_empty_or_unparsable_body_is_a_parse_error(body, malformed, series_in, ok):
    res = Result([], series_in=series_in, malformed=malformed)
    if ok:
        check_payload(is_blank(body), res)
    else:
        with pytest.raises(ParseError):
            check_payload(is_blank(body), res)
    assert is_blank(body) == (not body.strip())
    check_payload(True, Result([]), may_be_empty=True)  # (a kubelet with no probes)


def test_garbage_cadvisor_is_parse_not_up():
    c = offline("cadvisor")
    with pytest.raises(ParseError, match="no valid sample"):
        check_payload(False, c.process(b"\x00\x01 garbage\n<html>\n"))


@pytest.mark.parametrize("doc", [{"items": "x"}, {"items": [1, {"metadata": {"name": "a"}}]},
                                 {"items": {"a": 1}}, [], "x"])
def test_a_structurally_invalid_podlist_is_a_parse_error(doc):
    with pytest.raises(ParseError):
        parse_podlist(doc)


def test_items_null_is_an_empty_podlist():
    assert parse_podlist({"kind": "PodList", "items": None}) == {}


def odd_pods() -> dict:
    """The fixture's pods plus one of every odd shape."""
    doc = json.loads(PODS.read_text())
    doc["items"] += [
        {"metadata": {"name": "odd-labels", "namespace": "default",
                      "labels": {"app": {"nested": 1}, "tier": 5, "k8s-app": "fine", "ok": None},
                      "ownerReferences": "x", "annotations": []},
         "spec": {"nodeName": 7, "containers": "c", "volumes": [1]},
         "status": {"phase": 3, "containerStatuses": [1, {"name": "c", "state": "x", "restartCount": "7",
                                                          "lastState": {"terminated": []}}],
                    "conditions": "Ready"}},
        {"metadata": [], "spec": "x", "status": None},
        {"metadata": {"name": 5}},
    ]
    return doc


def test_odd_pod_json_affects_only_that_pod():
    pods = parse_podlist(odd_pods())
    good = parse_podlist(json.loads(PODS.read_text()))
    assert pods.keys() - good.keys() == {("default", "odd-labels")}  # (nameless ones skipped)
    odd = pods[("default", "odd-labels")]
    assert dict(odd.labels) == {"k8s-app": "fine"}  # non-string values are left out
    assert (odd.workload, odd.workload_kind, odd.node) == ("odd-labels", "Pod", "")
    assert all(pods[k] == good[k] for k in good)


def test_odd_pod_json_never_takes_down_cadvisor_or_pods():
    cadvisor = paths.data_file("nri-k8s-1.35-kubelet-metrics-cadvisor.txt")
    c = offline("cadvisor", pods=odd_pods())
    res = c.process(cadvisor.read_bytes())
    assert res.series_out > 0
    p = offline("pods")
    res = p.process(json.dumps(odd_pods()).encode())
    assert res.series_out > 0 and res.malformed >= 3  # the odd pod's bad items, counted


def test_stats_summary_wrong_types_are_dropped_and_counted_or_parse():
    s = offline("stats_summary")
    doc = json.loads(paths.data_file("nri-k8s-1.35-kubelet-stats-summary.json").read_text())
    good = s.process(json.dumps(doc).encode()).series_out
    doc["pods"] += [1, "x", {"podRef": 5}, {"podRef": {"name": "p", "namespace": "n"}, "containers": "c",
                                            "volume": [{"name": 3}], "ephemeral-storage": []}]
    res = s.process(json.dumps(doc).encode())
    assert res.series_out == good and res.malformed == 5  # (a wrong-typed fs reads as absent)
    for bad in (b'{"node": "n", "pods": [1, 2]}', b"[]", b"{}", b"", b"\xff\xfe", b'{"node": {"fs": []}}'):
        if bad == b'{"node": {"fs": []}}':
            assert s.process(bad).series_out == 0  # a node without stats is not an error
            continue
        with pytest.raises(ParseError):
            s.process(bad)


async def test_a_failed_pod_refresh_keeps_the_last_good_index():
    index = PodIndex()
    answers = [parse_podlist(json.loads(PODS.read_text())), ParseError("/pods: items is a str")]

    async def fetch():
        answer = answers[min(index.syncs + index.errors, 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer
    task = asyncio.create_task(index.run(fetch, interval=0.01, min_gap=0.01, timeout=5))
    try:
        for _ in range(500):
            if index.errors >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert index.syncs == 1 and len(index) == len(answers[0]) > 0
    assert not index.up and index.failures == {"parse": index.errors}


async def test_a_hung_pod_refresh_is_bounded():
    index = PodIndex()

    async def hang():
        await asyncio.Event().wait()
    task = asyncio.create_task(index.run(hang, interval=10, timeout=0.05))
    try:
        for _ in range(500):
            if index.errors:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert index.failures == {"timeout": 1}



def test_odd_pod_json_never_takes_down_autodiscovery():
    """The target list is built from every pod's raw JSON: odd shapes skip that pod."""
    from tests.autodiscovery_apps import check, make, pod

    fine = pod("fine", annotations=check(port=9000))
    odd = [{"metadata": {"name": "a", "namespace": "shop", "annotations": ["x"]}, "status": "Running",
            "spec": {"containers": "c"}},
           {"metadata": {"name": "b", "namespace": "shop", "annotations": check(port=1)},
            "status": {"podIP": 5, "phase": "Running"}, "spec": {"containers": [1, {"ports": "x"}]}},
           {"metadata": {"name": "c", "namespace": "shop", "annotations": check(port=1)},
            "status": {"podIP": "127.0.0.1", "phase": "Running"},
            "spec": {"containers": [{"name": "app", "ports": [7, {"containerPort": "80"}]}]}}]
    c = make([fine, *odd])
    c.sync()
    assert ("shop", "fine", "app") in c.engine.targets
    assert not any(key[1] in ("a", "b") for key in c.engine.targets)


@pytest.mark.parametrize("mode, reason", [("empty", "parse"), ("garbage", "parse"),
                                          ("redirect", "http_status")])
async def test_an_etcd_member_answering_nothing_usable_is_down(aiohttp_server, mode, reason):
    from aiohttp import web

    from exporter import config as config_mod
    from exporter.deps import Deps
    from exporter.registry import get

    async def metrics(request):
        if mode == "redirect":
            return web.Response(status=307, headers={"Location": "http://example.invalid/metrics"})
        body = b"" if mode == "empty" else b"<html>login</html>\n"
        return web.Response(body=body, content_type="text/plain")

    async def health(request):
        return web.json_response({"health": "true"})
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    server = await aiohttp_server(app)
    cfg = config_mod.parse({"collectors": {"etcd": {"enabled": True, "members": [
        {"url": str(server.make_url("")).rstrip("/")}]}}}, env={})
    async with aiohttp.ClientSession() as session:
        src = Source("etcd", get("etcd").factory(Deps(cfg, session, None), cfg.collectors["etcd"]))
        out = await src.collect(5.0)
    assert (out.status, out.reason) == ("down", reason)


def test_json_nested_too_deep_is_parse_not_internal():
    """The JSON parser gives up on deep nesting with RecursionError: a hostile upstream's
    answer, read as `parse`."""
    deep = b"[" * 100_000
    with pytest.raises(ParseError):
        offline("stats_summary").process(b'{"node": ' + deep)
    with pytest.raises(ParseError):
        offline("pods").process(deep)
    from exporter.jsonshape import loads
    with pytest.raises(ParseError, match="/pods: not JSON"):
        loads(deep, "/pods")
