"""The per-source transform: parse -> join -> relabel, with caches at three levels.

1. Replay (exporter/fastpath.py): a payload shaped exactly like the last clean one is checked
   and rewritten with whole-list C calls; no Python bytecode runs per line. The steady state.
2. Scan: each line is first predicted by position (one startswith against the head the line
   at that position had last time), else split with find/slices and its label text looked
   up in the plain-rewrite cache. Output is kept as pieces (name, label bytes, value) and
   joined into one block per family; a clean scan leaves the plan the next replay follows.
3. Label sets: a new label text is rewritten once per transformer. With a hook that declares
   the labels it reads (SeriesHook.reads), the rewrite is bytes surgery (exporter/surgery.py,
   a base class of Transformer): the hook and the pod join run once per distinct combination
   of those labels (a cAdvisor cgroup), and each label text only drops and appends parts; the
   new texts of a scan segment go through it together, as whole-list operations. Otherwise:
   parse, hook, relabel, format.

Caches of a pod's label sets are evicted when the pod index reports that pod changed (and its
positions looked at again); everything is dropped when the label-set caches outgrow the
payload (series churn). Values are validated in bulk (float() at C speed plus a scan for
what Python accepts and Go does not).
"""
from __future__ import annotations

import logging
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import add, eq, getitem, is_, itemgetter, not_
from typing import Any, Callable, Protocol, Sequence

from exporter import fastpath, relabel
from exporter.errors import ParseError
from exporter.expfmt import (METRIC_NAME, OM_TYPES, TYPES, VALUE, VALUE_TS, Family,
                             format_labels, parse_labels, parse_line)
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.surgery import Core, LabelSurgery, Shape, rename_pairs

log = logging.getLogger("kubebridge.pipeline")
_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_TS = re.compile(rb"-?[0-9]+\Z")
Pairs = list[tuple[str, str]]
PodKey = tuple[str, str]


class SeriesHook(Protocol):
    """Source-specific rewriting (cAdvisor classification, legacy names). Must depend only on
    the family's `variant` and the label pairs, so that results can be cached per label set.

    A hook may also declare `reads`, the label names its rewrite looks at, promising that it
    keeps every other pair as it is and in place, and only removes pairs or appends new ones.
    The transformer then rewrites each distinct combination of those labels once and applies
    the result to label texts as bytes (cAdvisor repeats one cgroup's labels in a dozen label
    sets: per cpu, device, interface, state...)."""

    def variant(self, family: str) -> Any: ...

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None: ...


class NoHook:
    """The identity hook."""

    reads: frozenset[str] = frozenset()

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


# What a scan remembers of each line position (kept as three parallel lists): (length of the
# head the line starts with, output name, output label bytes "{...} "), label bytes b"" for a
# dropped series. Output = name + label bytes + value. Comments and blank lines are (their
# length, None, None). A name of b"" marks a position the next scan must look at again:
# _AGAIN, or a series of a pod the index lacks (which a replay still replays). A fourth list
# holds the heads themselves where the scan has them as objects (a predicted line's old head,
# a repeated block's), None where they are sliced from the lines after the scan, in one go
# (_Scan.missing lists those positions):
# laid out one after the other in memory, heads are faster to compare on every later scrape
# than heads allocated amid other objects.
_Ent = tuple
_AGAIN: _Ent = (0, b"", b"")
_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts, pod's key list)


_FIRST = itemgetter(0)
_FIRST_BYTE = slice(0, 1)
_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:"
_PENDING = b"?"  # the label bytes of a line whose label text is being rewritten (see _scan)
_Pos = tuple[list[int], list[bytes | None], list[bytes | None], list[bytes | None]]  # see _Ent


@dataclass
class _New:
    """New label texts of the current scan segment: the texts, where their label bytes go in
    the output and in the positions, and where the segment started (position, output, srcs,
    the dropped count)."""

    texts: list[bytes]
    outs: list[int]
    at: list[int]
    line: int
    out: int
    srcs: int
    dropped: int


@dataclass
class _Scan:
    """State of one pass over a payload. Emitted series of the family blocks go to one shared
    list in payload order, 4 pieces each (name, label bytes, value, newline: joined, they are
    the output); `spans` records where each block starts, counted in emitted series."""

    fams: dict[str, Family]
    res: Result
    out: list[bytes] = field(default_factory=list)
    # The input line of each (to name a bad one); None for a block's, whose lines are found
    # through `blocks`: (first series, first position, which of its lines went out | None: all,
    # the length of its heads that its positions do not hold). Holding every line would cost
    # a pass over them all when the scan's state goes.
    srcs: list[bytes | None] = field(default_factory=list)
    blocks: list[tuple[int, int, list[bool] | None, int]] = field(default_factory=list)
    spans: list[tuple[Family | None, int]] = field(default_factory=list)
    fam: Family | None = None
    variant: Any = None
    owned: dict[bytes, bool] = field(default_factory=dict)
    irregular: bool = False  # something the fast path cannot replay (misses, odd lines, ...)
    missing: list[int] = field(default_factory=list)  # positions whose head is sliced at the end
    colds: int = 0  # lines that went through Transformer._cold


