"""Label-set surgery: the common label set rewritten as bytes (see pipeline.SeriesHook.reads).

A hook that declares the labels it reads promises to keep every other label as it is and in
place, and only to remove labels or append new ones. So its rewrite depends only on the
values of those labels (a "core": a cAdvisor cgroup's namespace, pod, container, id...), and
each label text is rewritten by cutting parts and appending the core's tail:

- a Core is one core's rewrite: the label names it cuts, what goes after the kept labels
  (the hook's additions and the pod's join labels), the names upstream must not bring;
- a Shape is one sequence of label names (a family's), checked once per run of label texts,
  with which of its parts stay for each set of names a Core cuts;
- the new texts of a scan segment that share a Shape are rewritten together, as whole-list
  operations (LabelSurgery._fresh_batch).

LabelSurgery is part of pipeline.Transformer (a base class, to keep that module readable): it
uses the transformer's caches (_cores, _shapes, _shape, _by_pod, _texts, _colliding, the
fast lane through _plain_of), its join (_join, _suffix_for), its hook and its one-by-one path
(_fresh). Anything unusual returns None and the transformer's general path decides.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, count, repeat
from operator import and_, attrgetter, call, eq, getitem, is_, itemgetter, ne, not_, or_
from typing import Any, Callable, Sequence

from exporter.expfmt import LABEL_NAME_BYTES, format_labels

PodKey = tuple[str, str]
Pairs = list[tuple[str, str]]
_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts, pod's key list)
_UNSEEN: Any = object()
_CLOSE = attrgetter("close")
_NO_NAMES: frozenset[bytes] = frozenset()


@dataclass(eq=False, slots=True)
class Core:
    """One rewrite of the labels a hook reads (see SeriesHook): the label names it cuts out
    (removed by the hook, or empty), how many of its labels are empty, what goes after the
    kept labels (its additions and the pod's join labels; None: the series is dropped), the
    label names that must not come from upstream (the join's, shared by a pod's rewrites, and
    its additions', shared by rewrites that add the same), the pod it joined and that pod's
    list of what to evict with it (keys)."""

    cut: frozenset[bytes]
    empties: int
    tail: bytes | None
    reserved: frozenset[bytes]
    added: frozenset[bytes]
    pk: PodKey | None
    missed: bool
    keys: list[Any] | None
    # The `name="` each of its parts was checked to start with (see LabelSurgery._fresh_batch)
    prefixes: tuple[bytes, ...] = ()
    # For a batch: what closes the label bytes after the kept labels (b"": dropped)
    close: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.close = b"" if self.tail is None else b'"' + (b"," + self.tail if self.tail else b"") + b"} "

    def clashes(self, names: frozenset[bytes] | tuple[bytes, ...]) -> bool:
        """Whether upstream label names include one the rewrite must not take from upstream."""
        return not (self.reserved.isdisjoint(names) and self.added.isdisjoint(names))


@dataclass(eq=False)
class Shape:
    """The label names of a run of label sets: their `name="` prefixes, the parts a hook
    reads, and which parts stay for each set of names a core rewrite cuts out."""

    names: tuple[bytes, ...]
    prefixes: tuple[bytes, ...]
    core: Callable[[Sequence[bytes]], tuple[bytes, ...]]  # parts -> the parts a hook reads
    at: list[int]  # ...which are these (and the others)
    rest: list[int]
    # Per set of names a core rewrite cuts: which parts stay (None: none, the general path)
    masks: dict[frozenset[bytes], tuple[bool, ...] | None] = field(default_factory=dict)
    picks: dict[frozenset[bytes], Callable[[Sequence[bytes]], tuple[bytes, ...]]] = field(
        default_factory=dict)  # ...and as getters of those parts
    nameset: frozenset[bytes] = field(init=False)
    core_prefixes: tuple[bytes, ...] = field(init=False)  # the `name="` of the parts a hook reads

    def __post_init__(self) -> None:
        self.nameset = frozenset(self.names)
        self.core_prefixes = tuple(self.prefixes[i] for i in self.at)

    def mask(self, cut: frozenset[bytes]) -> tuple[bool, ...] | None:
        keep = self.masks.get(cut, _UNSEEN)
        if keep is _UNSEEN:
            keep = tuple(n not in cut for n in self.names)
            keep = self.masks[cut] = keep if any(keep) else None
        return keep

    def pick(self, cut: frozenset[bytes]) -> Callable[[Sequence[bytes]], tuple[bytes, ...]]:
        """The parts that stay when `cut` is cut, as a getter of a tuple."""
        get = self.picks.get(cut)
        if get is None:
            at = list(compress(count(), self.mask(cut) or ()))
            get = self.picks[cut] = (itemgetter(*at) if len(at) > 1 else
                                     (lambda parts: (parts[at[0]],)) if at else (lambda parts: ()))
        return get


def _shape(parts: list[bytes], core: frozenset[bytes]) -> Shape | None:
    names = tuple(p.partition(b'="')[0] for p in parts)
    if not all(map(LABEL_NAME_BYTES.match, names)) or len(set(names)) != len(names):
        return None  # the precise parser names what is wrong
    prefixes = tuple(n + b'="' for n in names)
    if not all(map(bytes.startswith, parts, prefixes)):
        return None
    at = [i for i, n in enumerate(names) if n in core]
    get: Any = itemgetter(*at) if len(at) > 1 else (lambda p: (p[at[0]],)) if at else (lambda p: ())
    return Shape(names, prefixes, get, at, [i for i in range(len(names)) if i not in at])


def _columns_start(columns: list[list[bytes]], prefixes: tuple[bytes, ...]) -> bool:
    """Whether every part of columns[i] starts with prefixes[i]: per column, one join and one
    count (no part holds a newline, so each can start one "\\n" + prefix at most)."""
    for column, prefix in zip(columns, prefixes):
        joined = b"\n".join(column)
        if not joined.startswith(prefix) or joined.count(b"\n" + prefix) != len(column) - 1:
            return False
    return True


# Core rewrites of one node share a few cut sets and additions (`cgroup_kind="container"`...):
# made once, they are also one object each for the garbage collector and the mask caches.
@lru_cache(maxsize=4096)
def _names(names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(map(str.encode, names))


@lru_cache(maxsize=4096)
def _additions(added: tuple[tuple[str, str], ...]) -> tuple[bytes, frozenset[bytes], frozenset[str]]:
    """The label bytes of a hook's additions, and their names (upstream must not bring them),
    as bytes and as str."""
    names = frozenset(n for n, _ in added)
    return format_labels(rename_pairs(added)), frozenset(n.encode() for n in names), names


def rename_pairs(pairs: Sequence[tuple[str, str]]) -> Pairs:
    # Empty values are absent labels to Prometheus; an upstream `collector` label is kept as
    # `exported_collector`, as Prometheus does with target labels that clash.
    return [("exported_collector" if k == "collector" else k, v) for k, v in pairs if v != ""]


class LabelSurgery:
    """The bytes-level rewrite of label texts (see the module docstring)."""

    # Provided by pipeline.Transformer:
    _core: frozenset[bytes] | None
    _cores: dict[Any, dict[tuple, Core | None]]
    _shape: Shape | None
    _shapes: dict[tuple[bytes, ...], Shape]
    _by_pod: dict[PodKey, list[Any]]
    _texts: dict[bytes, bytes]
    _colliding: set[bytes]
    _collide: bool
    hook: Any
    _join: Callable[..., tuple]
    _suffix_for: Callable[..., tuple]
    _fresh: Callable[[Any, bytes], bytes | None]
    _plain_of: Callable[[Any], dict[bytes, bytes]]

    def _surgical(self, variant: Any, text: bytes) -> _Entry | None:
        """The common label set's rewrite as bytes surgery (see SeriesHook.reads): drop the
        parts the hook drops and the empty ones, append the hook's and the pod's labels. None
        when anything is unusual: the general path (parse, hook, format) decides then.
        Label sets come in runs of one shape (one family's label names), so the names are
        checked once per shape: each part must start with its `name="`."""
        if b"\\" in text or not text.endswith(b'"'):
            return None
        parts = text[:-1].split(b'",')
        sh = self._shape
        if sh is None or len(parts) != len(sh.prefixes) or not all(map(bytes.startswith, parts, sh.prefixes)):
            sh = self._shape = self._shape_of(parts)
            if sh is None:
                return None
        if text.count(b'"') != 2 * len(parts):
            return None  # a quote inside a value (each part holds its own opening one)
        core = sh.core(parts)
        c = self._cores_of(variant).get(core, _UNSEEN)
        if c is _UNSEEN:
            c = self._core_rewrite((variant, core), sh.core_prefixes)
        if c is None or c.clashes(sh.names):
            return None
        if c.tail is None:
            return (None, c.pk, c.missed, None, 0, c.keys)
        keep: Any = sh.mask(c.cut)
        if keep is not None and text.count(b'=""') != c.empties:  # (values hold no quotes: `=""` is empty)
            keep = map(and_, keep, map(ne, parts, sh.prefixes))  # also drop empty other labels
        kept = list(compress(parts, keep)) if keep is not None else []
        own = b'",'.join(kept) + b'"' if kept else b""
        return (own + b"," + c.tail if own and c.tail else own or c.tail, c.pk, c.missed, None, 0, c.keys)

    def _shape_of(self, parts: list[bytes]) -> Shape | None:
        """The shape of a label text's parts, remembered (its rewrites per core stay with it)."""
        key = tuple(p.partition(b'="')[0] for p in parts)
        sh = self._shapes.get(key)
        if sh is not None:  # (a part without `="` has its whole self as the name: check)
            return sh if all(map(bytes.startswith, parts, sh.prefixes)) else None
        sh = _shape(parts, self._core)  # type: ignore[arg-type]
        if sh is not None:
            self._shapes[key] = sh
        return sh

    def _cores_of(self, variant: Any) -> dict[tuple, Core | None]:
        """The core rewrites of one variant, by core label parts."""
        cores = self._cores.get(variant)
        if cores is None:
            cores = self._cores[variant] = {}
        return cores

    def _core_rewrite(self, key: tuple[Any, tuple[bytes, ...]], prefixes: tuple[bytes, ...]) -> Core | None:
        """Join and hook for one combination of the labels the hook reads (key: the variant and
        those parts, checked to start with `prefixes`), remembered under `key` and tied to its
        pod for eviction (by the same tuple: one object per combination). None when the
        hook's result is not a plain removal plus additions (the general path then)."""
        c = self._cores_of(key[0])[key[1]] = self._core_of(*key)
        if c is not None:
            c.prefixes = prefixes
            if c.pk is not None:
                self._by_pod.setdefault(c.pk, []).append(key)
        return c

    def _core_of(self, variant: Any, core: tuple[bytes, ...]) -> Core | None:
        # The split of expfmt.label_dict without its checks: these parts were checked to hold
        # valid names and values without quotes (label_dict here cost 2% of a cold scrape).
        try:
            tokens = b'",'.join(core).decode().replace('",', '="').split('="')
        except UnicodeDecodeError:
            return None
        pairs = list(zip(tokens[0::2], tokens[1::2]))
        pk, pod, missed, keys = self._join(pairs)
        suffix, joined, taken = self._suffix_for(pk, pod)
        new = self.hook.rewrite(variant, pairs, pod)
        if new is None:
            return Core(_NO_NAMES, 0, None, _NO_NAMES, _NO_NAMES, pk, missed, keys)
        # The hook kept a subsequence of the pairs, then added labels: what it did not keep,
        # and the empty ones (absent labels to Prometheus), are cut.
        cut: list[str] = []
        k, last = 0, len(new)
        for p in pairs:
            if k < last and new[k] == p:
                k += 1
                if p[1]:
                    continue
            cut.append(p[0])
        tail, own = b"", _NO_NAMES
        if k < last:
            tail, own, names = _additions(tuple(new[k:]))
            if not names.isdisjoint(joined):
                return None  # the join makes it too: the general path merges (the hook's wins)
            # (An addition named like an upstream label, such as a kept one moved to the end, is
            # seen per label text: Core.clashes.)
        return Core(_names(tuple(cut)), tokens[1::2].count(""),
                    tail + b"," + suffix if tail and suffix else tail or suffix, taken, own, pk, missed, keys)

    def _fresh_batch(self, variant: Any, texts: list[bytes]) -> list[bytes | None]:
        """_fresh for the new label texts of one scan segment. They are mostly of one shape
        (one family's label names): then the surgery runs as whole-list operations, and only
        each new combination of the labels the hook reads costs Python code (_core_rewrite).
        Results are remembered in the scan's fast lane; each text of a pod's series goes on
        that pod's eviction list."""
        if len(texts) < 4 or not self._surgical(variant, texts[0]) or not all(texts):
            return [self._fresh(variant, text) for text in texts]
        sh: Any = self._shape  # the first text's: all must have it, as _surgical checks one
        k, n, first = len(sh.names), len(texts), sh.prefixes[0]
        # All the texts' parts in one list (the join adds the `",` between two texts). Its
        # rows are the texts: each part starts with its column's `name="` (_columns_start),
        # so every text, starting with the first name, starts a row, and as rows are whole
        # texts, n texts in n rows each hold one.
        joined = b",".join(texts)
        if (b"\\" in joined or set(map(itemgetter(-1), texts)) != {34}
                or set(map(getitem, texts, repeat(slice(0, len(first))))) != {first}
                or joined.count(b'"') != 2 * k * n):  # (no quote inside a value)
            return [self._fresh(variant, text) for text in texts]  # odd ones: one by one
        parts = joined.split(b'",')
        parts[-1] = parts[-1][:-1]  # (its closing quote: cheaper than a copy of `joined` without it)
        columns = [parts[i::k] for i in range(k)]
        # The parts a hook reads are checked once per combination (when its core rewrite is
        # made, and then per batch: the Core's prefixes), the others here.
        rest = [columns[i] for i in sh.rest]
        if len(parts) != k * n or not _columns_start(rest, [sh.prefixes[i] for i in sh.rest]):
            return [self._fresh(variant, text) for text in texts]
        # The keys are looked up as zip makes them, not kept: a list of them would be a tuple
        # per text for the garbage collector to count and traverse.

        def core() -> Any:
            return zip(*map(columns.__getitem__, sh.at)) if sh.at else repeat((), n)
        cores, cp = self._cores_of(variant), sh.core_prefixes
        found = list(map(cores.get, core(), repeat(_UNSEEN)))
        unseen = list(map(is_, found, repeat(_UNSEEN)))
        if True in unseen:  # new combinations: each rewritten once (None: not this shape's names)
            made = {key: self._core_rewrite((variant, key), cp) if all(map(bytes.startswith, key, cp))
                    else None for key in dict.fromkeys(compress(core(), unseen))}
            for i, c in zip(compress(count(), unseen), map(made.__getitem__, compress(core(), unseen))):
                found[i] = c
        if None in found:  # (no core rewrite: the general path)
            return self._fresh_some(variant, texts, list(map(is_, found, repeat(None))))
        # One the general path must rewrite (an unknown pod, a clash with the join's names,
        # nothing kept), or one with an empty label outside its core (which its core rewrite
        # did not count): one by one. Per core rewrite, which parts stay.
        masks, odd = {}, set()
        for c in set(found):
            masks[c] = keep = sh.mask(c.cut)
            if (c.missed or c.clashes(sh.nameset) or keep is None and c.tail is not None
                    or c.prefixes is not cp and c.prefixes != cp):
                odd.add(c)
        empty = [i for i in sh.rest if sh.prefixes[i] in columns[i]]  # (a bare `name="`)
        if odd or empty:
            bad = list(map(odd.__contains__, found))
            for i in empty:
                bad = list(map(or_, bad, map(eq, columns[i], repeat(sh.prefixes[i]))))
            return self._fresh_some(variant, texts, bad)
        closes = list(map(_CLOSE, found))
        picks = {c: sh.pick(c.cut) for c in masks}
        kept = map(b'",'.join, map(call, map(picks.__getitem__, found), zip(*columns)))
        lbs = list(map(b"".join, zip(repeat(b"{"), kept, closes)))
        for i in compress(count(), map(not_, closes)):
            lbs[i] = b""  # dropped
        if self._collide:
            out, ins = list(compress(lbs, lbs)), list(compress(texts, lbs))  # (not the dropped)
            self._colliding.update(compress(out, map(ne, map(self._texts.setdefault, out, ins), ins)))
        self._plain_of(variant).update(zip(texts, lbs))
        # Each text goes on its pod's eviction list (a system cgroup's on none: a list dropped here).
        lists = {c: [] if c.keys is None else c.keys for c in masks}
        deque(map(list.append, map(lists.__getitem__, found), texts), maxlen=0)
        return lbs  # type: ignore[return-value]

    def _fresh_some(self, variant: Any, texts: list[bytes], odd: list[bool]) -> list[bytes | None]:
        """A batch of which the `odd` texts go one by one (_fresh)."""
        if all(odd):
            return [self._fresh(variant, text) for text in texts]
        rest = iter(self._fresh_batch(variant, list(compress(texts, map(not_, odd)))))
        return [self._fresh(variant, t) if o else next(rest) for t, o in zip(texts, odd)]
