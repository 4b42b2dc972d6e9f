"""Per-image template stores for autodiscovery, each hot-reloaded without a restart.

- `FileStore`: one YAML/JSON file, or a directory of them (a mounted ConfigMap), each a mapping
  `<image short name>: <template>`; polled by mtime (a ConfigMap update swaps the `..data`
  symlink, which changes every file's stat).
- `EtcdV3Store`, `EtcdV2Store`, `ConsulStore`: the classic key-value layout
  `<prefix>/check_configs/<image>/{check_names, init_configs, instances}` (JSON values; only
  `instances` is required, and it must hold exactly one template). etcd v3 is read through the
  JSON gateway (`POST /v3/kv/range`, then a `POST /v3/watch` NDJSON stream); etcd v2 through the
  keys API (`?recursive=true`, then `?wait=true&waitIndex=`); Consul through the KV API
  (`?recurse`, then blocking queries on `X-Consul-Index`).

A store keeps its last good templates while its backend is unreachable, and an invalid
template for one image never affects the others. Errors are logged and counted once per
distinct bad input (`ErrorLog`).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import quote

import aiohttp

from exporter.autodiscovery.templates import Template, TemplateError, loads, parse
from exporter.config import Endpoint
from exporter.deps import Deps
from exporter.errors import NoDataError
from exporter.upstream import TLS, TokenSource, Upstream, UpstreamError

log = logging.getLogger("kubebridge.autodiscovery")
_PARTS = ("check_names", "init_configs", "instances")


class ErrorLog:
    """Template errors, logged and counted once per distinct (key, input) while they last."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._seen: dict[str, dict[Any, str]] = {}

    def sync(self, scope: str, current: Mapping[Any, tuple[str, str, str]]) -> None:
        """`current`: key -> (source, raw input, message) of every error in `scope` right now."""
        seen = self._seen.setdefault(scope, {})
        for key, (source, raw, message) in current.items():
            if seen.get(key) != raw:
                self.counts[source] += 1
                log.warning("autodiscovery: %s", message)
            seen[key] = raw
        for key in [k for k in seen if k not in current]:
            del seen[key]


class Store:
    """image short name -> Template; `version` changes whenever the set does."""

    name = "store"

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        self.templates: dict[str, Template] = {}
        self.version = 0
        self.up = 0.0  # 1 when the last read of the backend succeeded

    def install(self, templates: dict[str, Template], bad: Mapping[Any, tuple[str, str, str]]) -> None:
        """A fresh, complete view of the store."""
        self.errors.sync(self.name, bad)
        self.up = 1.0
        if templates != self.templates:
            self.templates = templates
            self.version += 1
            log.info("autodiscovery: %s store now has templates for %s", self.name,
                     ", ".join(sorted(templates)) or "no image")

    async def run(self) -> None:
        """Follow the backend forever."""
        raise NotImplementedError


def from_layout(kv: Mapping[str, str], root: str, source: str) -> tuple[dict[str, Template], dict]:
    """`<root><image>/{check_names,init_configs,instances}` values -> templates and errors."""
    by_image: dict[str, dict[str, str]] = {}
    for key, value in kv.items():
        image, _, part = key[len(root):].partition("/") if key.startswith(root) else ("", "", "")
        if image and part in _PARTS:
            by_image.setdefault(image, {})[part] = value
    templates: dict[str, Template] = {}
    bad: dict[Any, tuple[str, str, str]] = {}
    for image, parts in sorted(by_image.items()):
        if "instances" not in parts:
            continue  # being written key by key: not a template yet
        try:
            docs = {p: loads(v) for p, v in parts.items()}
            for part, doc in docs.items():
                if not isinstance(doc, list):
                    raise TemplateError(f"{part} must be a JSON list")
            if "check_names" in docs and len(docs["check_names"]) != len(docs["instances"]):
                raise TemplateError("check_names and instances differ in length")
            templates[image] = parse(docs["instances"])
        except TemplateError as exc:
            bad[image] = (source, json.dumps(parts, sort_keys=True),
                          f"{source} template {root}{image}/ rejected: {exc}")
    return templates, bad


