"""The shape shared by every Prometheus-format source: fetch one path, transform, report."""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.expfmt import Family
from exporter.pipeline import Options, Result, SeriesHook, Transformer
from exporter.upstream import Response, Upstream, is_openmetrics

# Payloads smaller than this are transformed on the event loop; larger ones in a thread so
# /healthz and other scrapes stay responsive during a cold multi-megabyte transform.
_INLINE_BYTES = 256 << 10


class Passthrough:
    """Base for passthrough collectors: set `path`, optionally `hook` and `pod_scoped`."""

    path = "/metrics"
    pod_scoped = True

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}
        self.transformer = Transformer(
            Options(collector=cfg.name, cluster=deps.config.cluster,
                    rules=deps.config.relabel_configs + cfg.relabel_configs,
                    keep_timestamps=bool(cfg.options.get("keep_timestamps", False)),
                    pod_labels=self.pod_scoped,
                    node=deps.config.node_name if self.pod_scoped else ""),
            deps.index if self.pod_scoped else None, self.hook(cfg))

    def hook(self, cfg: CollectorConfig) -> SeriesHook | None:
        """The source's series hook (None: identity)."""
        return None

    def upstream(self) -> Upstream:
        """Where `path` is fetched from (the node's kubelet by default)."""
        if self.deps.kubelet is None:
            raise RuntimeError("no kubelet upstream configured")
        return self.deps.kubelet

    async def collect(self, budget: float) -> Sequence[Family]:
        """Fetch and transform."""
        return await self._transform(await self.upstream().request(self.path))

    async def _transform(self, resp: Response) -> Sequence[Family]:
        om = is_openmetrics(resp.content_type)
        if len(resp.body) > _INLINE_BYTES:
            res = await asyncio.to_thread(self.transformer.transform, resp.body, om)
        else:
            res = self.transformer.transform(resp.body, om)
        self._report(res, len(resp.body))
        return res.families

    def process(self, payload: bytes, openmetrics: bool = False) -> Result:
        """Offline entry point (`kubebridge transform`)."""
        res = self.transformer.transform(payload, openmetrics)
        self._report(res, len(payload))
        return res

    def _report(self, res: Result, size: int) -> None:
        self.stats = {"response_bytes": size, "series_in": res.series_in,
                      "series_out": res.series_out, "join_misses": res.join_misses,
                      "malformed": res.malformed, "dropped": res.dropped}


def options_table(**extra: Any) -> dict[str, Any]:
    """Options every passthrough collector accepts."""
    from exporter.registry import Option
    return {"keep_timestamps": Option(False, help="Keep upstream sample timestamps."), **extra}
