"""etcd's legacy v2 stats API: `/v2/stats/self`, `/v2/stats/store`, `/v2/stats/leader` per member.

The v2 API is off by default since etcd 3.4 (`--enable-v2` turns it on) and removed in 3.6. Its
stats paths then answer 404, which is reported as no data, not as down. That is why this
collector is disabled by default. `members` and the `member` label work as in the `etcd`
collector, which is also where a member's availability is reported (`kubebridge_etcd_member_up`).
A member that does not answer here adds no series.

`/v2/stats/leader` answers only on the leader. A follower answers 403
`{"message":"not current leader"}`: this is normal, and that member adds no follower series.
etcd reports the follower latencies in milliseconds, and kubebridge exposes them in seconds.

Why `kubebridge_etcd_v2_self_leader_confirmed` exists: the v2 `state` is never trustworthy on
its own. A leader moves to StateLeader when it is elected. It leaves that state only when it
receives an append from another leader. After quorum loss it steps down, but no new leader
contacts it, so it keeps saying StateLeader (seen with etcd 3.4: a leader left alone answers
/health 503 `{"health":"false"}` and a status without a leader, but `state` stays StateLeader).
So `self_is_leader` is exposed as reported, and `self_leader_confirmed` is 1 only when `state`
is StateLeader AND the same member's /health says true. A stale leader fails /health.
"""
from __future__ import annotations

import asyncio
from typing import Any
from collections.abc import Mapping, Sequence

from exporter import NAMESPACE, etcd as _etcd
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import NotPermittedError
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.transform import Result
from exporter.registry import register
from exporter.upstream import Response, Upstream

NOT_LEADER = "not current leader"


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_etcd_v2_{name}", kind, help, ("member", *labels))


IS_LEADER = _m("self_is_leader", "gauge", "1 if the member's v2 self stats say StateLeader, as "
               "reported: stays 1 after quorum loss (see self_leader_confirmed).")
CONFIRMED = _m("self_leader_confirmed", "gauge", "1 if the v2 state is StateLeader and the "
               "member's /health says true, else 0.")
INFO = _m("self_info", "gauge", "The member's v2 name and id (hex).", "name", "id")
START = _m("self_start_timestamp_seconds", "gauge", "When the member started (v2 startTime).")
LEADER_UPTIME = _m("self_leader_uptime_seconds", "gauge", "How long the member has seen its "
                   "current leader (v2 leaderInfo.uptime).")
LEADER_START = _m("self_leader_start_timestamp_seconds", "gauge", "Since when the member has "
                  "seen its current leader (v2 leaderInfo.startTime).")
# self stats copied as numbers: JSON key -> metric. The rates are only present under traffic.
SELF_NUMBERS = {
    "recvAppendRequestCnt": _m("self_recv_append_requests_total", "counter",
                               "Append requests the member received."),
    "sendAppendRequestCnt": _m("self_send_append_requests_total", "counter",
                               "Append requests the member sent."),
    "recvPkgRate": _m("self_recv_append_requests_per_second", "gauge",
                      "Rate of append requests received (etcd's recent-window estimate)."),
    "sendPkgRate": _m("self_send_append_requests_per_second", "gauge",
                      "Rate of append requests sent (etcd's recent-window estimate)."),
    "recvBandwidthRate": _m("self_recv_bandwidth_bytes_per_second", "gauge",
                            "Bytes per second received in append requests."),
    "sendBandwidthRate": _m("self_send_bandwidth_bytes_per_second", "gauge",
                            "Bytes per second sent in append requests."),
}
STORE_OPS = _m("store_operations_total", "counter", "v2 store operations by operation and "
               "result.", "operation", "result")
STORE_EXPIRES = _m("store_expires_total", "counter", "v2 store keys expired (expireCount).")
STORE_WATCHERS = _m("store_watchers", "gauge", "Active v2 store watchers.")
# store stats: JSON key -> (operation, result)
STORE_FIELDS = {
    f"{key}{result.title()}": (op, result)
    for key, op in (("gets", "get"), ("sets", "set"), ("delete", "delete"), ("update", "update"),
                    ("create", "create"), ("compareAndSwap", "compare_and_swap"),
                    ("compareAndDelete", "compare_and_delete"))
    for result in ("success", "fail")
}
LATENCY = _m("follower_latency_seconds", "gauge", "The leader's view of the round trip time "
             "to a follower, by statistic.", "follower", "stat")
APPEND = _m("follower_append_total", "counter", "Append requests from the leader to a follower "
            "by result.", "follower", "result")
# leader stats: latency JSON key -> `stat` label value
LATENCY_STATS = {"current": "current", "average": "average", "minimum": "minimum",
                 "maximum": "maximum", "standardDeviation": "stddev"}
TABLE = (IS_LEADER, CONFIRMED, INFO, START, LEADER_UPTIME, LEADER_START, *SELF_NUMBERS.values(),
         STORE_OPS, STORE_EXPIRES, STORE_WATCHERS, LATENCY, APPEND)


