"""Which shard owns a node, and which shard this process is.

Contract: `shard_of(node, total)` is a pure function of the node's name and the shard count:
the first 8 bytes of sha256(name, UTF-8) read big-endian, modulo `total`. Every replica
computes the same answer without talking to the others, so with every replica running with
the same `total`, each node is collected by exactly one of them. (Changing `total` moves
about 1 - 1/total of the nodes: the replicas of a StatefulSet restart with the new count.)
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from exporter.errors import ConfigError

_ORDINAL = re.compile(r"-(0|[1-9][0-9]{0,8})$")


def shard_of(node: str, total: int) -> int:
    """The shard (0 .. total-1) that owns `node`."""
    if total < 1:
        raise ValueError("total must be >= 1")
    digest = hashlib.sha256(node.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % total


def ordinal(pod_name: str) -> int | None:
    """A StatefulSet pod's ordinal: the number after the last `-` (`kubebridge-shard-2` -> 2),
    or None when the name has none."""
    m = _ORDINAL.search(pod_name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ShardSpec:
    """This process' shard: number `shard` of `total`."""

    shard: int = 0
    total: int = 1

    def owns(self, node: str) -> bool:
        """Whether this shard collects `node`."""
        return self.total == 1 or shard_of(node, self.total) == self.shard

    def __str__(self) -> str:
        return f"{self.shard}/{self.total}"


def resolve(shard: int, total: int, pod_name: str) -> ShardSpec:
    """The shard from the configuration: `shard` if set (>= 0), else the StatefulSet ordinal in
    `pod_name` (the downward API's metadata.name), else 0 when there is one shard."""
    if total < 1:
        raise ConfigError("cluster_collector.total_shards", "must be >= 1")
    if shard < 0:
        got = ordinal(pod_name) if pod_name else None
        if got is None:
            if total == 1:
                return ShardSpec(0, 1)
            raise ConfigError("cluster_collector.shard",
                              f"not set and the pod name {pod_name!r} ends in no StatefulSet ordinal "
                              "(-<n>): set --shard or run as a StatefulSet with POD_NAME")
        shard = got
    if shard >= total:
        raise ConfigError("cluster_collector.shard", f"{shard} is not below total_shards ({total})")
    return ShardSpec(shard, total)


def rendezvous_owner(node: str, members: frozenset[str] | set[str]) -> str:
    """The member that owns `node` by rendezvous (highest random weight) hashing: the one with
    the largest first 8 bytes of sha256(member, NUL, node). "" when there are no members.
    A member joining takes about 1/(M+1) of the nodes, one leaving hands only its own nodes
    to the others: the other nodes stay where they were."""
    best, owner = -1, ""
    for m in members:
        digest = hashlib.sha256(f"{m}\0{node}".encode("utf-8", "surrogatepass")).digest()
        w = int.from_bytes(digest[:8], "big")
        if w > best or (w == best and m < owner):
            best, owner = w, m
    return owner


class ReadyPeers:
    """Membership from the collector's own Ready pods (`cluster_collector.membership:
    ready_pods`): the members are the pods the peer watch reports Ready and not terminating;
    this process owns the nodes `rendezvous_owner` gives its own pod. A pod that is not (yet)
    Ready itself owns nothing, so a starting or terminating replica never serves a node that
    another one still serves."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.members: frozenset[str] = frozenset()

    def owns(self, node: str) -> bool:
        return self.own in self.members and rendezvous_owner(node, self.members) == self.own

    @property
    def shard(self) -> int:
        """This pod's rank among the members (-1 while it is not one)."""
        return sorted(self.members).index(self.own) if self.own in self.members else -1

    @property
    def total(self) -> int:
        return len(self.members)

    def __str__(self) -> str:
        return f"{self.own} of {len(self.members)} ready"
