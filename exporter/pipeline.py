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


_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts)


class Transformer:
    """Turns one upstream's payloads into families, keeping its caches between scrapes."""

    def __init__(self, options: Options, index: PodIndex | None = None,
                 hook: SeriesHook | None = None) -> None:
        self.opt = options
        self.index = index
        self.hook = hook or NoHook()
        self._by_name = relabel.uses_name(options.rules)
        self._tail = (("collector", options.collector),) if options.collector else ()
        self.reset()

    def reset(self) -> None:
        """Forget every cached rewrite (the next transform is cold)."""
        self._cache: dict[bytes, bytes] = {}          # line key -> output prefix
        self._drop: set[bytes] = set()                # line keys of dropped series
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
                    self._drop.discard(key)
        self._gen = self.index.generation

    def transform(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Parse and rewrite one payload."""
        self._sync()
        res = Result(families=[])
        fams: dict[str, Family] = {}
        blocks = payload.split(b"\n#")
        if blocks[0].startswith(b"#"):
            blocks[0] = blocks[0][1:]
            first_is_comment = True
        else:
            first_is_comment = False
        fam: Family | None = None
        for i, block in enumerate(blocks):
            if i or first_is_comment:
                head, _, body = block.partition(b"\n")
                fam = self._header(head, fam, fams, openmetrics, res)
            else:
                body = block
            if body:
                self._body(body, fam, fams, openmetrics, res)
        res.families = [f for f in fams.values() if f.lines]
        self._dedupe(res)
        res.series_out = sum(len(f.lines) for f in res.families)
        if len(self._cache) + len(self._drop) > 2 * res.series_in + 1024:
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

    def _body(self, body: bytes, fam: Family | None, fams: dict[str, Family],
              openmetrics: bool, res: Result) -> None:
        lines = body.split(b"\n")
        res.series_in += len(lines)
        if fam is None or openmetrics:
            for line in lines:
                self._slow(line, fam, fams, openmetrics, res)
            return
        out = fam.lines
        start = len(out)
        vals: list[bytes] = []
        get, append, add, slow = self._cache.get, out.append, vals.append, self._slow
        # Two copies of the hot loop so neither tests the timestamp policy per line.
        if self.opt.keep_timestamps:
            for line in lines:
                k, _, v = line.rpartition(b"} ")
                p = get(k)
                if p is None:
                    slow(line, fam, fams, openmetrics, res)
                else:
                    append(p + v)
                    add(v)
        else:
            for line in lines:
                k, _, v = line.rpartition(b"} ")
                p = get(k)
                if p is None:
                    slow(line, fam, fams, openmetrics, res)
                else:
                    v = v.partition(b" ")[0]
                    append(p + v)
                    add(v)
        if vals and not (VALUES_TS if self.opt.keep_timestamps else VALUES).match(b"\n".join(vals)):
            self._revalidate(fam, start, res)

    def _revalidate(self, fam: Family, start: int, res: Result) -> None:
        kept = fam.lines[:start]
        for line in fam.lines[start:]:
            value = line.rpartition(b" ")[2] if not self.opt.keep_timestamps else None
            try:
                if value is None or not VALUE.match(value):
                    parse_line(line.replace(b"\t", b" "))
                kept.append(line)
            except ParseError as exc:
                self._bad(res, line, str(exc))
        fam.lines[:] = kept

    def _bad(self, res: Result, line: bytes, why: str) -> None:
        res.malformed += 1
        if len(res.errors) < 20:
            res.errors.append((line, why))

    def _quick(self, line: bytes) -> tuple[str, bytes, bytes] | None:
        """Split a regular line (single spaces, the common case) without a full parse:
        (name, raw label text, output value). None sends it to the precise parser."""
        k, sep, v = line.rpartition(b"} ")
        if sep:
            nm, brace, text = k.partition(b"{")
            if not brace:
                return None
        else:
            nm, sep, v = line.partition(b" ")
            text = b""
            if not sep:
                return None
        val, _, ts = v.partition(b" ")
        if not VALUE.match(val) or (ts and not _TS.match(ts)):
            return None
        if nm not in self._names:
            if not _NAME.match(nm):
                return None
            self._names.add(nm)
        return nm.decode(), text, (val + b" " + ts if ts and self.opt.keep_timestamps else val)

    def _slow(self, line: bytes, fam: Family | None, fams: dict[str, Family],
              openmetrics: bool, res: Result) -> None:
        if self._drop and line.rpartition(b"} ")[0] in self._drop:
            res.dropped += 1
            return
        quick = None if openmetrics else self._quick(line)
        pairs: Sequence[tuple[str, str]] | None = None
        if quick is not None:
            name, label_text, value = quick
        else:
            stripped = line.strip(b" \t\r")
            if not stripped or stripped.startswith(b"#"):
                res.series_in -= 1
                return
            try:
                sample = parse_line(stripped, openmetrics)
            except ParseError as exc:
                self._bad(res, line, str(exc))
                return
            name, pairs = sample.name, sample.labels
            label_text = format_labels(pairs)
            value = sample.value
            if self.opt.keep_timestamps and sample.timestamp_ms is not None:
                value += b" " + sample.timestamp_ms
        target = fam
        if openmetrics and fam is not None and fam.type == "counter" and name == fam.name[:-6] + "_created":
            target = None  # `_created` goes out as its own gauge family
        if target is None or not target.owns(name):
            target = fams.get(name)
            if target is None:
                kind = "gauge" if name.endswith("_created") and fam is not None else "untyped"
                target = fams[name] = Family(name, kind)
        try:
            labels, pk, missed, new_name, conflicts = self._rewrite(target, name, label_text, pairs)
        except ParseError as exc:
            self._bad(res, line, str(exc))
            return
        res.join_misses += missed
        res.label_conflicts += conflicts
        if labels is None:
            res.dropped += 1
            if quick is not None and target is fam and not missed and b"} " in line:
                self._remember_drop(line, pk)
            return
        if new_name is not None and new_name != name:
            target = self._moved(new_name, target, fams)
            name = new_name
        prefix = name.encode() + (b"{" + labels + b"} " if labels else b" ")
        target.lines.append(prefix + value)
        if quick is not None and target is fam and not missed:
            self._remember(line, prefix, pk, target)

    def _remember(self, line: bytes, prefix: bytes, pk: PodKey | None, fam: Family) -> None:
        # Only labelled lines: the fast path keys on the text before the last "} ".
        k, sep, _ = line.rpartition(b"} ")
        if not sep:
            return
        owner = self._owner.setdefault(prefix, k)
        if owner != k:
            self._dupes.add(fam.name)
        self._cache[k] = prefix
        if pk is not None:
            self._by_pod.setdefault(pk, []).append(k)

    def _remember_drop(self, line: bytes, pk: PodKey | None) -> None:
        k = line.rpartition(b"} ")[0]
        self._drop.add(k)
        if pk is not None:
            self._by_pod.setdefault(pk, []).append(k)

    def _moved(self, name: str, origin: Family, fams: dict[str, Family]) -> Family:
        fam = fams.get(name)
        if fam is None:
            kind = origin.type if origin.type in ("counter", "gauge", "untyped") else "untyped"
            fam = fams[name] = Family(name, kind, origin.help)
        return fam

    def _rewrite(self, fam: Family, name: str, label_text: bytes,
                 pairs: Sequence[tuple[str, str]] | None) -> _Entry:
        variant = self.hook.variant(fam.name)
        key = (variant, name if self._by_name else None, label_text)
        entry = self._labels.get(key)
        if entry is None:
            if pairs is None:
                pairs = parse_labels(label_text)
            entry = self._compute(variant, name, list(pairs))
            if not entry[2]:
                self._labels[key] = entry
                if entry[1] is not None:
                    self._by_pod.setdefault(entry[1], []).append(key)
        return entry

    def _compute(self, variant: Any, name: str, pairs: Pairs) -> _Entry:
        labels = dict(pairs)
        pk, pod, missed = None, None, False
        if self.opt.pod_labels:
            ns = labels.get("namespace", "")
            pod_name = labels.get("pod") or labels.get("pod_name", "")
            if ns and pod_name:
                pk = (ns, pod_name)
                pod = self.index.get(ns, pod_name) if self.index else None
                if pod is None and self.index is not None:
                    missed = True
                    self.index.request_refresh()
        new = self.hook.rewrite(variant, pairs, pod)
        if new is None:
            return (None, pk, missed, None, 0)
        have = dict(new)
        conflicts = 0
        extra: Pairs = []
        joined = self.index.join_labels(pod) if pod is not None else ()
        for k, v in (*joined, *((("cluster", self.opt.cluster),) if self.opt.cluster else ())):
            if k in have:
                conflicts += have[k] != v  # the upstream's value wins
            else:
                extra.append((k, v))
        new = list(new) + extra
        new_name = None
        if self.opt.rules:
            out = relabel.apply(self.opt.rules, {"__name__": name, **dict(new)})
            if out is None:
                return (None, pk, missed, None, conflicts)
            new_name = out.pop("__name__", name)
            if not METRIC_NAME.match(new_name):
                return (None, pk, missed, None, conflicts)
            new = list(out.items())
        # Empty values are absent labels to Prometheus; an upstream `collector` label is kept
        # as `exported_collector`, as Prometheus does with clashing target labels.
        new = [("exported_collector" if k == "collector" else k, v) for k, v in new if v != ""]
        new += self._tail
        return (format_labels(new), pk, missed, new_name, conflicts)

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


def _prefix_of(line: bytes) -> bytes:
    k, sep, _ = line.rpartition(b"} ")
    return k if sep else line.partition(b" ")[0]
