"""etcd members: each member's `/metrics` (passthrough), health, leadership and a cluster view.

Option `members`: one endpoint per etcd member (url, CA, client certificate and key,
server_name, insecure_skip_verify), each with its own TLS settings. The `member` label is the
host:port of the member's URL (`exporter.etcd.member_name`): it comes from the configuration, so a
member keeps the same series whether it answers or not. The member's etcd id is exposed, in
hex as etcd prints ids (`etcd_server_id{server_id}`, v2 stats), by `kubebridge_etcd_member_info`.

Every member is fetched concurrently: `GET /metrics`, `GET /health` and
`POST /v3/maintenance/status {}`. A member that fails any of them reads
`kubebridge_etcd_member_up 0` and contributes nothing else. The other members are not affected.
The collector raises (the source is down) only when every member fails. A member whose status
endpoint answers 404 is still up but has no status series. This happens with a
`--listen-metrics-urls` port, which serves only /metrics and /health.

Leadership is a gauge, `kubebridge_etcd_member_is_leader{member}`, and never a label on the
passthrough series. A `leader="true|false"` label would change value at every election. That
would end every series of two members and start new ones, which means churn and broken
`rate()`s. Passthrough series only get `member`, so the families of all members merge into one.

`kubebridge_etcd_cluster_has_leader` is 1 when one leader id is named by a quorum (more than
half) of the configured members, and each of those members also answers /health true. The
view of a single member is not enough, because after quorum loss a stale leader still sees
itself as leader. Configure every member to get a true cluster view. The series is absent
when no member reported status.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

from exporter import NAMESPACE, etcd as _etcd
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import NoDataError
from exporter.expfmt import Family
from exporter.families import Builder, Metric
from exporter.merge import merge
from exporter.passthrough import SerialTransform, check_payload, options_table, take_body
from exporter.podindex import PodIndex
from exporter.transform import NOTHING, Changes, Pairs, Result, Transformer
from exporter.pods import PodMeta
from exporter.registry import register
from exporter.upstream import Upstream, is_openmetrics


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(f"{NAMESPACE}_etcd_{name}", kind, help, labels)


UP = _m("member_up", "gauge", "1 if the member answered /metrics, /health and status, else 0.", "member")
HEALTHY = _m("member_healthy", "gauge", "1 if the member's /health says true (false on quorum loss "
             "or an active alarm).", "member")
IS_LEADER = _m("member_is_leader", "gauge", "1 if the member's status names the member itself as "
               "the leader.", "member")
DB_SIZE = _m("db_size_bytes", "gauge", "Size of the member's backend database file.", "member")
RAFT_TERM = _m("raft_term", "gauge", "The member's current raft term.", "member")
INFO = _m("member_info", "gauge", "The member's etcd id (hex) and version.", "member", "member_id",
          "version")
HAS_LEADER = _m("cluster_has_leader", "gauge", "1 if a quorum of the configured members names one "
                "leader and answers /health true, else 0.")
MEMBERS_UP = _m("cluster_members_up", "gauge", "Configured members that answered.")
TABLE = (UP, HEALTHY, IS_LEADER, DB_SIZE, RAFT_TERM, INFO, HAS_LEADER, MEMBERS_UP)


@dataclass(frozen=True)
class Status:
    """What kubebridge reads from `/v3/maintenance/status`. etcd writes its int64 values as
    strings, and leaves out `leader` when the member has no leader."""

    member_id: int
    leader: int  # 0: no leader
    db_size: float
    raft_term: float
    version: str


def parse_status(doc: dict[str, Any]) -> Status:
    """A status document -> Status (ValueError on a malformed one)."""
    header = doc.get("header") or {}
    return Status(int(str(header.get("member_id", 0))), int(str(doc.get("leader", 0))),
                  float(str(doc.get("dbSize", 0))), float(str(doc.get("raftTerm", 0))),
                  str(doc.get("version", "")))


@dataclass
class Member:
    """One member's answers."""

    passthrough: Result
    size: int
    healthy: bool
    status: Status | None


