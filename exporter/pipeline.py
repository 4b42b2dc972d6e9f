"""The per-source transform: parse -> join -> relabel, with a series cache on the hot path.

Steady state costs one `rpartition`, one dict lookup and one concatenation per sample line: the
rewritten "prefix" (name and label set, as output bytes) is cached per upstream series key (the
line up to its value). A cold line costs one more dict lookup: the rewritten label set is also
cached per upstream label text, and cAdvisor repeats each label set across ~50 families.
Values are validated in one regex pass per family block. Cache entries are evicted per pod when
the pod index reports that pod changed, and the whole cache is dropped when it outgrows the
payload (series churn).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from exporter import fastpath, relabel
from exporter.errors import ParseError
from exporter.expfmt import (METRIC_NAME, OM_TYPES, TYPES, VALUES_TS, Family,
                             format_labels, parse_labels, parse_line)
from exporter.podindex import PodIndex
from exporter.pods import PodMeta

log = logging.getLogger("kubebridge.pipeline")
_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_TS = re.compile(rb"-?[0-9]+\Z")
Pairs = list[tuple[str, str]]
PodKey = tuple[str, str]


class SeriesHook(Protocol):
    """Source-specific rewriting (cAdvisor classification, legacy names). Must depend only on
    the family's `variant` and the label pairs, so that results can be cached per label set."""

    def variant(self, family: str) -> Any: ...

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None: ...


class NoHook:
    """The identity hook."""

    def variant(self, family: str) -> Any:
        return None

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        return pairs


