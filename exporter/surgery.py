"""Label-set surgery: the common label set rewritten as bytes (see pipeline.SeriesHook.reads).

A hook that declares the labels it reads promises to keep every other label as it is and in
place, and only to remove labels or append new ones. So its rewrite depends only on the
values of those labels (a "core": a cAdvisor cgroup's namespace, pod, container, id...), and
each label text is rewritten by cutting parts and appending the core's tail:

- a Core is one core's rewrite: the label names it cuts, what goes after the kept labels
  (the hook's additions and the pod's join labels), the names upstream must not bring;
- a Shape is one sequence of label names (a family's), checked once per run of label texts;
- a lane is how a Shape's texts are rewritten with one Core, applied to many texts at once
  when a scan segment's new texts share a shape (LabelSurgery._fresh_batch).

LabelSurgery is part of pipeline.Transformer (a base class, to keep that module readable): it
uses the transformer's caches (_cores, _shapes, _shape, _by_pod, _texts, _colliding, the
fast lane through _plain_of), its join (_join, _suffix_for), its hook and its one-by-one path
(_fresh). Anything unusual returns None and the transformer's general path decides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import add, and_, getitem, gt, is_, itemgetter, ne, not_
from typing import Any, Callable, Sequence

from exporter.expfmt import LABEL_NAME_BYTES, format_labels

PodKey = tuple[str, str]
Pairs = list[tuple[str, str]]
_Entry = tuple  # (label bytes | None, pod key | None, missed, new name | None, conflicts, pod's key list)
_UNSEEN: Any = object()
_BUT_LAST = slice(None, -1)
_ODD = ((), b"", -1, False)  # a label text a batch leaves to _fresh (see LabelSurgery._lane)


@dataclass(eq=False)
class Core:
    """One rewrite of the labels a hook reads (see SeriesHook): the label names it cuts out
    (removed by the hook, or empty), how many of its labels are empty, what goes after the
    kept labels (its additions and the pod's join labels; None: the series is dropped), the
    label names that must not come from upstream, the pod it joined, and the label texts a
    batch rewrote with it (evicted with the pod; see LabelSurgery._fresh_batch)."""

    cut: frozenset[bytes]
    empties: int
    tail: bytes | None
    reserved: frozenset[bytes]
    pk: PodKey | None
    missed: bool
    keys: list[Any] | None
    texts: list[bytes] = field(default_factory=list)


@dataclass(eq=False)
class Shape:
    """The label names of a run of label sets: their `name="` prefixes, the parts a hook
    reads, and which parts stay for each set of names a core rewrite cuts out."""

    names: tuple[bytes, ...]
    prefixes: tuple[bytes, ...]
    core: Callable[[Sequence[bytes]], tuple[bytes, ...]]  # parts -> the parts a hook reads
    masks: dict[frozenset[bytes], tuple[bool, ...]] = field(default_factory=dict)
    # Per core rewrite: how a batch applies it (see LabelSurgery._lane)
    lanes: dict[Core | None, tuple[tuple[bool, ...], bytes, int, bool]] = field(default_factory=dict)


def _shape(parts: list[bytes], core: frozenset[bytes]) -> Shape | None:
    names = tuple(p.partition(b'="')[0] for p in parts)
    if not all(map(LABEL_NAME_BYTES.match, names)) or len(set(names)) != len(names):
        return None  # the precise parser names what is wrong
    prefixes = tuple(n + b'="' for n in names)
    if not all(map(bytes.startswith, parts, prefixes)):
        return None
    at = [i for i, n in enumerate(names) if n in core]
    get: Any = itemgetter(*at) if len(at) > 1 else (lambda p: (p[at[0]],)) if at else (lambda p: ())
    return Shape(names, prefixes, get)


def _columns_start(rows: list[list[bytes]], prefixes: tuple[bytes, ...]) -> bool:
    """Whether part i of every row starts with prefixes[i]: per column, one join and one count
    (no part holds a newline, so each can start one "\\n" + prefix at most)."""
    for i, prefix in enumerate(prefixes):
        column = b"\n".join(map(itemgetter(i), rows))
        if not column.startswith(prefix) or column.count(b"\n" + prefix) != len(rows) - 1:
            return False
    return True


def rename_pairs(pairs: Sequence[tuple[str, str]]) -> Pairs:
    # Empty values are absent labels to Prometheus; an upstream `collector` label is kept as
    # `exported_collector`, as Prometheus does with target labels that clash.
    return [("exported_collector" if k == "collector" else k, v) for k, v in pairs if v != ""]


class LabelSurgery:
    """The bytes-level rewrite of label texts (see the module docstring)."""

    # Provided by pipeline.Transformer:
    _core: frozenset[bytes] | None
    _cores: dict[tuple, Core | None]
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
        key = (variant, sh.core(parts))
        c = self._cores.get(key, _UNSEEN)
        if c is _UNSEEN:
            c = self._cores[key] = self._core_rewrite(variant, key[1])
            if c is not None and c.pk is not None:
                self._by_pod.setdefault(c.pk, []).append(key)
        if c is None or not c.reserved.isdisjoint(sh.names):
            return None
        if c.tail is None:
            return (None, c.pk, c.missed, None, 0, c.keys)
        keep = sh.masks.get(c.cut)
        if keep is None:
            keep = sh.masks[c.cut] = tuple(n not in c.cut for n in sh.names)
        if text.count(b'=""') != c.empties:  # (values hold no quotes: `=""` is an empty value)
            keep = map(and_, keep, map(ne, parts, sh.prefixes))  # also drop empty other labels
        kept = list(compress(parts, keep))
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

    def _core_rewrite(self, variant: Any, core: tuple[bytes, ...]) -> Core | None:
        """Join and hook for one combination of the labels the hook reads. None when the
        hook's result is not a plain removal plus additions (the general path then)."""
        try:
            pairs = [(n.decode(), v.decode()) for n, _, v in (p.partition(b'="') for p in core)]
        except UnicodeDecodeError:
            return None
        pk, pod, missed, keys = self._join(pairs)
        suffix, joined, taken = self._suffix_for(pk, pod)
        new = self.hook.rewrite(variant, pairs, pod)
        if new is None:
            return Core(frozenset(), 0, None, frozenset(), pk, missed, keys)
        empty = {k.encode() for k, v in pairs if not v}
        given = set(pairs)
        n = 0
        while n < len(new) and new[n] in given:
            n += 1
        kept, added = list(new[:n]), list(new[n:])
        names = {k for k, _ in pairs}
        stay = set(kept)
        if kept != [p for p in pairs if p in stay] or any(k in names or k in joined for k, _ in added):
            return None  # not a removal plus additions, or an addition the join overrides
        tail = format_labels(rename_pairs(added))
        reserved = taken | {k.encode() for k, _ in added} if added else taken
        drop = frozenset(n.encode() for n in names - {k for k, _ in kept})
        return Core(drop | empty, len(empty), tail + b"," + suffix if tail and suffix else tail or suffix,
                    reserved, pk, missed, keys)

    def _fresh_batch(self, variant: Any, texts: list[bytes]) -> list[bytes | None]:
        """_fresh for the new label texts of one scan segment. They are mostly of one shape
        (one family's label names): then the surgery runs as whole-list operations, and only
        each new combination of the labels the hook reads costs Python code (_core_rewrite).
        Results are remembered in the scan's fast lane; each text is tied to its core rewrite
        for eviction with the pod."""
        if len(texts) < 4 or not self._surgical(variant, texts[0]) or not all(texts):
            return [self._fresh(variant, text) for text in texts]
        sh: Any = self._shape  # the first text's: all must have it, as _surgical checks one
        joined = b"".join(texts)
        partss = list(map(bytes.split, map(getitem, texts, repeat(_BUT_LAST)), repeat(b'",')))
        if (b"\\" in joined or set(map(itemgetter(-1), texts)) != {34}  # (a quote closes each)
                or joined.count(b'"') != 2 * len(sh.names) * len(texts)  # (none in a value)
                or set(map(len, partss)) != {len(sh.names)} or not _columns_start(partss, sh.prefixes)):
            return [self._fresh(variant, text) for text in texts]  # odd ones: one by one
        cores = self._cores
        found = list(map(cores.get, zip(repeat(variant), map(sh.core, partss)), repeat(_UNSEEN)))
        for k in compress(count(), map(is_, found, repeat(_UNSEEN))):
            key = (variant, sh.core(partss[k]))
            c = cores.get(key, _UNSEEN)
            if c is _UNSEEN:
                c = cores[key] = self._core_rewrite(variant, key[1])
                if c is not None and c.pk is not None:
                    self._by_pod.setdefault(c.pk, []).append(key)
            found[k] = c
        lanes = list(map(sh.lanes.get, found, repeat(_UNSEEN)))
        for k in compress(count(), map(is_, lanes, repeat(_UNSEEN))):
            lane = sh.lanes.get(found[k], _UNSEEN)
            if lane is _UNSEEN:
                lane = sh.lanes[found[k]] = self._lane(sh, found[k])
            lanes[k] = lane
        # One the general path must rewrite, or a kept one with empty labels beyond its core's:
        # one by one.
        odd = list(map(gt, map(ne, map(bytes.count, texts, repeat(b'=""')), map(itemgetter(2), lanes)),
                       map(itemgetter(3), lanes)))
        if any(odd):
            if all(odd):
                return [self._fresh(variant, text) for text in texts]
            rest = iter(self._fresh_batch(variant, list(compress(texts, map(not_, odd)))))
            return [self._fresh(variant, t) if o else next(rest) for t, o in zip(texts, odd)]
        kept = map(b'",'.join, map(compress, partss, map(itemgetter(0), lanes)))
        lbs = list(map(add, map(add, repeat(b"{"), kept), map(itemgetter(1), lanes)))
        for k in compress(count(), map(itemgetter(3), lanes)):
            lbs[k] = b""  # dropped
        if self._collide:
            out, ins = list(compress(lbs, lbs)), list(compress(texts, lbs))  # (not the dropped)
            self._colliding.update(compress(out, map(ne, map(self._texts.setdefault, out, ins), ins)))
        self._plain_of(variant).update(zip(texts, lbs))
        for c, text in zip(found, texts):
            c.texts.append(text)
        return lbs  # type: ignore[return-value]

    def _lane(self, sh: Shape, c: Core | None) -> tuple[tuple[bool, ...], bytes, int, bool]:
        """How a batch rewrites label texts of one shape with one core rewrite: which parts
        stay, what closes the label bytes, how many empty labels the texts have, whether the
        series is dropped. _ODD when that is not a plain cut and append (no core rewrite, an
        unknown pod, a clash, nothing kept)."""
        if c is None or c.missed or not c.reserved.isdisjoint(sh.names):
            return _ODD
        if c.tail is None:
            return ((), b"", c.empties, True)
        keep = tuple(n not in c.cut for n in sh.names)
        if not any(keep):
            return _ODD
        return keep, b'"' + (b"," + c.tail if c.tail else b"") + b"} ", c.empties, False
