"""The replay (exporter/fastpath.py) on every real capture: a second scrape with other values
must come out exactly as a fresh transformer makes it, and must actually be replayed."""
from __future__ import annotations

from pathlib import Path

import pytest

from exporter.expfmt import encode_openmetrics, encode_text
from tests.conftest import Fixtures, offline

CAD, KUBELET, APISERVER = Fixtures("cadvisor"), Fixtures("kubelet"), Fixtures("apiserver")
# (collector, capture, its /pods where one matches)
CAPTURES = [("cadvisor", p, None) for p in CAD.glob("*.txt")] + [
    ("cadvisor", CAD / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt",
     KUBELET / "nri-k8s-1.35-kubelet-pods.json"),
    ("kubelet", KUBELET / "dd-kubelet-1.10-kubelet_metrics.txt", None),
    ("probes", KUBELET / "dd-kubelet-metrics-probes.txt", None),
    ("apiserver", APISERVER / "nri-k8s-1.35-apiserver-metrics.txt", None),
    ("apiserver", APISERVER / "nri-k8s-1.16-apiserver-metrics.txt", None),
]


def bump(payload: bytes) -> bytes:
    """The same series with other values: every value's last digit moves on by one."""
    out = []
    for line in payload.split(b"\n"):
        if line and not line.startswith(b"#"):
            head, sep, rest = line.rpartition(b"} ") if b"{" in line else line.partition(b" ")
            value, sp, ts = rest.partition(b" ")
            if value[-1:].isdigit():
                value = value[:-1] + b"%d" % ((int(value[-1:]) + 1) % 10)
            line = head + sep + value + sp + ts
        out.append(line)
    return b"\n".join(out)


@pytest.mark.parametrize("name,capture,pods", CAPTURES,
                         ids=[f"{n}-{c.stem}{'-pods' if p else ''}" for n, c, p in CAPTURES])
def test_replay_of_a_real_capture_equals_a_fresh_transform(name: str, capture: Path, pods: Path | None):
    payload = capture.read_bytes()
    doc = {"cluster": "c", "node_name": "n1"}
    steady = offline(name, doc, pods)
    first = steady.process(payload)
    assert steady.transformer.plan is not None, first.errors  # every capture here is clean
    for other in (bump(payload), bump(bump(payload)), payload):
        got = steady.process(other)
        assert steady.transformer.plan is not None
        assert any(b"\n" in ln for f in got.families for ln in f.lines)  # replayed: family blocks
        fresh = offline(name, doc, pods).process(other)
        assert encode_text(got.families) == encode_text(fresh.families)
        assert encode_openmetrics(got.families) == encode_openmetrics(fresh.families)
        assert ((got.series_in, got.series_out, got.dropped, got.join_misses, got.malformed)
                == (fresh.series_in, fresh.series_out, fresh.dropped, fresh.join_misses, fresh.malformed))