@dataclass
class Result:
    """One transform's output and counts."""

    families: list[Family]
    series_in: int = 0
    series_out: int = 0
    malformed: int = 0
    join_misses: int = 0
    dropped: int = 0
    label_conflicts: int = 0
    errors: list[tuple[bytes, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """What a transformer adds and keeps."""

    collector: str
    cluster: str = ""
    rules: tuple[relabel.Rule, ...] = ()
    keep_timestamps: bool = False
    pod_labels: bool = True  # False: the upstream's series are not pod-scoped (etcd, apiserver)
    node: str = ""           # this node's name, for series that name no pod (node agent)


_NEVER: tuple[bytes, int, bytes | None] = (b"\x00", 0, None)  # a position nothing is predicted at
_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts, pod's key list)


@dataclass
class _Scan:
    """State of one pass over a payload. Sample lines of the family blocks go to one shared
    `out` list in payload order; `spans` records where each block starts in it."""

    fams: dict[str, Family]
    res: Result
    out: list[bytes]
    vals: list[bytes]   # the value of every line in `out`...
    srcs: list[bytes]   # ...and the input line it came from (to name a bad one)
    spans: list[tuple[Family | None, int]]
    fam: Family | None = None
    variant: Any = None
    owned: dict[bytes, bool] = field(default_factory=dict)
    irregular: bool = False  # something the fast path cannot replay (misses, odd lines, ...)


class Transformer:
    """Turns one upstream's payloads into families, keeping its caches between scrapes."""

    def __init__(self, options: Options, index: PodIndex | None = None,
                 hook: SeriesHook | None = None) -> None:
        self.opt = options
        self.index = index
        self.hook = hook or NoHook()
        self._by_name = relabel.uses_name(options.rules)
        # Duplicate output series can only arise when labels are removed (hook or relabel).
        self._collide = bool(options.rules) or bool(getattr(self.hook, "may_collide", False))
        self._tail = (("collector", options.collector),) if options.collector else ()
        self.reset()

    def reset(self) -> None:
        """Forget every cached rewrite (the next transform is cold)."""
        self._cache: dict[bytes, bytes] = {}          # line key -> output prefix
        self._suffix: dict[PodKey | None, tuple[bytes, dict[str, str]]] = {}  # join labels
        self._labels: dict[tuple, _Entry] = {}        # (variant, label text) -> entry
        self._by_pod: dict[PodKey, list[Any]] = {}    # pod -> cache keys to evict with it
        self._owner: dict[bytes, bytes] = {}          # output prefix -> line key (duplicates)
        self._dupes: set[str] = set()                 # families with duplicate output series
        self._gen = self.index.generation if self.index else 0
        self._names: set[bytes] = set()
        self._prev: list[tuple[bytes, int, bytes | None]] = []  # last scan's entries by position
        self._plan: fastpath.Plan | None = None                  # last clean scan, for replay

    def _sync(self) -> None:
        if self.index is None:
            return
        changed = self.index.changed_since(self._gen)
        if changed is None:
            self.reset()
            return
        if changed:
            self._prev, self._plan = [], None  # they may hold a changed pod's old labels
        for pk in changed:
            for key in self._by_pod.pop(pk, ()):
                if isinstance(key, tuple):
                    self._labels.pop(key, None)
                else:
                    self._cache.pop(key, None)
            self._suffix.pop(pk, None)
        self._gen = self.index.generation

    def transform(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Parse and rewrite one payload."""
        self._sync()
        res = Result(families=[])
        fams: dict[str, Family] = {}
        lines = payload.split(b"\n")  # the one copy of the payload the transform makes
        res.series_in = len(lines)
        if openmetrics:
            fam: Family | None = None
            for line in lines:
                if line.startswith(b"#"):
                    res.series_in -= 1
                    fam = self._header(line[1:], fam, fams, True, res)
                else:
                    self._slow(line, fam, fams, True, res)
            res.families = [f for f in fams.values() if f.lines]
            res.series_out = sum(len(f.lines) for f in res.families)
        elif not self._replay(payload, lines, res):  # the replay counts from its plan
            self._scan(lines, _Scan(fams, res, [], [], [], []))
            res.families = [f for f in fams.values() if f.lines]
            res.series_out = sum(len(f.lines) for f in res.families)
        res.series_out -= self._dedupe(res)
        if len(self._cache) > 2 * res.series_in + 1024:
            self.reset()
        return res

    def _replay(self, payload: bytes, lines: list[bytes], res: Result) -> bool:
        """The fast path: True if the payload had the last clean scan's shape."""
        plan = self._plan
        if plan is None:
            return False
        families = fastpath.run(plan, payload, lines, self.opt.keep_timestamps, _valid)
        if families is None:
            return False  # the line-by-line scan finds and names what changed
        res.families = families
        res.series_in = plan.series_in
        res.series_out = len(plan.values)
        res.dropped = plan.dropped
        return True

    def _header(self, head: bytes, fam: Family | None, fams: dict[str, Family],
                openmetrics: bool, res: Result) -> Family | None:
        parts = head.decode("utf-8", "replace").strip(" \t").split(None, 2)
        if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
            return fam  # a plain comment, `# EOF` or `# UNIT`
        name, rest = parts[1], (parts[2] if len(parts) > 2 else "")
        if not METRIC_NAME.match(name):
            self._bad(res, b"#" + head, "bad metric name in HELP/TYPE")
            return fam
        kind = None
        if parts[0] == "TYPE":
            kind = OM_TYPES.get(rest) if openmetrics else (rest if rest in TYPES else None)
            if kind is None:
                self._bad(res, b"#" + head, f"unknown type {rest!r}")
                return fam
            if openmetrics and rest == "counter":
                name += "_total"  # OpenMetrics names the family without the sample suffix
        if openmetrics and fam is not None and fam.name == name + "_total":
            name = fam.name  # HELP after TYPE for an OpenMetrics counter
        cur = fams.get(name)
        if cur is None:
            cur = fams[name] = Family(name)
        if kind is not None:
            cur.type = kind
        elif cur.help is None:
            cur.help = rest
        return cur

    def _scan(self, lines: list[bytes], st: _Scan) -> None:
        out, vals, srcs = st.out, st.vals, st.srcs
        get, append, add, src = self._cache.get, out.append, vals.append, srcs.append
        cold, dropped, keep = self._cold, 0, self.opt.keep_timestamps
        # Upstreams serve their series in a stable order, so the line at position i is most
        # likely the series seen at position i last time: check that with one startswith
        # (no copy, no hash) before falling back to splitting the line and a dict lookup.
        prev = self._prev
        if len(prev) < len(lines):
            prev = prev + [_NEVER] * (len(lines) - len(prev))
        nxt_list: list[tuple[bytes, int, bytes | None]] = []
        nxt = nxt_list.append
        for line, ent in zip(lines, prev):
            if line.startswith(ent[0]):
                p = ent[2]
                if p:
                    v = line[ent[1]:] if keep else line[ent[1]:].partition(b" ")[0]
                    append(p + v)
                    add(v)
                    src(line)
                    nxt(ent)
                    continue
                if p is not None:  # a dropped series
                    dropped += 1
                    nxt(ent)
                    continue
            k, _, v = line.rpartition(b"} ")
            p = get(k)
            if p:
                if not keep:
                    v = v.partition(b" ")[0]
                append(p + v)
                add(v)
                src(line)
                nxt((k + b"} ", len(k) + 2, p))
            elif p is None:
                nxt(cold(line, k, v, st))
            else:
                dropped += 1
                nxt((k + b"} ", len(k) + 2, p))
        self._prev = nxt_list
        st.res.dropped += dropped
        bad = set() if not vals or _valid(vals, self.opt.keep_timestamps) else self._find_bad(st)
        st.spans.append((None, len(out)))
        placed: dict[str, int] = {}  # per family: span lines placed so far (they go first)
        ranges = []
        for (fam, start), (_, end) in zip(st.spans, st.spans[1:]):
            if fam is not None and end > start:
                chunk = out[start:end] if not bad else [out[i] for i in range(start, end) if i not in bad]
                at = placed.get(fam.name, 0)
                fam.lines[at:at] = chunk
                placed[fam.name] = at + len(chunk)
                ranges.append((fam, start, end))
        clean = not (st.irregular or bad or any(len(f.lines) != placed.get(f.name, 0) for f in st.fams.values()))
        self._plan = fastpath.build(lines, nxt_list, [f for f in st.fams.values() if f.lines], ranges,
                                    vals, st.res.series_in) if clean else None

    def _find_bad(self, st: _Scan) -> set[int]:
        """The batch check failed: find the bad values one by one and name their lines."""
        bad = set()
        for i, (val, line) in enumerate(zip(st.vals, st.srcs)):
            if not _valid([val], self.opt.keep_timestamps):
                bad.add(i)
                self._bad(st.res, line, f"bad value {val[:40]!r}")
        return bad

    def _start(self, st: _Scan, line: bytes) -> None:
        """A comment line: a new family block starts (or the current one goes on)."""
        st.res.series_in -= 1
        fam = self._header(line[1:], st.fam, st.fams, False, st.res)
        if fam is not st.fam:
            st.fam, st.owned = fam, {}
            st.variant = self.hook.variant(fam.name) if fam is not None else None
            st.spans.append((fam, len(st.out)))

    def _cold(self, line: bytes, k: bytes, v: bytes, st: _Scan) -> tuple[bytes, int, bytes | None]:
        """A line the cache does not know: a comment, or a series to split cheaply, rewrite
        (the label set's rewrite is cached per label text), emit and remember for the hot
        loop. Its value is validated with the payload's batch check. Returns the positional
        entry the next scan predicts this line with (_NEVER when it must come back here)."""
        if line.startswith(b"#"):
            self._start(st, line)
            return _NEVER
        fam, res = st.fam, st.res
        if not line:
            res.series_in -= 1
            return _NEVER
        if fam is None:  # samples before any HELP/TYPE
            st.irregular = True
            self._slow(line, None, st.fams, False, res)
            return _NEVER
        if k:
            nm, brace, text = k.partition(b"{")
        else:  # no label set: `name value [timestamp]`, cached under the bare name
            nm, brace, v = line.partition(b" ")
            text, brace = b"", brace and b"{"
            p = self._cache.get(nm) if nm else None
            if p:
                val = v if self.opt.keep_timestamps else v.partition(b" ")[0]
                self._emit(st, p + val, val, line)
                return (nm + b" ", len(nm) + 1, p)
        ok = st.owned.get(nm)
        if ok is None:
            ok = st.owned[nm] = bool(brace) and _NAME.match(nm) is not None and fam.owns(nm.decode())
        if not ok:
            st.irregular = True
            self._slow(line, fam, st.fams, False, res, st)
            return _NEVER
        key = (st.variant, nm if self._by_name else None, text)
        entry = self._labels.get(key)
        if entry is None:
            try:
                entry = self._compute(st.variant, nm.decode(), list(parse_labels(text)))
            except ParseError as exc:
                st.irregular = True
                self._bad(res, line, str(exc))
                return _NEVER
            if not entry[2]:
                self._labels[key] = entry
                if entry[5] is not None:
                    entry[5].append(key)
        lbytes, pk, missed, new_name, conflicts, keys = entry
        if missed:
            res.join_misses += 1
        res.label_conflicts += conflicts
        if new_name is not None and new_name != nm.decode():
            st.irregular = True
            self._slow(line, fam, st.fams, False, res, st)  # renamed by relabeling: general path
            return _NEVER
        ckey = k or nm
        head = k + b"} " if k else nm + b" "
        if missed:
            st.irregular = True
        if lbytes is None:
            res.dropped += 1
            if missed:
                return _NEVER
            self._cache[ckey] = b""
            if keys is not None:
                keys.append(ckey)
            return (head, len(head), b"")
        prefix = nm + (b"{" + lbytes + b"} " if lbytes else b" ")
        val = v if self.opt.keep_timestamps else v.partition(b" ")[0]
        self._emit(st, prefix + val, val, line)
        if missed:
            return _NEVER  # not cached: it is looked at again until the pod is known
        self._cache[ckey] = prefix
        if keys is not None:
            keys.append(ckey)
        if self._collide and self._owner.setdefault(prefix, ckey) != ckey:
            self._dupes.add(fam.name)
        return (head, len(head), prefix)

    @staticmethod
    def _emit(st: _Scan, line: bytes, val: bytes, src: bytes) -> None:
        st.out.append(line)
        st.vals.append(val)
        st.srcs.append(src)

    def _bad(self, res: Result, line: bytes, why: str) -> None:
        res.malformed += 1
        if len(res.errors) < 20:
            res.errors.append((line, why))

    def _slow(self, line: bytes, fam: Family | None, fams: dict[str, Family],
              openmetrics: bool, res: Result, st: _Scan | None = None) -> None:
        """The general path: precise parse, any whitespace, OpenMetrics, samples outside their
        family, renames. Not cached (rare in real payloads)."""
        stripped = line.strip(b" \t\r")
        if not stripped or stripped.startswith(b"#"):
            res.series_in -= 1
            return
        try:
            sample = parse_line(stripped, openmetrics)
        except ParseError as exc:
            self._bad(res, line, str(exc))
            return
        name = sample.name
        target = fam
        if openmetrics and fam is not None and fam.type == "counter" and name == fam.name[:-6] + "_created":
            target = None  # `_created` goes out as its own gauge family
        if target is None or not target.owns(name):
            target = fams.get(name)
            if target is None:
                kind = "gauge" if name.endswith("_created") and fam is not None else "untyped"
                target = fams[name] = Family(name, kind)
        variant = self.hook.variant(target.name)
        entry = self._compute(variant, name, list(sample.labels))
        labels, pk, missed, new_name, conflicts, _ = entry
        res.join_misses += missed
        res.label_conflicts += conflicts
        if labels is None:
            res.dropped += 1
            return
        if new_name is not None and new_name != name:
            target = self._moved(new_name, target, fams)
            name = new_name
        value = sample.value
        if self.opt.keep_timestamps and sample.timestamp_ms is not None:
            value += b" " + sample.timestamp_ms
        out = name.encode() + (b"{" + labels + b"} " if labels else b" ") + value
        if st is not None and target is st.fam:
            self._emit(st, out, value, line)  # keeps its place among the family's lines
        else:
            target.lines.append(out)

    def _moved(self, name: str, origin: Family, fams: dict[str, Family]) -> Family:
        fam = fams.get(name)
        if fam is None:
            kind = origin.type if origin.type in ("counter", "gauge", "untyped") else "untyped"
            fam = fams[name] = Family(name, kind, origin.help)
        return fam

    def _compute(self, variant: Any, name: str, pairs: Pairs) -> _Entry:
        """Rewrite one label set: source hook, pod join, cluster, relabel, collector."""
        pk, pod, missed = None, None, False
        if self.opt.pod_labels and self.index is not None:
            labels = dict(pairs)
            ns = labels.get("namespace", "")
            pod_name = labels.get("pod") or labels.get("pod_name", "")
            if ns and pod_name:
                pk = (ns, pod_name)
                pod = self.index.get(ns, pod_name)
                if pod is None:
                    missed = True
                    self.index.request_refresh()
        keys = self._by_pod.setdefault(pk, []) if pk is not None else None
        new = self.hook.rewrite(variant, pairs, pod)
        if new is None:
            return (None, pk, missed, None, 0, keys)
        suffix, joined = self._suffix_for(pk, pod)
        conflicts = sum(1 for k, v in new if k in joined and joined[k] != v and v != "")
        if not self.opt.rules and not any(k in joined for k, _ in new):
            # The common case: upstream labels, then the pod's pre-formatted join labels.
            own = format_labels(_rename(new))
            return (own + b"," + suffix if own and suffix else own or suffix, pk, missed, None, 0, keys)
        have = {k for k, v in new if v != ""}
        merged = list(new) + [(k, v) for k, v in joined.items() if k not in have]  # upstream wins
        new_name = None
        if self.opt.rules:
            out = relabel.apply(self.opt.rules, {"__name__": name, **dict(merged)})
            if out is None:
                return (None, pk, missed, None, conflicts, keys)
            new_name = out.pop("__name__", name)
            if not METRIC_NAME.match(new_name):
                return (None, pk, missed, None, conflicts, keys)
            merged = list(out.items())
        return (format_labels(_rename(merged) + list(self._tail)), pk, missed, new_name, conflicts, keys)

    def _suffix_for(self, pk: PodKey | None, pod: PodMeta | None) -> tuple[bytes, dict[str, str]]:
        """The join labels of a pod (or none), cluster and collector, formatted once."""
        key = pk if pod is not None else None
        got = self._suffix.get(key)
        if got is None:
            joined = dict(self.index.join_labels(pod)) if pod is not None and self.index else {}
            if self.opt.node and "node" not in joined:
                joined["node"] = self.opt.node
            if self.opt.cluster:
                joined["cluster"] = self.opt.cluster
            got = (format_labels([*joined.items(), *self._tail]), joined)
            self._suffix[key] = got
        return got

    def _dedupe(self, res: Result) -> int:
        """Two upstream series that rewrite to one output series (a restarted container once
        its `id`/`name` are dropped): keep the last, as Prometheus would keep one anyway.
        Returns how many lines were dropped."""
        gone = 0
        for fam in res.families:
            if fam.name not in self._dupes:
                continue
            lines = list(fam.samples())
            seen: dict[bytes, int] = {}
            for i, line in enumerate(lines):
                seen[_prefix_of(line)] = i
            if len(seen) != len(lines):
                keep = set(seen.values())
                gone += len(lines) - len(keep)
                lines = [ln for i, ln in enumerate(lines) if i in keep]
            fam.lines[:] = lines
        res.dropped += gone
        return gone


# What Python's float() accepts but Go's ParseFloat (hence Prometheus) does not: digit
# underscores, surrounding whitespace, and a sign before NaN.
_FLOAT_ONLY = (b"_", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"+n", b"+N", b"-n", b"-N")


def _valid(vals: list[bytes], timestamps: bool) -> bool:
    """Whether every value is one Prometheus accepts, checked in bulk at C speed: float() on
    each, plus a scan of all of them at once for what float() alone would let through."""
    joined = b"\n".join(vals)
    if timestamps:
        return VALUES_TS.match(joined) is not None
    if any(bad in joined for bad in _FLOAT_ONLY) or b"\n\n" in joined or not all(vals):
        return False
    try:
        for _ in map(float, vals):
            pass
    except ValueError:
        return False
    return True


def _rename(pairs: Sequence[tuple[str, str]]) -> Pairs:
    # Empty values are absent labels to Prometheus; an upstream `collector` label is kept as
    # `exported_collector`, as Prometheus does with target labels that clash.
    return [("exported_collector" if k == "collector" else k, v) for k, v in pairs if v != ""]


def _prefix_of(line: bytes) -> bytes:
    k, sep, _ = line.rpartition(b"} ")
    return k if sep else line.partition(b" ")[0]
