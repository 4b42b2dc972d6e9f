"""kubelet `/metrics`: the kubelet's own metrics (pod-naming series are joined).

Series naming a pod (`namespace`+`pod`) get the pipeline's join. Volume stats
(`kubelet_volume_stats_*`) name a PersistentVolumeClaim instead (`namespace`+
`persistentvolumeclaim`): the hook joins them to the pod that mounts the claim, found in the pod
index (`spec.volumes[].persistentVolumeClaim.claimName`, or `<pod>-<volume>` for a generic
ephemeral volume). The kubelet reports a claim once even when several of its pods mount it (a
ReadWriteMany volume): then `pod` is left out and only the labels those pods agree on are added
(usually the workload's), rather than crediting one pod arbitrarily.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from collectors.stats_summary import claims_of
from exporter.passthrough import Passthrough, options_table
from exporter.transform import EVERYTHING, NOTHING, Changes, Pairs
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.registry import register

ClaimKey = tuple[str, str]  # (namespace, claim)
Join = tuple[tuple[str, str], ...]


def claim_joins(index: PodIndex) -> dict[ClaimKey, Join]:
    """(namespace, claim) -> the labels its series gain: the mounting pod and its join, or, for a
    claim several pods mount, the join labels they all share."""
    mounts: dict[ClaimKey, list[Join]] = {}
    for meta in index.pods():
        join = (("pod", meta.name), *index.join_labels(meta))
        for claim in sorted(set(claims_of(meta.raw).values())):
            mounts.setdefault((meta.namespace, claim), []).append(join)
    out: dict[ClaimKey, Join] = {}
    for key, joins in mounts.items():
        shared = set(joins[0]).intersection(*joins[1:])
        out[key] = tuple(p for p in joins[0] if p in shared)
    return out


class VolumeStatsHook:
    """Adds the mounting pod's join to `kubelet_volume_stats_*`; identity elsewhere."""

    def __init__(self) -> None:
        self.claims: Mapping[ClaimKey, Join] = {}
        self.index: PodIndex | None = None
        self._generation = -1

    def prepare(self, lines: list[bytes], index: PodIndex | None) -> Changes:
        """The claims map follows the pod index; volume series name no pod, so a changed map
        makes every cached rewrite stale."""
        self.index = index
        if index is None or index.generation == self._generation:
            return NOTHING
        self._generation = index.generation
        claims = claim_joins(index)
        if claims == self.claims:
            return NOTHING
        self.claims = claims
        return EVERYTHING

    def variant(self, family: str) -> Any:
        return "pvc" if family.startswith("kubelet_volume_stats_") else None

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        if variant != "pvc":
            return pairs
        labels = dict(pairs)
        if labels.get("pod"):
            return pairs  # already names its pod: the engine joined it
        join = self.claims.get((labels.get("namespace", ""), labels.get("persistentvolumeclaim", "")))
        if join is None:
            if self.index is not None:
                self.index.request_refresh()  # a claim mounted by a pod the index lacks yet
            return pairs
        return list(pairs) + [(k, v) for k, v in join if k not in labels]


@register("kubelet", default_enabled=True, options=options_table())
class KubeletCollector(Passthrough):
    """The kubelet's own /metrics."""

    path = "/metrics"

    def hook(self, cfg: Any) -> VolumeStatsHook:
        return VolumeStatsHook()
