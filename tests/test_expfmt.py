"""Parser and encoder tables: what kubelets, etcd and apiservers really serve."""
from __future__ import annotations

import pytest

from exporter.errors import ParseError
from exporter.expfmt import (Family, encode_openmetrics, encode_text, parse_labels, parse_line,
                             wants_openmetrics)
from exporter import relabel
from exporter.transform import Options, Transformer

LINES = [  # line, name, labels, value, timestamp (ms)
    (b"up 1", "up", (), b"1", None),
    (b'a{b="c"} 2.5e+06', "a", (("b", "c"),), b"2.5e+06", None),
    (b'a{b="c",} 1', "a", (("b", "c"),), b"1", None),
    (b'a{ b = "c" , d="e"} 1', "a", (("b", "c"), ("d", "e")), b"1", None),
    (b'a{b="q\\"uote",c="back\\\\slash",d="new\\nline"} 1', "a",
     (("b", 'q"uote'), ("c", "back\\slash"), ("d", "new\nline")), b"1", None),
    (b'a{b="x} 1"} 7', "a", (("b", "x} 1"),), b"7", None),
    (b"a NaN", "a", (), b"NaN", None),
    (b"a +Inf", "a", (), b"+Inf", None),
    (b"a -Inf 123", "a", (), b"-Inf", b"123"),
    (b'a{le="+Inf"} 3 1700000000000', "a", (("le", "+Inf"),), b"3", b"1700000000000"),
    (b"a\t1", "a", (), b"1", None),
    (b"ns:rule_name 1", "ns:rule_name", (), b"1", None),
    (b'a{b="unknown \\q escape"} 1', "a", (("b", "unknown \\q escape"),), b"1", None),
]
BAD = [b"a", b"a 1.2.3", b'a{b="c} 1', b'a{b=c} 1', b'a{b="c",b="d"} 1', b"1a 1", b"a 1 1.5",
       b'a{b="c"}} 1', b'a{-b="c"} 1', b"a 1_000"]


@pytest.mark.parametrize("line,name,labels,value,ts", LINES)
def test_parse_line(line, name, labels, value, ts):
    s = parse_line(line)
    assert (s.name, s.labels, s.value, s.timestamp_ms) == (name, labels, value, ts)


@pytest.mark.parametrize("line", BAD)
def test_parse_line_rejects(line):
    with pytest.raises(ParseError):
        parse_line(line)


def test_openmetrics_line_exemplar_and_seconds():
    s = parse_line(b'a_bucket{le="1"} 5 1.5 # {trace_id="x"} 0.3 1.4', openmetrics=True)
    assert (s.value, s.timestamp_ms) == (b"5", b"1500")


def test_labels_duplicate_rejected():
    with pytest.raises(ParseError):
        parse_labels(b'a="1",a="2"')


def transform(payload: bytes, om: bool = False, **opt) -> tuple[bytes, object]:
    res = Transformer(Options(collector="t", **opt)).transform(payload, om)
    return encode_text(res.families), res


def test_transform_keeps_families_and_bucket_order():
    payload = (b"# HELP h_seconds A histogram.\n# TYPE h_seconds histogram\n"
               b'h_seconds_bucket{le="0.1"} 1\nh_seconds_bucket{le="1"} 2\nh_seconds_bucket{le="+Inf"} 3\n'
               b"h_seconds_sum 1.5\nh_seconds_count 3\n")
    out, res = transform(payload)
    assert out.decode().splitlines() == [
        "# HELP h_seconds A histogram.", "# TYPE h_seconds histogram",
        'h_seconds_bucket{le="0.1",collector="t"} 1', 'h_seconds_bucket{le="1",collector="t"} 2',
        'h_seconds_bucket{le="+Inf",collector="t"} 3', 'h_seconds_sum{collector="t"} 1.5',
        'h_seconds_count{collector="t"} 3']
    assert res.malformed == 0


def test_malformed_lines_counted_not_fatal_and_not_emitted():
    payload = b'# TYPE g gauge\ng{a="1"} 1\ng{a="2"} one\ng{a="3 3\ng{a="4"} 4\n'
    for _ in range(2):  # cold, then warm through the cache
        out, res = transform(payload)
        assert res.malformed == 2
        assert out.count(b"\ng{") == 2 and b'a="2"' not in out and b'a="3' not in out


def test_value_going_bad_on_warm_path_is_caught():
    t = Transformer(Options(collector="t"))
    t.transform(b'# TYPE g gauge\ng{a="1"} 1\ng{a="2"} 2\n')
    res = t.transform(b'# TYPE g gauge\ng{a="1"} 1\ng{a="2"} 2x\n')
    assert res.malformed == 1
    assert [ln for f in res.families for ln in f.lines] == [b'g{a="1",collector="t"} 1']


