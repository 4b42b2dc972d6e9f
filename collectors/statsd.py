"""StatsD / DogStatsD listener on the node agent: pushed application metrics, joined to the
sender's pod.

Applications send to the node's UDP port (hostPort 8125) or to a Unix datagram socket shared
through a hostPath. Every line is parsed strictly (`exporter.statsd.protocol`), mapped
(statsd_exporter's mapping YAML, `mapping` / `mapping_config`), joined to the pod that sent it
(`exporter.statsd.origin`: entity id tag, container id, Unix peer credentials, source IP) and
aggregated (`exporter.statsd.store`) within the budgets. Counters become `<name>_total`, timers
(`ms`, converted to seconds), histograms and distributions become histograms with per-name
buckets, sets become gauges of distinct members, events and service checks become counters.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any
from collections.abc import Sequence

from exporter import NAMESPACE
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.registry import Option, register
from exporter.transform.result import BadLine, Result

# The StatsD engine (exporter.statsd) is imported when this collector is built or its options
# are checked, not when the collector registers: a node agent without StatsD does not hold it.

log = logging.getLogger("kubebridge.statsd")
_SYNC_WAIT = 30.0  # seconds the listener waits for the pod index before reading anyway
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^:\s]*):[0-9]{1,5}$")


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_statsd_{name}", kind, help, labels)


PACKETS = _m("packets_total", "counter", "Datagrams received, by listener.", "listener")
SAMPLES = _m("samples_total", "counter", "Samples applied, by StatsD type (event and service_check "
             "for those).", "type")
PARSE_ERRORS = _m("parse_errors_total", "counter", "Lines rejected as malformed (nothing of them "
                  "applied), by reason.", "reason")
REFUSED = _m("refused_total", "counter", "Lines refused by a budget (series_limit, pod_series_limit, "
             "tags_limit, label_value_limit, set_members_limit), a type conflict or a mapping's drop "
             "action, by reason.", "reason")
JOIN_MISSES = _m("join_misses_total", "counter", "Samples whose sender matched no pod of this node "
                 "(exposed without pod labels).")
DROPS = _m("socket_drops_total", "counter", "Datagrams the kernel dropped for a full receive buffer "
           "(from /proc/net/udp).", "listener")
CONFLICTS = _m("origin_conflicts_total", "counter", "Lines whose entity id tag names another pod than "
               "the sender's address or pid does (the tag wins: a pod can claim another's UID).")
SERIES = _m("series", "gauge", "Live StatsD series.")
EXPIRED = _m("series_expired_total", "counter", "Series removed after their TTL without samples.")
SELF = (PACKETS, SAMPLES, PARSE_ERRORS, REFUSED, JOIN_MISSES, CONFLICTS, DROPS, SERIES, EXPIRED)


def _address(value: Any) -> str | None:
    return None if value == "" or _ADDRESS.match(value) else "must be HOST:PORT (or empty for no UDP)"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be positive"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _mapping(value: Any) -> str | None:
    from exporter.statsd.mapping import Mapper, MappingError
    try:
        Mapper(value)
    except MappingError as exc:
        return str(exc)
    return None


def _mapping_file(value: Any) -> str | None:
    from exporter.statsd.mapping import Mapper, MappingError
    try:
        Mapper.load(value)
    except MappingError as exc:
        return str(exc)
    return None


def _buckets(value: Any) -> str | None:
    from exporter.statsd.mapping import MappingError, check_buckets
    if not isinstance(value, dict):
        return "must map a metric name (or `*`, the default) to a list of bucket bounds"
    try:
        for name, bounds in value.items():
            check_buckets(bounds, str(name))
    except MappingError as exc:
        return str(exc)
    return None


OPTIONS = {
    "udp_address": Option("0.0.0.0:8125", _address, "UDP HOST:PORT to listen on (empty: no UDP)."),
    "unix_socket": Option("", help="Unix datagram socket path, e.g. on a hostPath shared with pods "
                          "(empty: none)."),
    "unix_socket_mode": Option(0o666, help="Permissions of the Unix socket file."),
    "receive_buffer": Option(8 << 20, _positive, "SO_RCVBUF bytes asked for (the kernel caps it at "
                             "net.core.rmem_max)."),
    "mapping": Option({}, _mapping, "statsd_exporter mapping document, inline ({defaults, mappings})."),
    "mapping_config": Option("", _mapping_file, "statsd_exporter mapping file (its rules come before "
                             "the inline ones)."),
    "tag_allowlist": Option(("*",), help="Tag keys that become labels (`*`: all)."),
    "buckets": Option({}, _buckets, "Histogram buckets by Prometheus name; `*` sets the default "
                      "(client_golang's default buckets otherwise). A mapping's buckets come next."),
    "timer_seconds": Option(True, help="Timers (`ms`) are observed in seconds, as statsd_exporter does."),
    "ttl": Option(600.0, _not_negative, "Seconds without samples after which a series expires (0: never)."),
    "max_series": Option(100_000, _positive, "Live series in all (new ones are refused beyond)."),
    "max_series_per_pod": Option(10_000, _positive, "Live series per pod (unjoined ones count as one pod)."),
    "max_tags": Option(32, _positive, "Tags per line (a line with more is refused, counted)."),
    "max_label_value_length": Option(256, _positive, "Label value length (longer: the line is refused)."),
    "max_set_members": Option(10_000, _positive, "Distinct members remembered per set series."),
    "set_window": Option(60.0, _positive, "Seconds a set member counts after it was last seen."),
}


@register("statsd", default_enabled=False, scope="node", options=OPTIONS)
class StatsdCollector:
    """StatsD / DogStatsD metrics pushed by the node's pods, joined to the sending pod."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        from exporter.statsd.ingest import Ingest, Policy
        from exporter.statsd.listener import Listener, Sockets
        from exporter.statsd.mapping import DEFAULT_BUCKETS, Mapper
        from exporter.statsd.origin import Resolver
        from exporter.statsd.store import Limits, Store
        o = cfg.options
        self.deps, self.cfg = deps, cfg
        self.store = Store(Limits(o["max_series"], o["max_series_per_pod"], o["max_set_members"],
                                  o["set_window"]))
        mapper = Mapper.load(o["mapping_config"], o["mapping"])
        buckets = {k: tuple(float(b) for b in v) for k, v in o["buckets"].items()}
        policy = Policy(tuple(o["tag_allowlist"]), o["max_tags"], o["max_label_value_length"], o["ttl"],
                        buckets.pop("*", DEFAULT_BUCKETS), buckets, 0.001 if o["timer_seconds"] else 1.0)
        self.ingest = Ingest(self.store, mapper, Resolver(deps.index), policy)
        self.listener = Listener(self.ingest, Sockets(o["udp_address"], o["unix_socket"],
                                                      o["unix_socket_mode"], o["receive_buffer"]))
        self.error: Exception | None = None
        self.ready = asyncio.Event()
        self.stats: dict[str, float] = {}

    async def run(self) -> None:
        """Listen until cancelled (the sockets are closed however it ends)."""
        try:
            try:
                self.listener.bind()
                index = self.deps.index
                if index is not None:  # join from the first datagram: they queue meanwhile
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(index.synced.wait(), _SYNC_WAIT)
                self.listener.receive()
            except OSError as exc:
                self.error = exc
                log.error("statsd: cannot listen (%s)", exc)
                raise
            finally:
                self.ready.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self.listener.stop)

    async def collect(self, budget: float) -> Sequence[Family]:
        if self.error is not None:
            raise self.error
        drops = await asyncio.to_thread(self.listener.udp_drops)
        return self._families(drops).families

    def process(self, *payloads: bytes) -> Result:
        """Offline (`kubebridge transform --source statsd`): each payload is StatsD lines, as
        datagrams would carry them, from an unknown sender (joined only by an entity id or
        container id tag, with `--pods`). Handy to try a mapping file on recorded traffic."""
        self.ingest.rejected = []
        with self.store.lock:
            self.ingest.refresh()
            now = time.monotonic()
            for p in payloads:
                self.ingest.datagram(p, None, now)
        res = self._families(None)
        for line, why in self.ingest.rejected:
            res.errors.append(BadLine(line, why))
        res.malformed = sum(self.ingest.stats.parse_errors.values())
        res.series_in = sum(self.ingest.stats.samples.values()) + res.malformed
        return res

    def _families(self, drops: int | None) -> Result:
        with self.store.lock:
            now = time.monotonic()
            self.store.expire(now)
        families, out, dropped = self.store.encode(self.deps.labels(self.cfg), self.deps.index, now)
        with self.store.lock:
            st = self.ingest.stats
            snap = (dict(st.packets), dict(st.samples), dict(st.parse_errors), dict(st.refused),
                    st.join_misses, len(self.store), self.store.expired, self.ingest.resolver.conflicts)
        packets, samples, errors, refused, misses, live, expired, conflicts = snap
        b = Builder(SELF, self.deps.labels(self.cfg))
        for name, n in sorted(packets.items()):
            b.add(PACKETS, n, {"listener": name})
        for kind, n in sorted(samples.items()):
            b.add(SAMPLES, n, {"type": kind})
        for reason, n in sorted(errors.items()):
            b.add(PARSE_ERRORS, n, {"reason": reason})
        for reason, n in sorted(refused.items()):
            b.add(REFUSED, n, {"reason": reason})
        b.add(JOIN_MISSES, misses)
        b.add(CONFLICTS, conflicts)
        if drops is not None:
            b.add(DROPS, drops, {"listener": "udp"})
        b.add(SERIES, live)
        b.add(EXPIRED, expired)
        self.stats = {"series_out": out, "dropped": dropped}
        return Result(families=[*b.families(), *families], series_out=out, dropped=dropped,
                      join_misses=misses)
