"""The transform engine: upstream exposition bytes -> joined, relabeled families.

Public seam: `Transformer(options, index, hook).transform(payload, openmetrics) -> Result`.
See docs/architecture.md for the path of one sample.
"""
from exporter.transform.engine import Options, Payload, Transformer
from exporter.transform.hooks import EVERYTHING, NOTHING, Changes, NoHook, Pairs, PodKey, SeriesHook
from exporter.transform.result import BadLine, Result

__all__ = ["BadLine", "Changes", "EVERYTHING", "NOTHING", "NoHook", "Options", "Pairs", "Payload", "PodKey",
           "Result", "SeriesHook", "Transformer"]
