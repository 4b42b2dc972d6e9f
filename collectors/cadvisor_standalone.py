"""A standalone cAdvisor's `/metrics` (cAdvisor run as its own DaemonSet), joined to pods.

A standalone cAdvisor names a container's pod only through the container runtime's labels:
`container_label_io_kubernetes_pod_namespace`, `..._pod_name` and `..._container_name`
(`POD` for a dockershim sandbox). Before the engine reads a payload, those three label names
become `namespace`, `pod` and `container` (a byte replace of `{name=` / `,name=`: a label whose
text has blanks around its separators, which cAdvisor never writes, is not renamed and its
series stays unjoined). From there on the series is read as the kubelet's cAdvisor's is
(collectors/cadvisor.py): joined to its pod, `cgroup_kind` set, stale restarts dropped, `id`
and `name` dropped from pod cgroups.

Every other `container_label_*` and `container_env_*` label is dropped, unless allowlisted in
`keep_labels`: cAdvisor gives every series of a family the union of the label names of every
container on the node (empty where a container lacks one), pod labels and runtime labels
included, which multiplies label bytes and breaks series identity whenever any container's
labels change. The pod's labels come from the pod index instead (`label_*`).

A standalone cAdvisor cannot tell pod-level cgroups (`/kubepods/.../pod<uid>`) apart: they
carry no runtime labels and are classified `system`, with their `id`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collectors.cadvisor import CadvisorHook, _label_list
from exporter.config import CollectorConfig, Endpoint
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.passthrough import Passthrough, options_table
from exporter.registry import Option, register
from exporter.transform import Pairs, Result
from exporter.pods import PodMeta
from exporter.upstream import Upstream

RAW_PREFIXES = ("container_label_", "container_env_")
# runtime label -> the label the engine joins on
RENAMES = (
    (b"container_label_io_kubernetes_pod_namespace=", b"namespace="),
    (b"container_label_io_kubernetes_pod_name=", b"pod="),
    (b"container_label_io_kubernetes_container_name=", b"container="),
)


def canonical(payload: bytes) -> bytes:
    """The payload with the runtime's pod and container labels named as the kubelet names them."""
    for old, new in RENAMES:
        if old in payload:
            payload = payload.replace(b"{" + old, b"{" + new).replace(b"," + old, b"," + new)
    return payload


class StandaloneHook(CadvisorHook):
    """CadvisorHook, after dropping the raw container labels and environment (but `keep`)."""

    def __init__(self, drop_labels: Sequence[str], keep: Sequence[str]) -> None:
        super().__init__(drop_labels)
        self.keep = frozenset(keep)

    def rewrite(self, variant: Any, pairs: Pairs, pod: PodMeta | None) -> Pairs | None:
        pairs = [p for p in pairs if not p[0].startswith(RAW_PREFIXES) or p[0] in self.keep]
        return super().rewrite(variant, pairs, pod)


OPTIONS = options_table(
    endpoint=Option(Endpoint("http://$NODE_IP:8080"), kind="endpoint",
                    help="The standalone cAdvisor (its /metrics)."),
    drop_labels=Option(("id", "name"), _label_list, "cAdvisor labels removed from pod cgroups' series."),
    keep_labels=Option((), _label_list, "container_label_* / container_env_* labels kept (exact names)."),
)


@register("cadvisor_standalone", default_enabled=False, options=OPTIONS)
class CadvisorStandaloneCollector(Passthrough):
    """Container resource usage from a standalone cAdvisor, joined to pods like the kubelet's."""

    path = "/metrics"

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        super().__init__(deps, cfg)
        self._upstream: Upstream | None = None

    def hook(self, cfg: Any) -> StandaloneHook:
        return StandaloneHook(cfg.options["drop_labels"], cfg.options["keep_labels"])

    def upstream(self) -> Upstream:
        if self._upstream is None:
            self._upstream = self.deps.upstream(self.cfg.options["endpoint"])
        return self._upstream

    async def collect(self, budget: float) -> Sequence[Family]:
        resp = await self.upstream().request(self.path)
        resp.body = canonical(resp.body)
        return await self._transform(resp)

    def process(self, payload: bytes, openmetrics: bool = False) -> Result:
        res = self.transformer.transform(canonical(payload), openmetrics)
        self._report(res, len(payload))
        return res
