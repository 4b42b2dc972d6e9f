"""Docker Engine API (optional, default off): daemon, containers by state, stats, events.

Docker is legacy on Kubernetes since dockershim's removal in 1.24: this source is for
cri-dockerd and plain Docker nodes. It talks to the node's socket through aiodocker; the client
is created on first use and closed when the background loop stops (or by `close()`).
- A socket that does not exist means "no Docker here" (NoDataError). dockerd removes its socket
  when it stops, so once the daemon has answered, a missing socket is an outage (down).
- Stats: without `one-shot` (API 1.41+) a non-streamed stats call waits for two samples, and
  aiodocker's stats timeout is infinite; so each running container gets one bounded call
  under a semaphore, and a container that fails is skipped and counted, not fatal.
- Events: `run()` follows `/events` from the moment it starts (earlier history is not counted)
  and resumes after a reconnect from the last event seen, with exponential backoff.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping, Sequence

import aiohttp

from collectors import _docker as dp
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import NoDataError, describe
from exporter.expfmt import Family
from exporter.families import Builder, PodLabels
from exporter.transform import Result
from exporter.registry import Option, register
from exporter.upstream import UpstreamError

if TYPE_CHECKING:  # imported with the first client: a node without Docker never loads it
    import aiodocker

log = logging.getLogger("kubebridge.docker")
OPTIONS = {
    "socket": Option("unix:///var/run/docker.sock", dp.check_unix, "The Docker Engine API socket."),
    "max_concurrency": Option(8, dp.check_positive, "Containers whose stats are fetched at once."),
    "stats_timeout": Option(5.0, dp.check_positive, "Seconds allowed for one container's stats."),
}


@register("docker", default_enabled=False, scope="node", options=OPTIONS)
class DockerCollector:
    """Docker daemon, containers by state, per-container stats and events (aiodocker)."""

    backoff_min = 0.5   # seconds before the first reconnect of the events stream
    backoff_max = 30.0

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.url = cfg.options["socket"]
        self.path = Path(self.url.removeprefix("unix://"))
        self.stats_timeout = float(cfg.options["stats_timeout"])
        self.limit = asyncio.Semaphore(cfg.options["max_concurrency"])
        self.labels = deps.labels(cfg, node=False)
        self.events: Counter[tuple[str, str]] | None = None  # None until subscribed once
        self.subscribed = asyncio.Event()  # set while the events stream is open
        self.stats: dict[str, float] = {}
        self.docker: aiodocker.Docker | None = None  # created on first use
        self._seen = False
        self._since = 0  # ns: where the events stream (re)starts; past events are not counted

    def _client(self) -> aiodocker.Docker:
        if not self.path.exists():
            if self._seen:
                raise ConnectionError(f"{self.path}: Docker socket gone (daemon stopped?)")
            raise NoDataError(f"{self.path}: no Docker here")
        if self.docker is None:
            import aiodocker

            # No total/read timeout: scrapes run under the runner's budget, the stream is endless.
            self.docker = aiodocker.Docker(self.url, timeout=aiohttp.ClientTimeout(total=None, connect=5))
        return self.docker

    async def close(self) -> None:
        """Close the aiodocker client (it is re-created on next use)."""
        if self.docker is not None:
            docker, self.docker = self.docker, None
            await docker.close()

    async def collect(self, budget: float) -> Sequence[Family]:
        """Daemon, containers and stats now; events as counted by `run()`."""
        docker = self._client()
        with dp.mapped(self.url):
            version = await docker.version()
            info = await docker.system.info()
            # Raw JSON (the list call wraps it in objects): the same input process() gets.
            containers = await docker._query_json("containers/json", params={"all": "1"})
        self._seen = True
        running = [c for c in containers if dp.state_of(c) == "running"]
        one_shot = dp.api_version(docker.api_version) >= (1, 41)
        got = await asyncio.gather(*(self._stats(docker, c, one_shot) for c in running),
                                   return_exceptions=True)
        for res in got:  # a lost daemon fails the collection, after every call has ended
            if isinstance(res, BaseException):
                raise res
        stats = {c["Id"]: st for c, st in zip(running, got)}
        return self._render(version, info, containers, stats, self.events)

    def process(self, *payloads: bytes) -> Result:
        """Offline: saved /version, /info, /containers/json, /containers/{id}/stats and /events
        answers, in any order (a stats answer gets its labels from the listing, by id)."""
        docs: dict[str, Any] = {}
        events: list[Mapping[str, Any]] = []
        stats: dict[str, Any] = {}
        for raw in payloads:
            kind, doc = dp.parse_payload(raw)
            if kind == "events":
                events += doc
            elif kind == "stats":
                stats[str(doc.get("id") or "")] = doc
            else:
                docs[kind] = doc
        counts = Counter(dp.event_key(ev) for ev in events) if events else None
        fams = self._render(docs.get("version"), docs.get("info"), docs.get("containers") or [],
                            stats or None, counts)
        n = sum(f.count() for f in fams)
        return Result(fams, series_in=n, series_out=n, join_misses=int(self.stats["join_misses"]))

    def _render(self, version: Any, info: Any, containers: list[Mapping[str, Any]],
                stats: Mapping[str, Any] | None, events: Counter[tuple[str, str]] | None) -> list[Family]:
        """The families for one set of answers; `stats` maps container id -> stats answer or
        the reason it could not be read (None: no stats asked for)."""
        b = Builder(dp.TABLE, self.labels)
        if version is not None or info is not None:
            b.add(dp.UP, 1)
            b.add(dp.INFO, 1, dp.info_labels(version, info))
        for (state, ns, image), n in sorted(dp.state_counts(containers).items()):
            b.add(dp.CONTAINERS, n, {"state": state, "namespace": ns, "image": image})
        misses = 0
        if stats is not None:
            os_type = str((info or {}).get("OSType") or (version or {}).get("Os") or "linux")
            by_id = {c.get("Id"): c for c in containers}
            failures: Counter[str] = Counter()
            for cid, st in stats.items():
                if isinstance(st, str):
                    failures[st] += 1
                    continue
                labels, missed = self._labels(by_id.get(cid) or {"Names": [st.get("name") or ""]})
                misses += missed
                for metric, value, extra in dp.stats_samples(st, os_type):
                    b.add(metric, value, PodLabels({**labels.own, **extra}, labels.joined))
            for reason in ("gone", "timeout", "error"):
                b.add(dp.STATS_FAILURES, failures[reason], {"reason": reason})
        if events is not None:
            for key in dp.ZERO_EVENTS:
                events.setdefault(key, 0)
            for (kind, action), n in sorted(events.items()):
                b.add(dp.EVENTS, n, {"type": kind, "action": action})
        self.stats = {"series_out": b.samples, "join_misses": misses}
        return b.families()

    async def _stats(self, docker: aiodocker.Docker, c: Mapping[str, Any], one_shot: bool) -> Any:
        params = {"stream": "0", "one-shot": "1"} if one_shot else {"stream": "0"}
        async with self.limit:
            try:
                async with asyncio.timeout(self.stats_timeout):
                    with dp.mapped(self.url):
                        # aiodocker's stats() has no one-shot parameter: the raw call does.
                        return await docker._query_json(f"containers/{c['Id']}/stats", params=params)
            except TimeoutError:
                return "timeout"
            except UpstreamError as exc:  # 404/409: stopped or removed since the listing
                return "gone" if exc.status in (404, 409) else "error"

    def _labels(self, c: Mapping[str, Any]) -> tuple[PodLabels, bool]:
        """A container's labels and its pod's join; True when the index lacks its pod."""
        name = dp.name_of(c)
        ns, pod, ctr, kind = dp.pod_of(name, c.get("Labels") or {})
        labels = {"name": name, "namespace": ns, "pod": pod, "container": ctr,
                  "image": dp.short_image(str(c.get("Image") or "")), "cgroup_kind": kind}
        index = self.deps.index
        if not (ns and pod) or index is None:
            return PodLabels(labels, []), False
        meta = index.get(ns, pod)
        if meta is None:
            index.request_refresh()
            return PodLabels(labels, []), True
        return PodLabels(labels, list(index.join_labels(meta))), False

    async def run(self) -> None:
        """Follow /events forever; reconnect with exponential backoff."""
        self._since = time.time_ns()  # "now": events before the exporter started are history
        delay = self.backoff_min
        try:
            while True:
                try:
                    await self._follow()
                    delay = self.backoff_min  # the stream ended cleanly (daemon stopping)
                except NoDataError as exc:
                    log.debug("docker events: %s", exc)
                # A background loop must outlive any failure (the runner only guards collect()).
                except Exception as exc:
                    log.warning("docker events stream failed (%s); retrying in %.1fs", describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            self.subscribed.clear()
            await self.close()

    async def _follow(self) -> None:
        """Count events from `_since` until the stream ends or breaks; `_since` follows the last
        event counted, so a reconnect neither loses (dockerd replays from its buffer) nor
        double counts."""
        docker = self._client()
        since = self._since
        params = {"since": f"{since // 10**9}.{since % 10**9:09d}"}
        stream_timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=None)
        with dp.mapped(self.url):
            async with docker._query("events", params=params, timeout=stream_timeout) as resp:
                self._seen = True
                if self.events is None:
                    self.events = Counter()
                self.subscribed.set()
                try:
                    async for line in resp.content:
                        ev = json.loads(line) if line.strip() else None
                        if isinstance(ev, dict) and dp.event_time(ev) >= self._since:
                            self.events[dp.event_key(ev)] += 1
                            self._since = dp.event_time(ev) + 1
                finally:
                    self.subscribed.clear()
