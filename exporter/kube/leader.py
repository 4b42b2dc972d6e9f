"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

- Acquire: create the Lease, or take it over when its holder has not renewed it for
  `leaseDurationSeconds` as measured on OUR clock from when we last saw the record change
  (clocks of different nodes are never compared), or when it has no holder.
- Renew: the leader rewrites `renewTime` every `retry_period`. Every write carries the
  resourceVersion it read, so two candidates racing for an expired lease cannot both win:
  the apiserver answers the loser 409 Conflict.
- Step down: a leader that sees another holder, or cannot renew for `renew_deadline`,
  stops leading (before its lease can expire for the others: renew_deadline < duration).
The lease is not released on shutdown: a successor takes over after the lease duration.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, UTC
from collections.abc import AsyncIterator

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("kubebridge.leader")


def _micro(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One candidate for the Lease `namespace/name`."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.coord = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False
        self.error: Exception | None = None
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def changes(self) -> AsyncIterator[bool]:
        """Yield True when this candidate becomes leader and False when it stops; forever."""
        while True:
            try:
                held = await self._try()
                self.error = None
            except Exception as exc:  # the loop must survive anything; a leader keeps leading
                log.warning("lease %s/%s: %s", self.namespace, self.name,  # until its deadline
                            exc if isinstance(exc, (ApiException, aiohttp.ClientError, OSError))
                            else repr(exc))
                self.error = exc
                held = None  # unknown: a leader keeps leading until its renew deadline
            now = time.monotonic()
            if held:
                self._renewed_at = now
            leader = bool(held) or (held is None and self.is_leader
                                    and now - self._renewed_at < self.renew_deadline)
            if leader != self.is_leader:
                self.is_leader = leader
                log.info("%s %s the lease %s/%s", self.identity,
                         "acquired" if leader else "lost", self.namespace, self.name)
                yield leader
            await asyncio.sleep(self.retry_period)

    async def _try(self) -> bool:
        """One acquire-or-renew round: True if we hold the lease afterwards."""
        stamp = _micro(datetime.now(UTC))
        try:
            lease = await self.coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return await self._write(None, {"holderIdentity": self.identity, "acquireTime": stamp,
                                            "renewTime": stamp, "leaseTransitions": 0})
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        record = (holder, spec.renew_time, lease.metadata.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.lease_duration_seconds or math.ceil(self.duration)
        if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
            return False  # held by someone who renewed within its duration
        ours = holder == self.identity
        acquired = _micro(spec.acquire_time) if ours and spec.acquire_time else stamp
        return await self._write(lease.metadata.resource_version, {
            "holderIdentity": self.identity, "acquireTime": acquired, "renewTime": stamp,
            "leaseTransitions": (spec.lease_transitions or 0) + (0 if ours or not holder else 1)})

    async def _write(self, resource_version: str | None, spec: dict) -> bool:
        spec["leaseDurationSeconds"] = math.ceil(self.duration)
        meta = {"name": self.name, "namespace": self.namespace}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
        try:
            if resource_version is None:
                await self.coord.create_namespaced_lease(self.namespace, body)  # type: ignore[arg-type]  # (a dict serialises as the model)
            else:
                meta["resourceVersion"] = resource_version
                await self.coord.replace_namespaced_lease(self.name, self.namespace, body)  # type: ignore[arg-type]  # (as above)
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                return False
            raise
        return True