class FileStore(Store):
    """A file, or a directory of files (a mounted ConfigMap), polled by mtime."""

    name = "file"

    def __init__(self, errors: ErrorLog, path: str, interval: float) -> None:
        super().__init__(errors)
        self.path = Path(path)
        self.interval = interval
        self._files: dict[Path, tuple[tuple, dict[str, Template], dict]] = {}
        self._missing_logged = False

    def _paths(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if not p.name.startswith(".") and p.is_file()
                          and p.suffix in (".yaml", ".yml", ".json"))
        return [self.path] if self.path.is_file() else []

    def poll(self) -> None:
        """Re-read what changed (synchronous: a few small local files)."""
        paths = self._paths()
        if not paths and not self._missing_logged:
            log.info("autodiscovery: no template file at %s", self.path)
            self._missing_logged = True
        files = {}
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            old = self._files.get(p)
            files[p] = old if old is not None and old[0] == stamp else (stamp, *self._read(p, old))
        self._files = files
        templates: dict[str, Template] = {}
        bad: dict[Any, tuple[str, str, str]] = {}
        for _, (_, found, errs) in files.items():
            for image, tmpl in found.items():
                templates.setdefault(image, tmpl)  # first file (sorted by name) wins
            bad.update(errs)
        self.install(templates, bad)

    def _read(self, path: Path, old: tuple | None) -> tuple[dict[str, Template], dict]:
        try:
            text = path.read_text()
            doc = loads(text) if text.strip() else {}
            if not isinstance(doc, Mapping):
                raise TemplateError("must be a mapping of image name to template")
        except (OSError, UnicodeDecodeError, TemplateError) as exc:
            # Keep the file's last good templates: a half-written or broken edit must not
            # stop every target of every image in it.
            found = old[1] if old is not None else {}
            return found, {str(path): ("file", str(exc), f"template file {path} rejected: {exc}")}
        found, bad = {}, {}
        for image, item in doc.items():
            try:
                found[str(image)] = parse(item)
            except TemplateError as exc:
                bad[f"{path}:{image}"] = ("file", json.dumps(item, sort_keys=True, default=str),
                                          f"template file {path}, image {image!r} rejected: {exc}")
        return found, bad

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)


class _Remote(Store):
    """A key-value backend with several endpoints, tried in turn, with backoff."""

    def __init__(self, errors: ErrorLog, deps: Deps, endpoints: Sequence[Endpoint], prefix: str) -> None:
        super().__init__(errors)
        self.deps = deps
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.root = prefix.rstrip("/") + "/check_configs/"
        self.kv: dict[str, str] = {}
        self.backoff = (0.5, 30.0)

    async def run(self) -> None:
        delay, turn = self.backoff[0], 0
        while True:
            ep = self.endpoints[turn % len(self.endpoints)]
            try:
                await self.follow(ep, self.deps.upstream(ep, max_bytes=16 << 20))
                delay = self.backoff[0]
                await asyncio.sleep(delay / 5)  # a watch that keeps ending must not spin
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last good templates; try the next endpoint
                self.up = 0.0
                log.warning("autodiscovery: %s store at %s: %s; retrying in %.1fs", self.name, ep.url,
                            exc or type(exc).__name__, delay)
                turn += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    async def follow(self, ep: Endpoint, up: Upstream) -> None:
        """List, then watch until the watch must be re-established."""
        raise NotImplementedError

    def reload(self) -> None:
        self.install(*from_layout(self.kv, self.root, self.name))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode("utf-8", "replace")


def prefix_end(key: bytes) -> bytes:
    """The etcd v3 range_end that selects every key starting with `key`."""
    raw = bytearray(key)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return bytes(raw)


class EtcdV3Store(_Remote):
    """etcd v3 through the JSON gateway: range, then a watch stream from the next revision."""

    name = "etcd"
    max_watch = 600.0  # re-list now and then: a silently dead stream cannot go unnoticed for long

    async def follow(self, ep: Endpoint, up: Upstream) -> None:
        span = {"key": _b64(self.root),
                "range_end": base64.b64encode(prefix_end(self.root.encode())).decode()}
        resp = await up.request("/v3/kv/range", method="POST", json=span, accept="application/json")
        doc = json.loads(resp.body)
        self.kv = {_unb64(kv["key"]): _unb64(kv.get("value")) for kv in doc.get("kvs") or []}
        revision = int(doc["header"]["revision"])
        self.reload()
        watch = {"create_request": {**span, "start_revision": str(revision + 1), "progress_notify": True}}
        try:
            async with asyncio.timeout(self.max_watch):
                async for msg in stream(self.deps, ep, "/v3/watch", watch):
                    result = msg.get("result") or {}
                    if "error" in msg or result.get("canceled") or int(result.get("compact_revision") or 0):
                        return  # compacted or cancelled: list again
                    for ev in result.get("events") or []:
                        key = _unb64(ev["kv"]["key"])
                        if ev.get("type", "PUT") == "DELETE":  # the gateway omits PUT (enum 0)
                            self.kv.pop(key, None)
                        else:
                            self.kv[key] = _unb64(ev["kv"].get("value"))
                    if result.get("events"):
                        self.reload()
        except TimeoutError:
            return


