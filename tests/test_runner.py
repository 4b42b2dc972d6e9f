"""The runner: isolation, budgets, single flight, statuses."""
from __future__ import annotations

import asyncio

from exporter.errors import NoDataError, NotPermittedError
from exporter.expfmt import Family, encode_text
from exporter.runner import Source, collect_all, self_metrics
from exporter.labels import CommonLabels


class Fake:
    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.calls = 0
        self.stats = {"series_in": 1}

    async def collect(self, budget):
        self.calls += 1
        return await self.behaviour()


async def ok():
    await asyncio.sleep(0.01)
    return [Family("x", "gauge", None, [b"x 1"])]


async def hang():
    await asyncio.Event().wait()


def raiser(exc):
    async def run():
        raise exc
    return run


async def test_statuses_and_isolation():
    sources = [Source("ok", Fake(ok)), Source("hang", Fake(hang), timeout=0.05),
               Source("gone", Fake(raiser(NoDataError("404")))),
               Source("denied", Fake(raiser(NotPermittedError("403")))),
               Source("broken", Fake(raiser(RuntimeError("bug"))))]
    outcomes = await collect_all(sources, budget=5.0)
    assert {o.name: o.status for o in outcomes} == {
        "ok": "ok", "hang": "down", "gone": "no_data", "denied": "not_permitted", "broken": "down"}
    assert outcomes[0].families[0].lines == [b"x 1"]
    text = encode_text(self_metrics(sources, outcomes, CommonLabels())).decode()
    assert 'kubebridge_scrape_errors_total{collector="hang",reason="timeout"} 1' in text
    assert 'kubebridge_scrape_errors_total{collector="broken",reason="internal"} 1' in text
    assert 'kubebridge_source_status{collector="denied",status="not_permitted"} 1' in text
    assert 'kubebridge_series_in{collector="ok"} 1' in text


async def test_single_flight():
    fake = Fake(ok)
    src = Source("s", fake)
    results = await asyncio.gather(*(src.collect(1.0) for _ in range(10)))
    assert fake.calls == 1 and all(r is results[0] for r in results)
    await src.collect(1.0)
    assert fake.calls == 2  # a later scrape fetches again


async def test_a_cancelled_scrape_does_not_cancel_the_shared_fetch():
    fake = Fake(ok)
    src = Source("s", fake)
    first = asyncio.create_task(src.collect(1.0))
    second = asyncio.create_task(src.collect(1.0))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).status == "ok"


async def test_a_joining_scrape_waits_only_its_own_budget():
    """A scrape that joins a collection in flight (started by a caller with a long budget) gets
    its answer within its own budget; the run goes on for the caller that started it."""
    import asyncio
    import time

    class Hung:
        async def collect(self, budget: float):
            await asyncio.sleep(budget)
            return []

    src = Source("slow", Hung())
    first = asyncio.ensure_future(src.collect(3.0))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    joined = await src.collect(0.3)
    assert time.monotonic() - started < 1.0
    assert (joined.status, joined.reason) == ("down", "timeout")
    assert not first.done()  # the starter's run is not cut short by the joiner giving up
    first.cancel()


def test_the_budget_header_is_clamped():
    from exporter.server import budget
    assert budget({"X-Prometheus-Scrape-Timeout-Seconds": "inf"}, 10.0) == 120.0
    assert budget({"X-Prometheus-Scrape-Timeout-Seconds": "nan"}, 10.0) == 10.0
    assert budget({"X-Prometheus-Scrape-Timeout-Seconds": "x"}, 10.0) == 10.0
    assert budget({"X-Prometheus-Scrape-Timeout-Seconds": "3"}, 10.0) == 2.5
    assert budget({"X-Prometheus-Scrape-Timeout-Seconds": "-5"}, 10.0) == 0.5
    assert budget({}, 10.0) == 10.0