def leader_doc(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The followers of a /v2/stats/leader answer; none for a follower's 403 body."""
    if "followers" not in doc and doc.get("message") == NOT_LEADER:
        return {}
    followers = doc.get("followers")
    if not isinstance(followers, dict):
        raise ValueError("/v2/stats/leader: no followers object")
    return followers


def fill(b: Builder, member: str, me: Mapping[str, Any], store: Mapping[str, Any],
         leader: Mapping[str, Any], healthy: bool | None) -> None:
    """One member's three (four with /health) documents -> samples. Pure."""
    m = {"member": member}
    is_leader = me.get("state") == "StateLeader"
    b.add(IS_LEADER, float(is_leader), m)
    if healthy is not None:
        b.add(CONFIRMED, float(is_leader and healthy), m)
    b.add(INFO, 1.0, {**m, "name": str(me.get("name", "")), "id": str(me.get("id", ""))})
    if "startTime" in me:
        b.add(START, _etcd.timestamp(me["startTime"]), m)
    info = me.get("leaderInfo") or {}
    if "uptime" in info:
        b.add(LEADER_UPTIME, _etcd.go_duration(info["uptime"]), m)
    if "startTime" in info:
        b.add(LEADER_START, _etcd.timestamp(info["startTime"]), m)
    for key, metric in SELF_NUMBERS.items():
        if key in me:
            b.add(metric, _etcd.number(me[key]), m)
    for key, (op, result) in STORE_FIELDS.items():
        if key in store:
            b.add(STORE_OPS, _etcd.number(store[key]), {**m, "operation": op, "result": result})
    if "expireCount" in store:
        b.add(STORE_EXPIRES, _etcd.number(store["expireCount"]), m)
    if "watchers" in store:
        b.add(STORE_WATCHERS, _etcd.number(store["watchers"]), m)
    for follower, stats in sorted(leader_doc(leader).items()):
        f = {**m, "follower": follower}
        latency, counts = stats.get("latency") or {}, stats.get("counts") or {}
        for key, stat in LATENCY_STATS.items():
            if key in latency:  # etcd reports milliseconds
                b.add(LATENCY, _etcd.number(latency[key]) / 1000.0, {**f, "stat": stat})
        for result in ("success", "fail"):
            if result in counts:
                b.add(APPEND, _etcd.number(counts[result]), {**f, "result": result})


@register("etcd_v2", default_enabled=False, scope="cluster", options={"members": _etcd.MEMBERS})
class EtcdV2Collector:
    """etcd v2 stats (self, store, leader), cross-checked with /health."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        self.ups = _etcd.upstreams(deps, cfg)

    async def collect(self, budget: float) -> Sequence[Family]:
        """Fetch every member; raise only if all of them failed (404 everywhere: no data)."""
        outcomes = await _etcd.each_member(self.ups, self._member, _etcd.member_timeout(self.cfg, budget))
        _etcd.raise_if_all_failed(outcomes)
        b = Builder(TABLE, self.deps.labels(self.cfg, node=False))
        size = 0
        for name, docs in outcomes:
            if not _etcd.failed(docs):
                size += docs[-1]
                fill(b, name, *docs[:-1])
        return self._finish(b, size).families

    async def _member(self, name: str, up: Upstream) -> tuple[Any, ...]:
        get = self._get
        async with asyncio.TaskGroup() as tg:  # a 404 on any stats path fails the member
            me, store = tg.create_task(get(up, "self")), tg.create_task(get(up, "store"))
            leader = tg.create_task(get(up, "leader", (403,)))
            healthy = tg.create_task(_etcd.health(up))
        resps = (me.result(), store.result(), leader.result())
        return (_etcd.json_object(resps[0].body, "/v2/stats/self"),
                _etcd.json_object(resps[1].body, "/v2/stats/store"), self._leader(up, resps[2]),
                healthy.result(), sum(len(r.body) for r in resps))

    @staticmethod
    def _leader(up: Upstream, resp: Response) -> dict[str, Any]:
        if resp.status != 403:
            return _etcd.json_object(resp.body, "/v2/stats/leader")
        try:  # a follower's 403 is normal; any other 403 is a permission problem
            doc = _etcd.json_object(resp.body, "/v2/stats/leader")
        except ValueError:
            doc = {}
        if doc.get("message") != NOT_LEADER:
            raise NotPermittedError(f"{up.url('/v2/stats/leader')}: HTTP 403")
        return doc

    @staticmethod
    async def _get(up: Upstream, what: str, ok: tuple[int, ...] = ()) -> Response:
        return await up.request(f"/v2/stats/{what}", accept=_etcd.JSON, ok_statuses=ok)

    def process(self, *payloads: bytes) -> Result:
        """Offline (`kubebridge transform --source etcd-v2 self.json store.json leader.json
        [health.json]`). The leader document may be a follower's 403 body. Without a /health
        document, `self_leader_confirmed` cannot be known and is left out. member = --node or
        "etcd"."""
        if len(payloads) not in (3, 4):
            raise ValueError("expected self.json store.json leader.json [health.json]")
        names = ("self", "store", "leader", "health")
        docs = [_etcd.json_object(p, what) for p, what in zip(payloads, names)]
        healthy = docs[3].get("health") in _etcd.TRUE if len(docs) == 4 else None
        b = Builder(TABLE, self.deps.labels(self.cfg, node=False))
        fill(b, self.deps.config.node_name or "etcd", docs[0], docs[1], docs[2], healthy)
        return self._finish(b, sum(len(p) for p in payloads))

    def _finish(self, b: Builder, size: int) -> Result:
        res = b.result()
        self.stats = _etcd.report([], res, size)
        return res
