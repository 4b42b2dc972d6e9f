"""Merge: one HELP/TYPE block per family name across sources."""
from __future__ import annotations

import pytest

from exporter.expfmt import Family, encode_text
from exporter.merge import merge

F = Family

CASES = [
    ("same family from two sources is one block, source order kept",
     [("a", [F("go_goroutines", "gauge", "G.", [b'go_goroutines{collector="a"} 1'])]),
      ("b", [F("go_goroutines", "gauge", "G.", [b'go_goroutines{collector="b"} 2'])])],
     [("go_goroutines", "gauge",
       [b'go_goroutines{collector="a"} 1', b'go_goroutines{collector="b"} 2'])], {}),
    ("type clash: the later source's family is dropped and counted",
     [("a", [F("x", "counter", None, [b'x{collector="a"} 1'])]),
      ("b", [F("x", "gauge", None, [b'x{collector="b"} 2'])])],
     [("x", "counter", [b'x{collector="a"} 1'])], {"b": 1}),
    ("families sorted by name; bucket order inside kept",
     [("a", [F("z", "gauge", None, [b"z 1"]),
             F("h", "histogram", None,
               [b'h_bucket{le="1"} 1', b'h_bucket{le="+Inf"} 2', b"h_sum 3", b"h_count 2"])])],
     [("h", "histogram", [b'h_bucket{le="1"} 1', b'h_bucket{le="+Inf"} 2', b"h_sum 3", b"h_count 2"]),
      ("z", "gauge", [b"z 1"])], {}),
    ("help taken from the first source that has one",
     [("a", [F("y", "gauge", None, [b"y 1"])]), ("b", [F("y", "gauge", "Why.", [b"y 2"])])],
     [("y", "gauge", [b"y 1", b"y 2"])], {}),
]


@pytest.mark.parametrize("what,sources,expected,conflicts", CASES, ids=[c[0] for c in CASES])
def test_merge(what, sources, expected, conflicts):
    out, counted = merge(sources)
    assert [(f.name, f.type, f.lines) for f in out] == expected
    assert dict(counted) == conflicts
    text = encode_text(out).decode()
    for name, _, _ in expected:
        assert text.count(f"# TYPE {name} ") == 1


def test_merge_does_not_mutate_inputs():
    a = F("g", "gauge", None, [b"g 1"])
    merge([("a", [a]), ("b", [F("g", "gauge", None, [b"g 2"])])])
    assert a.lines == [b"g 1"]
