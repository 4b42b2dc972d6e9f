"""Command line: `kubebridge run | check-config | transform | demo`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from exporter import __version__, config as config_mod, plugins
from exporter.errors import ConfigError
from exporter.registry import registrations


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file")
    p.add_argument("--web.listen-address", dest="listen_address", help="HOST:PORT to serve on")
    p.add_argument("--log.level", dest="log_level", choices=config_mod.LOG_LEVELS)
    p.add_argument("--log.format", dest="log_format", choices=("text", "json"))
    p.add_argument("--cluster", help="value of the `cluster` label on every series")
    p.add_argument("--upstream.max-body-size", dest="max_body_size",
                   help="cap on each upstream body, decompressed (e.g. 32Mi)")
    p.add_argument("--series.limit", dest="series_limit", type=int,
                   help="series cap over all sources (past it new series are refused)")
    p.add_argument("--series.source-limit", dest="source_series_limit", type=int,
                   help="series cap per source")
    for reg in registrations():
        state = "on" if reg.default_enabled else "off"
        p.add_argument(f"--collector.{reg.name}", dest=f"collector_{reg.name}", default=None,
                       action=argparse.BooleanOptionalAction,
                       help=f"enable the {reg.name} collector (default {state})")


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="kubebridge", description="Prometheus exporter that joins "
                                "Kubernetes pod metadata onto kubelet, cAdvisor, etcd and apiserver series.")
    p.add_argument("--version", action="version", version=f"kubebridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _run_flags(sub.add_parser("run", help="run the exporter"))
    cc = sub.add_parser("check-config", help="validate a config file (exit 0 valid, 2 invalid)")
    cc.add_argument("file", type=Path)
    tf = sub.add_parser("transform", help="print the exposition for a saved payload, offline")
    tf.add_argument("--source", required=True, help="collector name (cadvisor, kubelet, probes, ...)")
    tf.add_argument("--pods", type=Path, help="kubelet /pods JSON to join with")
    tf.add_argument("--config", type=Path)
    tf.add_argument("--node", default="", help="node name (for node-level series)")
    tf.add_argument("--openmetrics", action="store_true", help="encode OpenMetrics instead of 0.0.4")
    tf.add_argument("payload", type=Path, nargs="+", help="the payload file(s)")
    dm = sub.add_parser("demo", help="run against the built-in replay cluster")
    dm.add_argument("--listen", default="127.0.0.1:9500", help="HOST:PORT for kubebridge")
    dm.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    return p


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values that override the file and environment."""
    out: dict[str, Any] = {k: getattr(args, k) for k in ("listen_address", "log_level", "log_format",
                                                          "cluster", "max_body_size", "series_limit",
                                                          "source_series_limit")
                          if getattr(args, k, None)}
    flags = {r.name: getattr(args, f"collector_{r.name}") for r in registrations()
             if getattr(args, f"collector_{r.name}", None) is not None}
    if flags:
        out["collectors"] = flags
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kubebridge` and `python -m exporter`."""
    plugins.load()  # the collectors register: the flags, config keys and sources are theirs
    args = parser().parse_args(argv)
    try:
        if args.command == "check-config":
            config_mod.load(args.file)
            print(f"{args.file}: ok")
            return 0
        if args.command == "run":
            from exporter.commands import run
            return run(config_mod.load(args.config, overrides=overrides(args)))
        if args.command == "transform":
            from exporter.commands import transform
            return transform(args)
        from exporter.commands import demo
        return demo(args.listen, args.duration)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