class EtcdV2Store(_Remote):
    """etcd v2 keys API (legacy clusters, `--enable-v2`): recursive get, then long polls."""

    name = "etcd_v2"
    poll = 25.0  # a long poll with no change is re-issued (below the shared session's read timeout)

    async def follow(self, ep: Endpoint, up: Upstream) -> None:
        base = "/v2/keys" + quote("/" + self.root.strip("/"))
        resp = await up.request(base + "?recursive=true", accept="application/json", ok_statuses=(404,))
        if "X-Etcd-Index" not in resp.headers:
            raise NoDataError(f"{ep.url}: no etcd v2 keys API (etcd needs --enable-v2; removed in 3.6)")
        index = int(resp.headers["X-Etcd-Index"])
        self.kv = {}
        if resp.status == 200:
            self._walk(json.loads(resp.body).get("node") or {})
        self.reload()
        while True:
            try:
                async with asyncio.timeout(self.poll):
                    resp = await up.request(f"{base}?wait=true&recursive=true&waitIndex={index + 1}",
                                            accept="application/json", ok_statuses=(400, 404))
            except TimeoutError:
                continue
            # A change under the prefix, or errorCode 401 (history cleared past our index):
            # either way, list again (one consistent read).
            return

    def _walk(self, node: Mapping[str, Any]) -> None:
        if node.get("dir"):
            for child in node.get("nodes") or []:
                self._walk(child)
        elif "key" in node:
            self.kv[node["key"]] = str(node.get("value", ""))


class ConsulStore(_Remote):
    """Consul KV: recursive get, then blocking queries on `X-Consul-Index`."""

    name = "consul"
    wait = 20.0        # seconds a blocking query may wait (Consul adds up to wait/16 of jitter)
    min_gap = 0.1      # rate limit, as Consul's blocking-query guidance asks

    def __init__(self, errors: ErrorLog, deps: Deps, endpoints: Sequence[Endpoint], prefix: str) -> None:
        super().__init__(errors, deps, endpoints, prefix.lstrip("/"))  # Consul keys have no leading /

    async def follow(self, ep: Endpoint, up: Upstream) -> None:
        path = "/v1/kv/" + quote(self.root) + "?recurse=true"
        index = 0
        while True:
            query = f"&index={index}&wait={self.wait:g}s" if index else ""
            async with asyncio.timeout(self.wait * 1.25 + 5):
                resp = await up.request(path + query, accept="application/json", ok_statuses=(404,))
            if "X-Consul-Index" not in resp.headers:
                raise NoDataError(f"{ep.url}: not a Consul KV answer (no X-Consul-Index)")
            new = int(resp.headers["X-Consul-Index"])
            if new < index:
                index = 0  # the index went backwards (a snapshot restore): start over
                continue
            if new != index or not query:
                self.kv = {e["Key"]: _unb64(e.get("Value")) for e in
                           (json.loads(resp.body) if resp.status == 200 else [])}
                self.reload()
            index = max(new, 1)  # never 0 after a response: 0 would not block
            await asyncio.sleep(self.min_gap)


async def stream(deps: Deps, ep: Endpoint, path: str, body: Any) -> AsyncIterator[dict]:
    """POST `body` and yield each newline-delimited JSON message of the streamed answer."""
    if deps.session is None:
        raise RuntimeError("offline: no upstream access")
    kwargs: dict[str, Any] = {}
    if ep.url.startswith("https://"):
        kwargs["ssl"] = TLS(ep.ca_file, ep.cert_file, ep.key_file, ep.server_name,
                            ep.insecure_skip_verify).context()
        if ep.server_name:
            kwargs["server_hostname"] = ep.server_name
    headers = TokenSource(ep.token_file).headers() if ep.token_file else {}
    # No read timeout: a quiet watch is normal (progress notifications and max_watch bound it).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
    async with deps.session.post(ep.url.rstrip("/") + path, json=body, headers=headers,
                                 timeout=timeout, **kwargs) as resp:
        if resp.status != 200:
            raise UpstreamError(ep.url + path, resp.status)
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                if line.strip():
                    yield json.loads(line)
            if len(buf) > 16 << 20:
                raise ValueError(f"{ep.url}{path}: message over 16 MiB")
