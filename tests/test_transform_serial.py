"""One transformer is never used by two threads at once: a transform that outlives its scrape
finishes before the next one starts on that transformer (its result discarded), and a direct
second call while one runs is refused."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

from exporter.passthrough import SerialTransform
from exporter.podindex import PodIndex
from exporter.transform import NOTHING, Changes, NoHook, Options, Payload, Transformer

PAYLOAD = b"# TYPE g gauge\n" + b"".join(b'g{i="%d"} 1\n' % i for i in range(30000))  # > 256 KiB: a thread


class SlowHook(NoHook):
    """Counts how many transforms run at once (prepare runs inside each)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.active, self.peak, self.calls = seconds, 0, 0, 0
        self.lock = threading.Lock()

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        with self.lock:
            self.active += 1
            self.peak, self.calls = max(self.peak, self.active), self.calls + 1
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return NOTHING


async def test_a_transform_that_outlived_its_scrape_finishes_before_the_next():
    hook = SlowHook(0.4)
    serial = SerialTransform(Transformer(Options(collector="t"), None, hook))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # the scrape gives up; the thread goes on
            await serial.run(Payload(PAYLOAD), False)
    started = time.monotonic()
    res = await serial.run(Payload(PAYLOAD), False)
    assert res.series_out == 30000 and hook.calls == 2 and hook.peak == 1
    assert time.monotonic() - started >= 0.4  # it waited for the first one


async def test_concurrent_scrapes_never_run_two_transforms_at_once():
    hook = SlowHook(0.1)
    serial = SerialTransform(Transformer(Options(collector="t"), None, hook))
    results = await asyncio.gather(*(serial.run(Payload(PAYLOAD), False) for _ in range(4)))
    assert [r.series_out for r in results] == [30000] * 4 and hook.peak == 1


def test_a_second_call_while_one_runs_is_refused():
    hook = SlowHook(0.3)
    t = Transformer(Options(collector="t"), None, hook)
    first = threading.Thread(target=t.transform, args=(PAYLOAD,))
    first.start()
    while hook.calls == 0:
        time.sleep(0.01)
    with pytest.raises(RuntimeError):
        t.transform(PAYLOAD)
    first.join()
    assert t.transform(PAYLOAD).series_out == 30000


async def test_the_transform_takes_the_body_and_nothing_keeps_the_result():
    """A served payload is held by the transform alone (the caller's Payload is emptied), and
    once a scrape is done with the result, nothing of the transform's keeps it alive."""
    serial = SerialTransform(Transformer(Options(collector="t")))
    for _ in range(2):  # a scan, then a replay
        payload = Payload(PAYLOAD)
        res = await serial.run(payload, False)
        assert res.series_out == 30000 and payload.take() == [b""] and payload.size == len(PAYLOAD)
        ref = weakref.ref(res)
        del res
        for _ in range(3):
            await asyncio.sleep(0)  # (the loop's pending callbacks still name the future)
        gc.collect()
        assert ref() is None
