"""The kubelet's `/pods` parsed off the event loop, one pod at a time.

Contract: `parse_podlist_bytes(body)` returns what `pods.parse_podlist(json.loads(body))`
returns. A large body is parsed in a worker thread, pod by pod: each item of the top-level
`items` array is decoded on its own and reduced to its `PodMeta` at once, so the raw document
is never held as Python objects (a 20k-pod, 114 MB list costs the body, its text and the
index, not a gigabyte of dicts), and the thread runs Python bytecode between pods, so it
hands the GIL to the event loop regularly (a single `json.loads` in a thread holds it for the
whole parse). Anything but a top-level object whose `items` is an array is handed to
`parse_podlist` whole, which decides what it means.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from exporter.errors import ParseError
from exporter.jsonshape import loads
from exporter.pods import PodMeta, parse_podlist, pod_meta

INLINE_BYTES = 1 << 20  # smaller bodies are parsed on the event loop, in one call
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


async def parse_podlist_bytes(body: bytes) -> dict[tuple[str, str], PodMeta]:
    """A `/pods` body -> {(namespace, name): PodMeta}; raises ValueError on invalid JSON."""
    if len(body) <= INLINE_BYTES:
        return parse_podlist(loads(body, "/pods"))
    return await asyncio.to_thread(parse_podlist_stream, body)


def parse_podlist_stream(body: bytes) -> dict[tuple[str, str], PodMeta]:
    """The same, pod by pod (see the module's contract); call it in a thread."""
    text = body.decode("utf-8-sig" if body.startswith(b"\xef\xbb\xbf") else "utf-8")
    pos = _WS.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("{", pos):
        return parse_podlist(json.loads(text))
    out: dict[tuple[str, str], PodMeta] = {}
    for key, value in _members(text, pos):
        if key != "items":
            continue
        if isinstance(value, _Array):
            out = {}
            for item in value:
                if not isinstance(item, Mapping):
                    raise ParseError("/pods: an item of 'items' is not an object")
                meta = pod_meta(item)
                if meta.name:
                    out[meta.key] = meta
        else:
            out = parse_podlist({"items": value})
    return out


class _Array:
    """The items of a JSON array in `text` at `pos`, decoded one at a time."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos, self.end = text, pos, -1

    def __iter__(self) -> Iterator[Any]:
        text, i = self.text, _skip(self.text, self.pos + 1)
        if text.startswith("]", i):
            self.end = i + 1
            return
        while True:
            item, i = _DECODER.raw_decode(text, i)
            yield item
            i = _skip(text, i)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
                continue
            if not text.startswith("]", i):
                raise ValueError(f"invalid JSON at char {i}: expected , or ]")
            self.end = i + 1
            return


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _members(text: str, pos: int) -> Iterator[tuple[str, Any]]:
    """(key, value) of the object at `pos`; an `items` array comes as an `_Array` to iterate
    before the next member is read. Anything after the object must be whitespace."""
    i = _skip(text, pos + 1)
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            key, i = _DECODER.raw_decode(text, i)
            if not isinstance(key, str):
                raise ValueError(f"invalid JSON at char {i}: object key is not a string")
            i = _skip(text, i)
            if not text.startswith(":", i):
                raise ValueError(f"invalid JSON at char {i}: expected :")
            i = _skip(text, i + 1)
            if key == "items" and text.startswith("[", i):
                arr = _Array(text, i)
                yield key, arr
                if arr.end < 0:  # not iterated: walk it to find its end
                    for _ in arr:
                        pass
                i = arr.end
            else:
                value, i = _DECODER.raw_decode(text, i)
                yield key, value
            i = _skip(text, i)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
                continue
            if not text.startswith("}", i):
                raise ValueError(f"invalid JSON at char {i}: expected , or }}")
            i += 1
            break
    if _skip(text, i) != len(text):
        raise ValueError(f"invalid JSON at char {i}: extra data")