def test_timestamps_dropped_by_default_kept_on_request():
    payload = b'# TYPE g gauge\ng{a="1"} 1 1700000000000\n'
    assert transform(payload)[0].endswith(b'g{a="1",collector="t"} 1\n')
    for _ in range(2):
        assert transform(payload, keep_timestamps=True)[0].endswith(b"} 1 1700000000000\n")


def test_openmetrics_input_counter_created_and_eof():
    payload = (b"# TYPE req counter\n# HELP req Requests.\nreq_total{code=\"200\"} 5 # {t=\"1\"} 1\n"
               b"req_created{code=\"200\"} 1.7e9\n# TYPE info_x info\ninfo_x_info{v=\"1\"} 1\n# EOF\n")
    out, res = transform(payload, om=True)
    text = out.decode()
    assert "# TYPE req_total counter" in text and 'req_total{code="200",collector="t"} 5' in text
    assert "# TYPE req_created gauge" in text
    assert "# TYPE info_x gauge" in text or 'info_x_info{v="1",collector="t"} 1' in text
    assert res.malformed == 0


def test_encode_openmetrics_counter_and_unknown():
    fams = [Family("c_total", "counter", "C.", [b'c_total{a="1"} 1']),
            Family("legacy", "counter", 'say "hi"', [b"legacy 2"]),
            Family("u", "untyped", None, [b"u 3"])]
    text = encode_openmetrics(fams).decode()
    assert "# TYPE c counter\nc_total{a=\"1\"} 1" in text
    assert "# TYPE legacy unknown" in text and '# HELP legacy say \\"hi\\"' in text
    assert "# TYPE u unknown" in text and text.endswith("# EOF\n")


@pytest.mark.parametrize("accept,om", [
    ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", True),
    ("text/plain;version=0.0.4", False), ("", False), ("*/*", False),
    ("application/openmetrics-text;q=0", False)])
def test_negotiation(accept, om):
    assert wants_openmetrics(accept) is om


def test_samples_before_any_type_and_stray_samples_get_own_family():
    out, _ = transform(b"a 1\n# TYPE b gauge\nb 2\nc 3\n")
    text = out.decode()
    assert "# TYPE a untyped" in text and "# TYPE b gauge" in text and "# TYPE c untyped" in text


@pytest.mark.parametrize("value,ok", [
    (b"1", True), (b"-2.5e-3", True), (b"NaN", True), (b"+Inf", True), (b"-Inf", True),
    (b"infinity", True), (b".5", True), (b"5.", True),
    (b"1_000", False), (b"+nan", False), (b"-NaN", False), (b"0x1p-2", False), (b"", False),
    (b"1\r", False), (b"1\t", True), (b"one", False), (b"1e", False), (b"--1", False),
    (b"+nan 17", False), (b"1 +17", False), (b"1 1.5", False), (b"1 17 ", True), (b"nan -17", False)])
@pytest.mark.parametrize("keep", [False, True])
def test_value_rules_match_prometheus(value, ok, keep):
    """Values Prometheus accepts pass, Python-only spellings do not, on every path (the batch
    check, one by one, the general parser), with timestamps kept or not. Hex floats (Go
    accepts them; no exporter writes them) are rejected as malformed, not passed on."""
    from exporter.expfmt import parse_line
    payload = b'# TYPE g gauge\ng{a="1"} ' + value + b'\n'
    t = Transformer(Options(collector="t", keep_timestamps=keep))
    for _ in range(2):  # cold, then the cached hot loop
        res = t.transform(payload)
        # (a bad timestamp is only seen when timestamps are kept: a dropped one is not checked)
        assert (res.malformed == 0) is (ok or (not keep and b" " in value and value.split()[0] != b"+nan")), (
            value, res.errors)
    if not (set(value) & set(b" \t\r")):  # (the general parser allows blanks around a value)
        try:
            parse_line(b'g{a="1"} ' + value)
            parsed = True
        except ValueError:
            parsed = False
        assert parsed is ok, value


def test_steady_state_replay_equals_a_fresh_scan():
    """The fast path (same shape as last time) must produce what a fresh transformer does, and
    step aside for anything new: a new series, a changed comment, a bad value."""
    def payload(v: int, extra: bytes = b"", help_: bytes = b"H.") -> bytes:
        return (b"# HELP g " + help_ + b"\n# TYPE g gauge\n"
                + b'g{a="1"} %d 17\ng{a="2"} %d 18\n' % (v, v + 1)
                + extra + b"# TYPE c_total counter\nc_total 5\n\n")
    t = Transformer(Options(collector="t"))
    cases = [payload(1), payload(2), payload(3), payload(4, b'g{a="3"} 9\n'), payload(5, b'g{a="3"} 9\n'),
             payload(6, b'g{a="3"} 9\n', b"Changed."), payload(7, b'g{a="3"} bad\n', b"Changed."),
             payload(8, b'g{a="3"} 9\n', b"Changed.")]
    for p in cases:
        got, fresh = t.transform(p), Transformer(Options(collector="t")).transform(p)
        assert encode_text(got.families) == encode_text(fresh.families), p
        counts = (got.series_in, got.series_out, got.malformed)
        assert counts == (fresh.series_in, fresh.series_out, fresh.malformed)
    assert t.plan is not None  # the last payload was clean: the next same-shaped one replays


