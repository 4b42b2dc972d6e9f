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
from itertools import compress, repeat
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from exporter import relabel
from exporter.errors import ParseError
from exporter.expfmt import (METRIC_NAME, OM_TYPES, TYPES, VALUE, VALUES, VALUES_TS, Family,
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


_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts, pod's key list)


@dataclass
class _Block:
    """Per family-block context for the cold path."""

    fam: Family
    fams: dict[str, Family]
    variant: Any
    owned: dict[bytes, bool]
    res: Result
    vals: list[bytes]  # the value of every line appended to fam.lines in this block...
    srcs: list[bytes]  # ...and the input line it came from (to name a bad one)


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

    def _sync(self) -> None:
        if self.index is None:
            return
        changed = self.index.changed_since(self._gen)
        if changed is None:
            self.reset()
            return
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
        fam: Family | None = None
        prev = 0
        for nxt in [*_comment_lines(lines), len(lines)]:
            if nxt > prev:
                self._body(lines[prev:nxt], fam, fams, openmetrics, res)
            if nxt < len(lines):
                fam = self._header(lines[nxt][1:], fam, fams, openmetrics, res)
            prev = nxt + 1
        res.families = [f for f in fams.values() if f.lines]
        self._dedupe(res)
        res.series_out = sum(len(f.lines) for f in res.families)
        if len(self._cache) > 2 * res.series_in + 1024:
            self.reset()
        return res

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

    def _body(self, lines: list[bytes], fam: Family | None, fams: dict[str, Family],
              openmetrics: bool, res: Result) -> None:
        res.series_in += len(lines)
        if fam is None or openmetrics:
            for line in lines:
                self._slow(line, fam, fams, openmetrics, res)
            return
        out = fam.lines
        start = len(out)
        vals: list[bytes] = []
        srcs: list[bytes] = []
        get, append, add, src = self._cache.get, out.append, vals.append, srcs.append
        ctx = _Block(fam, fams, self.hook.variant(fam.name), {}, res, vals, srcs)
        cold, dropped = self._cold, 0
        # The hot loop: a cached prefix (truthy), a cached drop (b""), or unknown (None).
        # Two copies so that neither tests the timestamp policy per line.
        if self.opt.keep_timestamps:
            for line in lines:
                k, _, v = line.rpartition(b"} ")
                p = get(k)
                if p:
                    append(p + v)
                    add(v)
                    src(line)
                elif p is None:
                    cold(line, k, v, ctx)
                else:
                    dropped += 1
        else:
            for line in lines:
                k, _, v = line.rpartition(b"} ")
                p = get(k)
                if p:
                    v = v.partition(b" ")[0]
                    append(p + v)
                    add(v)
                    src(line)
                elif p is None:
                    cold(line, k, v, ctx)
                else:
                    dropped += 1
        res.dropped += dropped
        if vals and not _valid(vals, self.opt.keep_timestamps):
            self._drop_bad(fam, start, ctx)

    def _drop_bad(self, fam: Family, start: int, ctx: _Block) -> None:
        """The batch check failed: find the bad values one by one and drop their lines."""
        keep = self.opt.keep_timestamps
        kept = fam.lines[:start]
        for line, val, src in zip(fam.lines[start:], ctx.vals, ctx.srcs):
            if _valid([val], keep):
                kept.append(line)
            else:
                self._bad(ctx.res, src, f"bad value {val[:40]!r}")
        fam.lines[:] = kept

    def _cold(self, line: bytes, k: bytes, v: bytes, ctx: _Block) -> None:
        """A line the cache does not know: split it cheaply, rewrite its label set (cached
        per label text), emit it and remember the result for the hot loop. Its value is
        validated with the block's batch check."""
        fam, res = ctx.fam, ctx.res
        if k:
            nm, brace, text = k.partition(b"{")
        else:  # no label set: `name value [timestamp]`, cached under the bare name
            nm, brace, v = line.partition(b" ")
            text, brace = b"", brace and b"{"
            p = self._cache.get(nm) if nm else None
            if p:
                val = v if self.opt.keep_timestamps else v.partition(b" ")[0]
                fam.lines.append(p + val)
                ctx.vals.append(val)
                ctx.srcs.append(line)
                return
        ok = ctx.owned.get(nm)
        if ok is None:
            ok = ctx.owned[nm] = bool(brace) and _NAME.match(nm) is not None and fam.owns(nm.decode())
        if not ok:
            self._slow(line, fam, ctx.fams, False, res, ctx)
            return
        key = (ctx.variant, nm if self._by_name else None, text)
        entry = self._labels.get(key)
        if entry is None:
            try:
                entry = self._compute(ctx.variant, nm.decode(), list(parse_labels(text)))
            except ParseError as exc:
                self._bad(res, line, str(exc))
                return
            if not entry[2]:
                self._labels[key] = entry
                if entry[5] is not None:
                    entry[5].append(key)
        lbytes, pk, missed, new_name, conflicts, keys = entry
        if missed:
            res.join_misses += 1
        res.label_conflicts += conflicts
        if new_name is not None and new_name != nm.decode():
            self._slow(line, fam, ctx.fams, False, res, ctx)  # renamed by relabeling: general path
            return
        ckey = k or nm
        if lbytes is None:
            res.dropped += 1
            if not missed:
                self._cache[ckey] = b""
                if keys is not None:
                    keys.append(ckey)
            return
        prefix = nm + (b"{" + lbytes + b"} " if lbytes else b" ")
        val = v if self.opt.keep_timestamps else v.partition(b" ")[0]
        fam.lines.append(prefix + val)
        ctx.vals.append(val)
        ctx.srcs.append(line)
        if not missed:
            self._cache[ckey] = prefix
            if keys is not None:
                keys.append(ckey)
            if self._collide and self._owner.setdefault(prefix, ckey) != ckey:
                self._dupes.add(fam.name)

    def _bad(self, res: Result, line: bytes, why: str) -> None:
        res.malformed += 1
        if len(res.errors) < 20:
            res.errors.append((line, why))

    def _slow(self, line: bytes, fam: Family | None, fams: dict[str, Family],
              openmetrics: bool, res: Result, ctx: _Block | None = None) -> None:
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
        target.lines.append(name.encode() + (b"{" + labels + b"} " if labels else b" ") + value)
        if ctx is not None and target is ctx.fam:
            ctx.vals.append(value)
            ctx.srcs.append(line)

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

    def _dedupe(self, res: Result) -> None:
        """Two upstream series that rewrite to one output series (a restarted container once
        its `id`/`name` are dropped): keep the last, as Prometheus would keep one anyway."""
        for fam in res.families:
            if fam.name not in self._dupes:
                continue
            seen: dict[bytes, int] = {}
            for i, line in enumerate(fam.lines):
                seen[_prefix_of(line)] = i
            if len(seen) != len(fam.lines):
                keep = set(seen.values())
                res.dropped += len(fam.lines) - len(keep)
                fam.lines[:] = [ln for i, ln in enumerate(fam.lines) if i in keep]


def _comment_lines(lines: list[bytes]) -> list[int]:
    """Indices of the lines starting with '#', found without a Python-level loop."""
    return list(compress(range(len(lines)), map(bytes.startswith, lines, repeat(b"#"))))


_NOT_NUMERIC = bytes(set(range(256)) - set(b"0123456789.eE+-nNaAiIfFtTyY\n"))


def _valid(vals: list[bytes], timestamps: bool) -> bool:
    """Whether every value is one Go's ParseFloat (hence Prometheus) accepts, checked in bulk:
    allowed characters only, no signed NaN (Go rejects it, Python accepts it), then float()."""
    joined = b"\n".join(vals)
    if timestamps:
        return VALUES_TS.match(joined) is not None
    if joined.translate(None, _NOT_NUMERIC) != joined or b"+n" in joined.lower() or b"-n" in joined.lower():
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