class MemberHook:
    """Adds `member` to every passthrough series. An upstream `member` label is kept as
    `exported_member`, as Prometheus does with clashing target labels."""

    def __init__(self, member: str) -> None:
        self.member = member

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        return NOTHING

    def variant(self, family: str) -> Any:
        return None

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        return [("exported_member" if k == "member" else k, v) for k, v in pairs] + [("member", self.member)]


def cluster_has_leader(views: Sequence[tuple[Status, bool]], configured: int) -> bool:
    """Whether one leader is named by more than half of `configured` members, all healthy."""
    votes = Counter(s.leader for s, healthy in views if s.leader and healthy)
    return bool(votes) and max(votes.values()) > configured // 2


def add_member(b: Builder, name: str, m: Member) -> None:
    """The derived series of one member that answered."""
    label = {"member": name}
    b.add(HEALTHY, float(m.healthy), label)
    s = m.status
    if s is None:
        return
    b.add(IS_LEADER, float(s.leader != 0 and s.leader == s.member_id), label)
    b.add(DB_SIZE, s.db_size, label)
    b.add(RAFT_TERM, s.raft_term, label)
    b.add(INFO, 1.0, {**label, "member_id": format(s.member_id, "x"), "version": s.version})


@register("etcd", default_enabled=False, scope="cluster", options=options_table(members=_etcd.MEMBERS))
class EtcdCollector:
    """etcd members: /metrics passthrough, health, leadership and a cluster view."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        self.ups = _etcd.upstreams(deps, cfg)
        # One transformer per member: its series cache is keyed by upstream lines, which
        # members share, while the output (the `member` label) differs.
        self.transformers = {name: SerialTransform(self._transformer(name)) for name in self.ups}

    def _transformer(self, member: str) -> Transformer:
        return _etcd.transformer(self.deps, self.cfg, MemberHook(member))

    async def collect(self, budget: float) -> Sequence[Family]:
        """Fetch every member; raise only if all of them failed."""
        timeout = _etcd.member_timeout(self.cfg, budget)
        outcomes = await _etcd.each_member(self.ups, self._member, timeout)
        _etcd.raise_if_all_failed(outcomes)
        alive: list[tuple[str, Member]] = [(n, r) for n, r in outcomes if not _etcd.failed(r)]
        b = Builder(TABLE, self.deps.labels(self.cfg, node=False))
        for name, result in outcomes:
            b.add(UP, 0.0 if _etcd.failed(result) else 1.0, {"member": name})
        for name, m in alive:
            add_member(b, name, m)
        views = [(m.status, m.healthy) for _, m in alive if m.status is not None]
        if views:
            b.add(HAS_LEADER, float(cluster_has_leader(views, len(outcomes))))
        b.add(MEMBERS_UP, float(len(alive)))
        derived = b.result()
        self.stats = _etcd.report([m.passthrough for _, m in alive], derived,
                                  sum(m.size for _, m in alive))
        families, _ = merge([*((n, m.passthrough.families) for n, m in alive),
                             ("derived", derived.families)])
        return families

    async def _member(self, name: str, up: Upstream) -> Member:
        async with asyncio.TaskGroup() as tg:  # one failure cancels the member's other requests
            metrics = tg.create_task(up.request("/metrics"))
            healthy = tg.create_task(_etcd.health(up))
            status = tg.create_task(self._status(up))
        resp = metrics.result()
        body = take_body(resp)
        res = await self.transformers[name].run(body.payload, is_openmetrics(resp.content_type))
        check_payload(body.blank, res)  # an empty or garbage /metrics: the member is down (parse)
        return Member(res, body.size, healthy.result(), status.result())

    @staticmethod
    async def _status(up: Upstream) -> Status | None:
        try:
            resp = await up.request("/v3/maintenance/status", method="POST", accept=_etcd.JSON, json={})
        except NoDataError:
            return None  # a metrics-only port: a member all the same (see the module docstring)
        return parse_status(_etcd.json_object(resp.body, "/v3/maintenance/status"))

    def process(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Offline (`kubebridge transform --source etcd [--node M]`): one member's /metrics as
        collect() passes it through, member = --node or "etcd". Health and status need the live
        member, so the kubebridge_etcd_* series are not produced offline."""
        res = self._transformer(self.deps.config.node_name or "etcd").transform(payload, openmetrics)
        self.stats = _etcd.report([res], Result([]), len(payload))
        return res