class Transformer(LabelSurgery):
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
        # Called with a payload the replay could not take, before it is scanned: a source whose
        # rewrites depend on the payload as a whole (cAdvisor's restarted containers) looks at
        # it then. A replayed payload has the same series as the last scan, so needs no look.
        self.before_scan: Callable[[bytes], None] | None = None
        reads = getattr(self.hook, "reads", None)
        joins = self.opt.pod_labels and self.index is not None
        # The label names a rewrite depends on (see SeriesHook), None: parse every label set.
        self._core: frozenset[bytes] | None = None if reads is None or options.rules else frozenset(
            n.encode() for n in set(reads) | ({"namespace", "pod", "pod_name"} if joins else set()))
        self.reset()

    def reset(self) -> None:
        """Forget every cached rewrite (the next transform is cold)."""
        self._suffix: dict[PodKey | None, tuple] = {}  # join labels (see _suffix_for)
        self._labels: dict[tuple, tuple] = {}         # (variant, name | None, label text) -> see _remember
        self._plain: dict[Any, dict[bytes, bytes]] = {}  # variant -> label text -> b"{...} " | b"" dropped
        self._cores: dict[Any, dict[tuple, Core | None]] = {}  # variant -> core label parts -> rewrite
        self._shape: Shape | None = None             # the last label set's shape
        self._shapes: dict[tuple[bytes, ...], Shape] = {}  # every shape seen, by `name="` prefixes
        self._by_pod: dict[PodKey, list[Any]] = {}    # pod -> label keys to evict with it
        self._pks: dict[PodKey, PodKey] = {}          # pod -> the one key tuple that names it
        self._texts: dict[bytes, bytes] = {}          # output label bytes -> first label text
        self._colliding: set[bytes] = set()           # ...reached from two label texts
        self._dupes: set[str] = set()                 # families that may hold duplicates
        self._gen = self.index.generation if self.index else 0
        self._forget()

    def _forget(self) -> None:
        """Drop what the last scan saw by position."""
        self._heads: list[bytes] = []                 # the last scan's lines: their heads...
        self._head_bytes = 0                          # (their total length)
        self._names: list[bytes | None] = []          # ...output names and label bytes (_Ent)
        self._lbs: list[bytes | None] = []
        self._plan: fastpath.Plan | None = None       # the last clean scan, for replay

    def _sync(self) -> None:
        if self.index is None:
            return
        changed = self.index.changed_since(self._gen)
        if changed is None:
            self.reset()
            return
        gone: set[bytes] = set()  # label bytes of the changed pods' series (b"": dropped)
        for pk in changed:
            for key in self._by_pod.pop(pk, ()):
                if type(key) is bytes:  # a label text a batch rewrote (see _fresh_batch)
                    self._evict_text(key, gone)
                    continue
                if len(key) == 2:  # (variant, core label parts)
                    c = self._cores.get(key[0], {}).pop(key[1], None)
                    if c is not None and c.tail is None:
                        gone.add(b"")  # its series were dropped
                    continue
                entry = self._labels.pop(key, None)
                lb = self._plain.get(key[0], {}).pop(key[2], None) or (entry[0] if entry else None)
                gone.add(lb or b"")
                if lb and self._texts.get(lb) == key[2]:
                    del self._texts[lb]
            self._suffix.pop(pk, None)
            self._pks.pop(pk, None)
        self._gen = self.index.generation
        if not changed:
            return
        # The plan replays label bytes: it goes. The positions go on predicting the other
        # series; those of the changed pods' are looked at again (and every dropped one: a
        # dropped series does not say whose it was).
        self._plan = None
        names = self._names
        for k in compress(count(), map(gone.__contains__, self._lbs)):
            names[k] = b""

    def _evict_text(self, text: bytes, gone: set[bytes]) -> None:
        """Forget a label text's rewrite in every lane (its label bytes go into `gone`). A text
        names its pod, so in any lane it is that pod's."""
        for lane in self._plain.values():
            lb = lane.pop(text, None)
            if lb is not None:
                gone.add(lb)
                if lb and self._texts.get(lb) == text:
                    del self._texts[lb]

    def transform(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Parse and rewrite one payload."""
        self._sync()
        res = Result(families=[])
        fams: dict[str, Family] = {}
        lines = payload.split(b"\n")  # the one copy of the payload the transform makes
        res.series_in = len(lines)
        if openmetrics:
            if self.before_scan is not None:
                self.before_scan(payload)
            fam: Family | None = None
            for line in lines:
                if line.startswith(b"#"):
                    res.series_in -= 1
                    fam = self._header(line[1:], fam, fams, True, res)
                else:
                    self._slow(line, fam, fams, True, res)
            res.families = [f for f in fams.values() if f.lines]
            res.series_out = sum(len(f.lines) for f in res.families)
            res.series_out -= self._dedupe(res, set(fams) if self._collide else set())
        elif not self._replay(payload, lines, res):  # the replay counts from its plan
            if self.before_scan is not None:
                self.before_scan(payload)
            res.series_out = self._scan(lines, _Scan(fams, res))
            res.families = [f for f in fams.values() if f.lines]
            dupes = self._dedupe(res, self._dupes)
            res.series_out -= dupes
            if self._plan is not None and dupes:
                self._plan.dupes = self._dupes  # the replay must deduplicate too
        if len(self._labels) + sum(map(len, self._plain.values())) > 2 * res.series_in + 1024:
            self.reset()  # label sets of series long gone (the pod index evicts pods' own)
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
        res.series_in, res.join_misses, res.label_conflicts = plan.series_in, plan.misses, plan.conflicts
        if plan.misses and self.index is not None:
            self.index.request_refresh()  # as the scan that made the plan did
        res.series_out = len(plan.values) - (self._dedupe(res, plan.dupes) if plan.dupes else 0)
        res.dropped += plan.dropped
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

    def _scan(self, lines: list[bytes], st: _Scan) -> int:
        """Emit every line of a text-format payload; returns how many series went out."""
        # What each position held, as plain lists: no tuple per line for the collector to
        # track (see _Ent for the meaning of the entries).
        pos: _Pos = ([], [], [], [])
        # New label texts are not rewritten one by one: their lines go out with a placeholder,
        # and the texts of a segment (the lines since the last comment or odd line) are
        # rewritten together when it ends (_settle).
        new = _New([], [], [], 0, 0, 0, st.res.dropped)
        # Upstreams serve their series in a stable order, so the line at position i is most
        # likely the series seen at position i last time: check that with one startswith
        # (no copy, no hash). Only while the comments are where they were: a line that moved
        # under another family header must be looked at again.
        heads: Any = self._heads
        prev_l: Any = self._lbs
        comments = list(map(is_, prev_l, repeat(None)))
        if len(prev_l) == len(lines) and list(compress(lines, comments)) == list(compress(heads, comments)):
            self._walk(st, lines, lines, heads, self._names, prev_l, pos, new)
        else:
            self._blocks(st, lines, pos, new)
        if new.texts:
            self._settle(st, lines, pos, new)
        hlens, self._names, self._lbs, heads = pos
        self._head_bytes = sum(hlens) + sum(b[3] for b in st.blocks)
        missing = st.missing  # (recorded as they come: a pass over the heads would touch each)
        for i, head in zip(missing, list(map(getitem, map(lines.__getitem__, missing),
                                             map(slice, repeat(None), map(hlens.__getitem__, missing))))):
            heads[i] = head
        self._heads = heads
        return self._place(st, lines)

    def _blocks(self, st: _Scan, lines: list[bytes], pos: _Pos, new: _New) -> None:
        """A scan without positions to go by (cold), family block by family block. Upstreams
        repeat one sequence of label sets across families (cAdvisor: every memory family has
        one series per cgroup, in one order), so a block is first tried as a repeat of the
        last block of its variant and size (_repeat). Otherwise it is taken whole (_whole),
        else line by line, and becomes the one later blocks try. _repeat and _whole run
        whole-list operations: no Python code per line."""
        hlens, names, labels, _ = pos
        seen: dict[tuple[Any, int], tuple[list[bytes], list[Any]]] = {}
        at = 0
        for stop in [*_comment_lines(lines), len(lines)]:
            end = stop
            while end > at and not lines[end - 1]:
                end -= 1  # (blank lines before a comment go one by one)
            n, key = end - at, (st.variant, end - at)
            if n >= 2 and key in seen and self._repeat(st, lines, at, end, seen[key], pos):
                at = end
            elif n >= 2:
                like = self._whole(st, lines, at, end, pos)
                if like is not None:
                    seen[key] = like
                    at = end
            first, colds = len(hlens), st.colds
            if at < end:
                self._own(st, lines[at])  # (so that the block's first line takes the fast lane too)
            self._walk(st, lines, lines[at:stop + 1], repeat(b"\n"), repeat(None), repeat(None), pos, new)
            # A block that went line by line all in the fast lane is what the next one tries.
            nm = names[first] if n >= 2 and at < end and stop < len(lines) else None
            if nm and st.colds - colds == stop + 1 - end and names[first:first + n].count(nm) == n:
                ends = map(add, hlens[first:first + n], repeat(-2))  # (before the `} `)
                texts = list(map(getitem, lines[at:end], map(slice, repeat(len(nm) + 1), ends)))
                seen[key] = (texts, labels[first:first + n])
            at = stop + 1

    @staticmethod
    def _own(st: _Scan, line: bytes) -> bytes:
        """The name of a sample line with a label set if its family owns it (as _cold decides
        on the first such line of a family), else b"" ."""
        nm = line[:len(line) - len(line.lstrip(_NAME_CHARS))]
        if not nm or st.fam is None or line[len(nm):len(nm) + 1] != b"{" or b"} " not in line:
            return b""
        ok = st.owned.get(nm)
        if ok is None:
            ok = st.owned[nm] = _NAME.match(nm) is not None and st.fam.owns(nm.decode())
        return nm if ok else b""

    def _repeat(self, st: _Scan, lines: list[bytes], a: int, b: int,
                like: tuple[list[bytes], list[Any]], pos: _Pos) -> bool:
        """Emit lines[a:b] if they are an earlier block's series under this block's name: the
        same label texts in the same order (`like`: that block's label texts and label bytes).
        A head is made with one join per line (the text joins `name{` and `} `). One
        removeprefix per line checks it: a line that does not start with its head comes back
        as the same object, so one identity check per line finds it without reading the lines
        again."""
        todo = lines[a:b]
        texts, lbs = like
        nm = self._own(st, todo[0])
        if not nm or self._by_name:  # (_own found a family; the check is for types)
            return False
        heads = list(map(bytes.join, texts, repeat((nm + b"{", b"} "))))
        rests = list(map(bytes.removeprefix, todo, heads))
        if any(map(is_, rests, todo)) or b"} " in b"\n".join(rests):  # (a head ends at the last "} ")
            return False
        self._put_block(st, nm, todo, heads, sum(map(len, heads)), rests, lbs, pos)
        return True

    def _whole(self, st: _Scan, lines: list[bytes], a: int, b: int,
               pos: _Pos) -> tuple[list[bytes], list[Any]] | None:
        """Emit lines[a:b] as one block if they are series of one name, each with a label set
        of which the rewrite is known or can be made by surgery (new label texts go to
        _fresh_batch together). Returns what _repeat needs of it (the label texts and label
        bytes), or None when the block must go line by line (another name, a line without
        labels, an unknown pod, anything the general path must look at)."""
        todo = lines[a:b]
        nm = self._own(st, todo[0])
        if not nm or self._by_name or self._core is None:
            return None
        lead = nm + b"{"
        k = len(lead)
        if set(map(getitem, todo, repeat(slice(0, k)))) != {lead}:
            return None
        ends = list(map(bytes.rfind, todo, repeat(b"} ")))
        if min(ends) < k:  # (no "} ")
            return None
        texts = list(map(getitem, todo, map(slice, repeat(k), ends)))
        lane = self._plain_of(st.variant)
        lbs = list(map(lane.get, texts))
        if lbs.count(None) == len(lbs):  # (a new family's first block: every text new; a batch takes repeats)
            lbs = self._fresh_batch(st.variant, texts)
            if None in lbs:
                return None
        elif None in lbs:
            fresh = list(dict.fromkeys(compress(texts, map(is_, lbs, repeat(None)))))
            got = dict(zip(fresh, self._fresh_batch(st.variant, fresh)))
            if None in got.values():
                return None
            lbs = list(map(got.get, texts, lbs))
        ends = list(map(add, ends, repeat(2)))
        heads = list(map(getitem, todo, map(slice, repeat(None), ends)))
        rests = list(map(getitem, todo, map(slice, ends, repeat(None))))
        self._put_block(st, nm, todo, heads, ends, rests, lbs, pos)
        return texts, lbs

    def _put_block(self, st: _Scan, nm: bytes, todo: list[bytes], heads: list[bytes], hlens: list[int] | int,
                   rests: list[bytes], lbs: list[Any], pos: _Pos) -> None:
        """Emit a block of series of one name: its lines, their heads (name and label text)
        and head lengths (or their total: the positions then hold 0, as only the sum of the
        lengths of heads kept as objects is needed), what follows the heads, and the output
        label bytes (b"": dropped)."""
        lengths, names, labels, kept = pos
        block, sel = (len(st.srcs), len(lengths)), None
        kept += heads
        if isinstance(hlens, int):
            lengths += repeat(0, len(heads))
        else:
            lengths += hlens
        names += repeat(nm, len(todo))
        labels += lbs
        vals: Any = rests
        if not self.opt.keep_timestamps:
            vals = map(_FIRST, map(bytes.partition, rests, repeat(b" ")))
        if b"" in lbs:  # dropped series
            sel = list(map(bool, lbs))
            st.res.dropped += len(lbs) - sum(sel)
            lbs, vals = list(compress(lbs, sel)), compress(vals, sel)
        chunk = [b"\n"] * (4 * len(lbs))
        chunk[0::4], chunk[1::4], chunk[2::4] = repeat(nm, len(lbs)), lbs, list(vals)
        st.out += chunk
        st.blocks.append((*block, sel, hlens if isinstance(hlens, int) else 0))
        st.srcs += repeat(None, len(lbs))
        if self._colliding and not self._colliding.isdisjoint(lbs):
            self._dupes.add(st.fam.name)  # type: ignore[union-attr]

    def _walk(self, st: _Scan, lines: list[bytes], todo: Sequence[bytes], heads: Any, prev_n: Any,
              prev_l: Any, pos: _Pos, new: _New, batch: bool = True) -> None:
        """Emit `todo` (the next lines of `lines`) line by line, each predicted by what stood
        at its position last time (heads, names, label bytes) when that is known. New label
        texts wait for a batch (_settle), or with batch=False go one by one (_cold)."""
        put, src = st.out.extend, st.srcs.append
        keep, colliding, nl = self.opt.keep_timestamps, self._colliding, b"\n"
        batch = batch and self._core is not None and not self._by_name
        hlens, names, labels, kept = pos
        hput, nput, lput, keep_head = hlens.append, names.append, labels.append, kept.append
        miss = st.missing.append
        owned = st.owned
        plain: Any = self._plain_of(st.variant).get
        for line, head, nm, lb in zip(todo, heads, prev_n, prev_l):
            if nm and line.startswith(head):  # not a comment (None), nor looked at again (b"")
                n = len(head)
                if lb:
                    e = -1 if keep else line.find(b" ", n)
                    put((nm, lb, line[n:e] if e >= 0 else line[n:], nl))
                    src(line)
                else:
                    st.res.dropped += 1
                hput(n)
                nput(nm)
                lput(lb)
                keep_head(head)
                continue
            # Not at its old place (or cold): its label set's rewrite is most likely known.
            j = line.rfind(b"} ")
            i = line.find(b"{")  # (one argument: find's argument parsing costs as much as its search)
            if 0 < i < j:
                nm, text = line[:i], line[i + 1:j]
                lb = plain(text)
                if lb is None and batch and owned.get(nm):
                    new.texts.append(text)
                    new.outs.append(len(st.out) + 1)
                    new.at.append(len(labels))
                    lb = _PENDING
                if lb is not None and owned.get(nm):
                    if lb:
                        e = -1 if keep else line.find(b" ", j + 2)
                        put((nm, lb, line[j + 2:e] if e >= 0 else line[j + 2:], nl))
                        src(line)
                        if colliding and lb in colliding:
                            self._dupes.add(st.fam.name)  # type: ignore[union-attr]
                    else:
                        st.res.dropped += 1
                    miss(len(hlens))
                    hput(j + 2)
                    nput(nm)
                    lput(lb)
                    keep_head(None)
                    continue
            if new.texts:
                self._settle(st, lines, pos, new)
            k, _, v = line.rpartition(b"} ")
            n, nm, lb = self._cold(line, k, v, st)
            miss(len(hlens))
            hput(n)
            nput(nm)
            lput(lb)
            keep_head(None)
            new.line, new.out, new.srcs, new.dropped = len(hlens), len(st.out), len(st.srcs), st.res.dropped
            owned, plain = st.owned, self._plain_of(st.variant).get  # a comment may have started a family

    def _plain_of(self, variant: Any) -> dict[bytes, bytes]:
        """The scan's fast lane for one variant: label text -> label bytes (b"" dropped)."""
        if self._by_name:
            return {}  # the rewrite depends on the sample name: no lane by label text alone
        lane = self._plain.get(variant)
        if lane is None:
            lane = self._plain[variant] = {}
        return lane

    def _settle(self, st: _Scan, lines: list[bytes], pos: _Pos, new: _New) -> None:
        """Rewrite the segment's new label texts together and fill in their lines (and take
        out those of dropped series). If one of them needs more than surgery (an unknown pod,
        an odd label set...), the segment is walked again without batches."""
        texts, outs, at = new.texts, new.outs, new.at
        new.texts, new.outs, new.at = [], [], []
        lbs = self._fresh_batch(st.variant, texts)
        if None in lbs:
            del st.out[new.out:], st.srcs[new.srcs:]
            st.res.dropped = new.dropped
            todo = lines[new.line:len(pos[0])]
            for kept in pos:
                del kept[new.line:]
            while st.blocks and st.blocks[-1][1] >= new.line:
                st.blocks.pop()
            while st.missing and st.missing[-1] >= new.line:
                st.missing.pop()
            self._walk(st, lines, todo, repeat(b"\n"), repeat(None), repeat(None), pos, new, batch=False)
        else:
            out, labels = st.out, pos[2]
            for i, k, lb in zip(outs, at, lbs):
                out[i] = labels[k] = lb
            if b"" in lbs:  # dropped series: their lines go again (from the end, so indexes hold)
                gone = list(compress(outs, map(not_, lbs)))
                for i in reversed(gone):
                    del out[i - 1:i + 3], st.srcs[i // 4]
                st.res.dropped += len(gone)
            if self._colliding and not self._colliding.isdisjoint(lbs):
                self._dupes.add(st.fam.name)  # type: ignore[union-attr]

    def _place(self, st: _Scan, lines: list[bytes]) -> int:
        """Put the emitted lines into their families (whole blocks at once when all values are
        good) and keep the plan for the next payload if the scan was clean. Returns how many
        series the families hold (counted, not by scanning the blocks for newlines)."""
        out = st.out
        vals = out[2::4]
        bad = set() if not vals or _valid(vals, self.opt.keep_timestamps) else self._find_bad(st, vals, lines)
        st.spans.append((None, len(vals)))
        placed: dict[str, int] = {}  # per family: span lines placed so far (they go first)
        ranges = []
        for (fam, start), (_, end) in zip(st.spans, st.spans[1:]):
            if fam is not None and end > start:
                if bad:
                    chunk = [b"".join(out[4 * i:4 * i + 3]) for i in range(start, end) if i not in bad]
                else:
                    chunk = [b"".join(out[4 * start:4 * end - 1])]
                at = placed.get(fam.name, 0)
                fam.lines[at:at] = chunk
                placed[fam.name] = at + len(chunk)
                ranges.append((fam, start, end))
        fams = [f for f in st.fams.values() if f.lines]
        # Lines the general path put into a family directly are single ones, after the blocks.
        direct = sum(len(f.lines) - placed.get(f.name, 0) for f in fams)
        self._plan = None
        if not (st.irregular or bad or direct):
            self._plan = fastpath.build(self._heads, self._head_bytes, self._names, self._lbs, out, fams,
                                        ranges, vals, st.res)
        return len(vals) - len(bad) + direct

    def _find_bad(self, st: _Scan, vals: list[bytes], lines: list[bytes]) -> set[int]:
        """The batch check failed: find the bad values one by one and name their lines."""
        bad = set()
        starts = [b[0] for b in st.blocks]
        for i, (val, line) in enumerate(zip(vals, st.srcs)):
            if not _valid([val], self.opt.keep_timestamps):
                bad.add(i)
                if line is None:  # a block's: its position among the block's emitted lines
                    first, at, sel, _ = st.blocks[bisect_right(starts, i) - 1]
                    k = i - first
                    line = lines[at + (k if sel is None else list(compress(count(), sel))[k])]
                self._bad(st.res, line, f"bad value {val[:40]!r}")
        return bad

    def _start(self, st: _Scan, line: bytes) -> None:
        """A comment line: a new family block starts (or the current one goes on)."""
        st.res.series_in -= 1
        fam = self._header(line[1:], st.fam, st.fams, False, st.res)
        if fam is not st.fam:
            st.fam, st.owned = fam, {}
            st.variant = self.hook.variant(fam.name) if fam is not None else None
            st.spans.append((fam, len(st.srcs)))

    def _cold(self, line: bytes, k: bytes, v: bytes, st: _Scan) -> _Ent:
        """A line the caches do not know: a comment, or a series to split, rewrite (the label
        set's rewrite is cached per label text), emit and remember. Its value is validated
        with the payload's batch check. Returns what the next scan predicts this position
        with (see _Ent)."""
        st.colds += 1
        if line.startswith(b"#"):
            self._start(st, line)
            return (len(line), None, None)
        fam, res = st.fam, st.res
        if not line:
            res.series_in -= 1
            return (0, None, None)
        if fam is None:  # samples before any HELP/TYPE
            st.irregular = True
            self._slow(line, None, st.fams, False, res)
            return _AGAIN
        if k:
            nm, brace, text = k.partition(b"{")
            head = len(k) + 2
        else:  # no label set: `name value [timestamp]`
            nm, brace, v = line.partition(b" ")
            text, brace = b"", brace and b"{"
            head = len(nm) + 1
        ok = st.owned.get(nm)
        if ok is None:
            ok = st.owned[nm] = bool(brace) and _NAME.match(nm) is not None and fam.owns(nm.decode())
        if not ok:
            st.irregular = True
            self._slow(line, fam, st.fams, False, res, st)
            return _AGAIN
        key = (st.variant, nm if self._by_name else None, text)
        entry = self._labels.get(key)
        if entry is None:
            try:
                entry = self._remember(key, self._core is not None and self._surgical(st.variant, text)
                                       or self._compute(st.variant, nm.decode(), list(parse_labels(text))),
                                       bool(k))
            except ParseError as exc:
                st.irregular = True
                self._bad(res, line, str(exc))
                return _AGAIN
        lb, missed, new_name, conflicts = entry
        res.join_misses += missed
        res.label_conflicts += conflicts
        if new_name is not None and new_name != nm.decode():
            st.irregular = True
            self._slow(line, fam, st.fams, False, res, st)  # renamed by relabeling: general path
            return _AGAIN
        if lb is None:
            res.dropped += 1
            return (head, b"" if missed else nm, b"")
        if lb in self._colliding:
            self._dupes.add(fam.name)
        ent = (head, nm, lb)
        self._emit(st, ent, v if self.opt.keep_timestamps else v.partition(b" ")[0], line)
        # A series of a pod the index does not know yet is replayed as it is (the plan goes
        # when the pod shows up) but a scan looks at it again: the no-name entry says so.
        return (head, b"", lb) if missed else ent

    def _fresh(self, variant: Any, text: bytes) -> bytes | None:
        """A new label text by surgery alone: its label bytes (b"" when dropped), remembered,
        or None when the general path must look (no surgery, unknown pod, ...)."""
        computed = self._surgical(variant, text)
        if computed is None or computed[2]:
            return None
        lb = self._remember((variant, None, text), computed, True)[0]
        return b"" if lb is None else lb

    def _remember(self, key: tuple, computed: _Entry, labelled: bool) -> tuple:
        """Cache a new label set's rewrite (unless its pod is unknown yet). Returns what the
        scan needs of it: (label bytes as they follow the name | None: dropped, missed,
        new name, conflicts)."""
        lbytes, _, missed, new_name, conflicts, keys = computed
        lb = None if lbytes is None else _piece(lbytes)
        entry = (lb, missed, new_name, conflicts)
        if self._collide and lb is not None and self._texts.setdefault(lb, key[2]) != key[2]:
            self._colliding.add(lb)  # two label texts, one output label set: deduplicate
        if missed:
            return entry
        self._labels[key] = entry
        if keys is not None:
            keys.append(key)
        if labelled and new_name is None and not conflicts and not self._by_name:
            self._plain_of(key[0])[key[2]] = b"" if lb is None else lb  # the scan's fast lane
        return entry

    @staticmethod
    def _emit(st: _Scan, ent: _Ent, val: bytes, src: bytes) -> None:
        st.out.extend((ent[1], ent[2], val, b"\n"))
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
        prefix = name.encode() + (b"{" + labels + b"} " if labels else b" ")
        if st is not None and target is st.fam:
            self._emit(st, (0, prefix, b""), value, line)  # keeps its place among the family's lines
        else:
            target.lines.append(prefix + value)

    def _moved(self, name: str, origin: Family, fams: dict[str, Family]) -> Family:
        fam = fams.get(name)
        if fam is None:
            kind = origin.type if origin.type in ("counter", "gauge", "untyped") else "untyped"
            fam = fams[name] = Family(name, kind, origin.help)
        return fam

    def _join(self, pairs: Pairs) -> tuple[PodKey | None, PodMeta | None, bool, list[Any] | None]:
        """The pod a label set names (key, metadata, whether unknown, its eviction list)."""
        pk, pod, missed = None, None, False
        if self.opt.pod_labels and self.index is not None:
            labels = dict(pairs)
            ns = labels.get("namespace")
            pod_name = labels.get("pod") or labels.get("pod_name")
            if ns and pod_name:
                pk = self._pks.setdefault((ns, pod_name), (ns, pod_name))  # (one tuple per pod, kept)
                pod = self.index.get(ns, pod_name)
                if pod is None:
                    missed = True
                    self.index.request_refresh()
        return pk, pod, missed, (self._by_pod.setdefault(pk, []) if pk is not None else None)

    def _compute(self, variant: Any, name: str, pairs: Pairs) -> _Entry:
        """Rewrite one label set: source hook, pod join, cluster, relabel, collector."""
        pk, pod, missed, keys = self._join(pairs)
        new = self.hook.rewrite(variant, pairs, pod)
        if new is None:
            return (None, pk, missed, None, 0, keys)
        suffix, joined, _ = self._suffix_for(pk, pod)
        names = [k for k, _ in new]
        if not self.opt.rules and joined.keys().isdisjoint(names):
            # The common case: upstream labels, then the pod's pre-formatted join labels.
            own = format_labels(rename_pairs(new))
            return (own + b"," + suffix if own and suffix else own or suffix, pk, missed, None, 0, keys)
        conflicts = sum(1 for k, v in new if k in joined and joined[k] != v and v != "")
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
        return (format_labels(rename_pairs(merged) + list(self._tail)), pk, missed, new_name, conflicts, keys)

    def _suffix_for(self, pk: PodKey | None, pod: PodMeta | None) -> tuple[bytes, dict[str, str], Any]:
        """The join labels of a pod (or none), cluster and collector, formatted once, and the
        label names upstream series must not bring for surgery (see _core_rewrite)."""
        key = pk if pod is not None else None
        got = self._suffix.get(key)
        if got is None:
            joined = dict(self.index.join_pairs(pod)) if pod is not None and self.index else {}
            if self.opt.node and "node" not in joined:
                joined["node"] = self.opt.node
            if self.opt.cluster:
                joined["cluster"] = self.opt.cluster
            got = (format_labels([*joined.items(), *self._tail]), joined,
                   frozenset(k.encode() for k in [*joined, "collector"]))
            self._suffix[key] = got
        return got

    @staticmethod
    def _dedupe(res: Result, names: set[str]) -> int:
        """Two upstream series that rewrite to one output series (a restarted container once
        its `id`/`name` are dropped): keep the last, as Prometheus would keep one anyway.
        Only the families in `names` can hold any. Returns how many lines were dropped."""
        gone = 0
        for fam in res.families:
            if fam.name not in names:
                continue
            lines = list(fam.samples())
            seen: dict[bytes, int] = {}
            for i, line in enumerate(lines):
                seen[_prefix_of(line)] = i
            if len(seen) != len(lines):
                keep = set(seen.values())
                gone += len(lines) - len(keep)
                fam.lines[:] = [ln for i, ln in enumerate(lines) if i in keep]
        res.dropped += gone
        return gone


_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")


_RUN = 64  # lines: a run of one name at least this long is measured, not read line by line


def _comment_lines(lines: list[bytes]) -> list[int]:
    """The indexes of the lines that start with '#', where family blocks end. Reading a line
    costs a cache miss per line object (a fifth of a cold cAdvisor scan went to the 25,000
    of a 110-pod node), and a block is mostly long runs of lines of one name: such a run is
    measured by galloping (probing doubling distances, then bisecting), the rest is read 64
    lines at a time (one-byte slices are shared objects: no allocation per line).
    In valid exposition this is exact: a family's samples are contiguous. A comment between
    two lines of one name (a repeated family) can be missed: its block then goes line by line,
    as _whole and _repeat check every line of a block."""
    out: list[int] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        lead = line[:len(line) - len(line.lstrip(_NAME_CHARS)) + 1]  # `name{` (or `name `)
        if lead == b"#":
            out.append(i)
            i += 1
            continue
        far = i + _RUN
        if len(lead) > 1 and far < n and lines[far].startswith(lead):
            low, step = far, _RUN  # lines[low] is in the run; lines[low + step] may not be
            while low + step < n and lines[low + step].startswith(lead):
                low, step = low + step, 2 * step
            high = min(low + step, n)
            while high - low > 1:
                mid = (low + high) // 2
                if lines[mid].startswith(lead):
                    low = mid
                else:
                    high = mid
            i = high
            continue
        far = min(far, n)
        out += compress(range(i, far), map(eq, map(getitem, lines[i:far], repeat(_FIRST_BYTE)), repeat(b"#")))
        i = far
    return out


def _valid(vals: list[bytes], timestamps: bool) -> bool:
    """Whether every value (and timestamp, when kept) is one Prometheus accepts, checked in
    bulk at C speed: with every digit made 0, a batch's values come in a few distinct shapes
    (`0.00000000e+00`), and each shape is matched once (see expfmt.VALUE). float() on each
    value cost three to five times more, and accepts spellings Go does not."""
    match = (VALUE_TS if timestamps else VALUE).match
    return all(map(match, set(b"\n".join(vals).translate(_DIGITS_TO_0).split(b"\n"))))


def _piece(lbytes: bytes) -> bytes:
    """Label bytes as they follow a sample name: `{a="1"} `, or a space when there are none."""
    return b"{" + lbytes + b"} " if lbytes else b" "


def _prefix_of(line: bytes) -> bytes:
    k, sep, _ = line.rpartition(b"} ")
    return k if sep else line.partition(b" ")[0]
