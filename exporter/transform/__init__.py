"""The transform engine: upstream exposition bytes -> joined, relabeled families.

Public seam: `Transformer(options, index, hook).transform(payload, openmetrics) -> Result`.
"""
from exporter.pipeline import NoHook, Options, Pairs, Result, SeriesHook, Transformer

__all__ = ["NoHook", "Options", "Pairs", "Result", "SeriesHook", "Transformer"]