_BASE = (b"# HELP g H.\n# TYPE g gauge\n" b'g{a="1"} 1 17\ng{a="2"} 2 18\n' b"\n"
         b"# TYPE c_total counter\nc_total 5\n" b"# TYPE g gauge\n" b'g{a="9"} 3\n'
         b"# TYPE inf gauge\ninf 1\n")


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("changed", [
    _BASE.replace(b"1 17", b"7 27").replace(b"c_total 5", b"c_total 6"),    # same shape: replayed
    _BASE.replace(b"# HELP g H.", b"# HELP g X."),                          # comment, same length
    _BASE.replace(b'g{a="2"} 2 18\n\n', b'g{a="2"} 2 18\ng{a="3"} 4\n'),   # blank line -> series
    _BASE.replace(b'g{a="2"}', b'g{a="3"}'),                                 # other series, same count
    _BASE.replace(b'g{a="2"}', b'g{a="22"}'),                                # head is a prefix of it
    _BASE.replace(b'g{a="1"} 1 17', b'g{a="1"}'),                            # value gone
    _BASE.replace(b'g{a="1"} 1 17', b'g{a="1"} 1\r'),                        # carriage return
    _BASE.replace(b'g{a="1"} 1 17', b'g{a="1"} 1_0 17'),                     # Python-only float
    _BASE.replace(b'g{a="1"} 1 17', b'g{a="1"} +nan 17'),                    # Go-invalid NaN
    _BASE.replace(b"c_total 5", b"c_total 5 x"),                             # bad timestamp
    _BASE[:-1],                                                              # no final newline
    _BASE + b"# TYPE h gauge\nh 1\n",                                        # more lines
    _BASE.replace(b"inf 1", b"infinity 1"),  # not its head, yet its first word is a valid value
    _BASE.replace(b"# TYPE c_total counter", b"# TYPE d_total counter"),    # a sample, other header
])
def test_replay_steps_aside_for_anything_new(changed: bytes, keep: bool):
    """Once a plan exists, every payload (replayed or not) must come out exactly as a fresh
    transformer makes it, and counts must match: the check is per position, so a line that
    changes into another of the same length, a blank line that fills in, or a value the last
    scrape did not have must each be noticed."""
    t = Transformer(Options(collector="t", keep_timestamps=keep))
    t.transform(_BASE)
    again = t.transform(_BASE.replace(b"1 17", b"8 19"))
    assert t.plan is not None and again.series_out == 5  # the family in two blocks keeps both
    assert [ln for f in again.families for ln in f.lines if b"\n" in ln]  # replayed: blocks
    fresh = Transformer(Options(collector="t", keep_timestamps=keep)).transform(changed)
    got = t.transform(changed)
    assert encode_text(got.families) == encode_text(fresh.families)
    assert encode_openmetrics(got.families) == encode_openmetrics(fresh.families)
    assert ([(f.name, list(f.samples())) for f in got.families]
            == [(f.name, list(f.samples())) for f in fresh.families])
    assert ((got.series_in, got.series_out, got.malformed, got.dropped)
            == (fresh.series_in, fresh.series_out, fresh.malformed, fresh.dropped))


def test_family_blocks_count_and_split_into_lines():
    fam = Family("g", "gauge", None, [b"g 1\ng 2", b"g 3"])
    assert fam.count() == 3 and list(fam.samples()) == [b"g 1", b"g 2", b"g 3"]
    assert encode_text([fam]) == b"# TYPE g gauge\ng 1\ng 2\ng 3\n"


@pytest.mark.parametrize("payload", [
    _BASE,
    _BASE.replace(b'g{a="1"} 1 17', b'g{a="1"} bad 17'),                    # a bad value is not counted
    _BASE + b'stray{x="1"} 4\n# TYPE h gauge\nh 1\nh{a="1"} 2\n',           # a sample outside its family
    _BASE.replace(b"c_total 5", b"c_total 5\nc_total{ a = \"1\" } 6"),       # the general parser's line
    b"# TYPE g gauge\n" + b"".join(b'g{a="%d"} %d\n' % (i, i) for i in range(50)) + b"g{a=x} 1\n",
])
def test_series_out_counts_what_is_served(payload: bytes):
    """`series_out` is counted during the scan, not by reading the output back: it must equal
    the sample lines the encoder writes, whatever mix of blocks and single lines a family holds."""
    drop_a2 = relabel.parse_rules([{"action": "drop", "source_labels": ["a"], "regex": "2"}], "rules")
    for rules in ((), drop_a2):
        res = Transformer(Options(collector="t", rules=rules)).transform(payload)
        text = encode_text(res.families)
        assert res.series_out == sum(1 for ln in text.split(b"\n") if ln and not ln.startswith(b"#"))
