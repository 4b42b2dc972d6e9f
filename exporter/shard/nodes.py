"""The Node watch's view: every node's kubelet address and topology.

Each Node object (untrusted) becomes a `NodeTarget`: its name, its `NodeInfo` (region, zone,
role, allowlisted labels) and where its kubelet listens: the first `InternalIP` in
`status.addresses` (else `ExternalIP`, else `Hostname`), and
`status.daemonEndpoints.kubeletEndpoint.Port` (10250 when absent or invalid). A Node that is
not readable (no name, bad labels) is skipped and logged; one with no address is kept (the
proxy mode needs only the name) and its direct URL is reported as unusable by the agent.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from exporter.errors import ParseError
from exporter.nodeinfo import NodeInfo

log = logging.getLogger("kubebridge.shard.nodes")
KUBELET_PORT = 10250
ADDRESS_ORDER = ("InternalIP", "ExternalIP", "Hostname")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class NodeTarget:
    """One node as this shard collects it."""

    name: str
    info: NodeInfo
    address: str = ""        # host or IP of its kubelet ("" if the Node lists none usable)
    port: int = KUBELET_PORT

    def kubelet_url(self, template: str) -> str:
        """`template` with `$NODE_NAME` (path-escaped), `$NODE_IP` (brackets around IPv6) and
        `$KUBELET_PORT` filled in. ValueError when it needs an address the Node lacks."""
        url = template.replace("$NODE_NAME", quote(self.name, safe=""))
        if "$NODE_IP" in url:
            if not self.address:
                raise ValueError(f"node {self.name}: no InternalIP/ExternalIP/Hostname address")
            host = f"[{self.address}]" if ":" in self.address else self.address
            url = url.replace("$NODE_IP", host)
        return url.replace("$KUBELET_PORT", str(self.port))


def _address(status: Mapping[str, Any]) -> str:
    found: dict[str, str] = {}
    for a in status.get("addresses") or ():
        if not isinstance(a, Mapping) or not isinstance(a.get("address"), str):
            continue
        kind, value = a.get("type"), a["address"].strip()
        if kind in ADDRESS_ORDER and kind not in found and _usable_host(value):
            found[kind] = value
    return next((found[k] for k in ADDRESS_ORDER if k in found), "")


def _usable_host(value: str) -> bool:
    """An IP address or a DNS name: nothing that could reshape the URL (`@`, `/`, `:` ...)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return 0 < len(value) <= 253 and set(value.lower()) <= _HOST_CHARS


def _port(status: Mapping[str, Any]) -> int:
    ep = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = ep.get("Port") if isinstance(ep, Mapping) else None
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else KUBELET_PORT


def target_of(obj: Any, allow: frozenset[str] | tuple[str, ...], roles: bool) -> NodeTarget:
    """A Node object -> NodeTarget. Raises ParseError when it is not a Node."""
    info = NodeInfo.from_node(obj, allow, roles)
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    return NodeTarget(info.name, info, _address(status), _port(status))


class NodeSet:
    """The Nodes of the cluster, kept by the Node watch (an `exporter.kube.watch.Handler`).
    `on_change()` is called after every list and every event that changed a target."""

    def __init__(self, allow: frozenset[str] | tuple[str, ...], roles: bool,
                 on_change: Callable[[], None]) -> None:
        self.allow, self.roles = allow, roles
        self.on_change = on_change
        self.targets: dict[str, NodeTarget] = {}

    def replace(self, items: list[dict], initial: bool) -> None:
        fresh: dict[str, NodeTarget] = {}
        for obj in items:
            t = self._read(obj)
            if t is not None:
                fresh[t.name] = t
        self.targets = fresh
        self.on_change()

    def apply(self, kind: str, obj: dict) -> None:
        t = self._read(obj)
        if t is None:
            return
        if kind == "DELETED":
            if self.targets.pop(t.name, None) is None:
                return
        elif self.targets.get(t.name) == t:
            return  # (a status heartbeat: nothing this shard uses changed)
        else:
            self.targets[t.name] = t
        self.on_change()

    def _read(self, obj: Any) -> NodeTarget | None:
        try:
            return target_of(obj, self.allow, self.roles)
        except (ParseError, AttributeError) as exc:
            log.warning("skipping a Node object: %s", exc)
            return None
