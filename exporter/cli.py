"""Command line: `kubebridge run | check-config | transform | demo`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from exporter import __version__, config as config_mod, plugins
from exporter.errors import ConfigError, ConfigErrors
from exporter.registry import registrations


def _web_flags(p: argparse.ArgumentParser, listen_default: str | None = None) -> None:
    p.add_argument("--web.listen-address", dest="listen_address", default=listen_default,
                   help="HOST:PORT to serve on" + (f" (default {listen_default})" if listen_default else ""))
    p.add_argument("--web.config.file", dest="web_config_file",
                   help="exporter-toolkit web config: TLS, basic auth, headers (node_exporter's format)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file")
    _web_flags(p)
    p.add_argument("--web.telemetry-path", dest="telemetry_path",
                   help="path of the metrics (default /metrics)")
    p.add_argument("--web.disable-exporter-metrics", dest="disable_exporter_metrics", action="store_true",
                   default=None, help="leave out the process_* and python_* metrics of kubebridge itself")
    p.add_argument("--collector.disable-defaults", dest="disable_defaults", action="store_true",
                   help="run only the collectors enabled explicitly (flag or config file)")
    p.add_argument("--log.level", dest="log_level", choices=config_mod.LOG_LEVELS)
    p.add_argument("--log.format", dest="log_format", choices=("text", "json"))
    p.add_argument("--cluster", help="value of the `cluster` label on every series")
    p.add_argument("--cluster-collector", dest="cluster_collector", action="store_true", default=None,
                   help="collect the kubelet of every node (sharded), not this node's (docs/sharding.md)")
    p.add_argument("--shard", type=int, help="this replica's shard, 0..total-1 (default: the StatefulSet "
                   "ordinal of POD_NAME)")
    p.add_argument("--total-shards", dest="total_shards", type=int, help="how many shards split the nodes")
    p.add_argument("--cluster-collector.membership", dest="cluster_membership",
                   choices=("static", "ready_pods"),
                   help="static: --shard/--total-shards; ready_pods: the Ready replicas share the nodes")
    p.add_argument("--cluster-collector.peer-selector", dest="cluster_peer_selector",
                   help="ready_pods: the label selector of this collector's own pods")
    p.add_argument("--cluster-collector.kubelet-url", dest="cluster_kubelet_url",
                   help="each node's kubelet: $NODE_IP, $KUBELET_PORT, $NODE_NAME are filled in "
                   "(default https://$NODE_IP:$KUBELET_PORT)")
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
    cc = sub.add_parser("check-config", help="validate a config file and/or a web config file, reporting "
                        "every error (exit 0 valid, 2 invalid)")
    cc.add_argument("file", type=Path, nargs="?")
    cc.add_argument("--web.config.file", dest="web_config_file", type=Path)
    tf = sub.add_parser("transform", help="print the exposition for a saved payload, offline")
    tf.add_argument("--source", required=True, help="collector name (cadvisor, kubelet, probes, ...)")
    tf.add_argument("--pods", type=Path, help="kubelet /pods JSON to join with")
    tf.add_argument("--config", type=Path)
    tf.add_argument("--node", default="", help="node name (for node-level series)")
    tf.add_argument("--node-object", type=Path, help="a Node object (JSON): its region, zone, role and "
                    "node_topology.labels, as the node agent adds them (the node name too, unless --node)")
    tf.add_argument("--openmetrics", action="store_true", help="encode OpenMetrics instead of 0.0.4")
    tf.add_argument("payload", type=Path, nargs="+", help="the payload file(s)")
    dm = sub.add_parser("demo", help="run against the built-in replay cluster")
    _web_flags(dm, "127.0.0.1:9500")
    dm.add_argument("--listen", dest="listen_address", help=argparse.SUPPRESS)  # the old spelling
    dm.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    dm.add_argument("--cluster", default="demo", help="the cluster label of every series (default demo)")
    dm.add_argument("--nodes", type=int, default=3, help="replay nodes, one node agent each (>= 1)")
    return p


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values that override the file and environment."""
    out: dict[str, Any] = {k: getattr(args, k) for k in (
        "listen_address", "log_level", "log_format", "cluster", "web_config_file", "telemetry_path",
        "disable_exporter_metrics", "disable_defaults", "max_body_size", "series_limit",
        "source_series_limit") if getattr(args, k, None)}
    flags = {r.name: getattr(args, f"collector_{r.name}") for r in registrations()
             if getattr(args, f"collector_{r.name}", None) is not None}
    if flags:
        out["collectors"] = flags
    cc_flags = (("enabled", "cluster_collector"), ("shard", "shard"), ("total_shards", "total_shards"),
                ("kubelet_url", "cluster_kubelet_url"), ("membership", "cluster_membership"),
                ("peer_selector", "cluster_peer_selector"))
    shard = {k: getattr(args, dest) for k, dest in cc_flags if getattr(args, dest, None) is not None}
    if shard:
        out["cluster_collector"] = shard
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kubebridge` and `python -m exporter`."""
    plugins.load()  # the collectors register: the flags, config keys and sources are theirs
    args = parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.file, args.web_config_file)
        if args.command == "run":
            from exporter.commands import run
            return run(config_mod.load(args.config, overrides=overrides(args)))
        if args.command == "transform":
            from exporter.commands import transform
            return transform(args)
        from exporter.commands import demo
        return demo(args.listen_address, args.duration, args.web_config_file, args.cluster, args.nodes)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


def check_config(path: Path | None, web_path: Path | None) -> int:
    """Validate both files, printing every error of each (the environment is not consulted)."""
    from exporter.web import config as web_config

    if path is None and web_path is None:
        print("check-config: give a config file, --web.config.file, or both", file=sys.stderr)
        return 2
    status = 0
    todo: list[tuple[Path, Callable[[Path], Any]]] = [(path, config_mod.load)] if path else []
    todo += [(web_path, web_config.load)] if web_path else []
    while todo:
        what, check = todo.pop(0)
        try:
            got = check(what)
            print(f"{what}: ok")
            if isinstance(got, config_mod.Config) and got.web_config_file and web_path is None:
                todo.append((Path(got.web_config_file), web_config.load))  # the one it names
        except ConfigErrors as exc:
            print(f"{what}: {len(exc.errors)} errors", file=sys.stderr)
            for err in exc.errors:
                print(f"  {err}", file=sys.stderr)
            status = 2
        except ConfigError as exc:
            print(f"{what}: {exc}", file=sys.stderr)
            status = 2
    return status
