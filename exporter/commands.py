"""The bodies of `kubebridge run`, `transform` and `demo`."""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from exporter import config as config_mod, logs, malloc
from exporter.deps import Deps
from exporter.expfmt import encode_openmetrics, encode_text
from exporter.merge import merge
from exporter.podindex import PodIndex
from exporter.pods import parse_podlist
from exporter.registry import Offline, get, registrations
from exporter.server import build_app, serve, split_address


def run(cfg: config_mod.Config) -> int:
    """Serve until SIGTERM."""
    malloc.tune()  # before any worker thread exists
    logs.setup(cfg.log_level, cfg.log_format)
    host, port = split_address(cfg.listen_address)
    serve(build_app(cfg), host, port)
    return 0


def _line_no(payload: bytes, line: bytes) -> int:
    try:
        return payload.split(b"\n").index(line) + 1
    except ValueError:
        return 0


def transform(args: argparse.Namespace) -> int:
    """Offline: one payload (plus pods) -> exactly what kubebridge would serve for it."""
    over = {"node_name": args.node} if args.node else {}
    cfg = config_mod.load(args.config, env={}, overrides=over)
    name = args.source.replace("-", "_")
    names = [r.name for r in registrations()]
    if name not in names:
        print(f"unknown source {args.source!r}; one of: {', '.join(names)}", file=sys.stderr)
        return 2
    index = None
    if args.pods:
        try:
            index = PodIndex(cfg.label_policy)
            index.replace(parse_podlist(json.loads(args.pods.read_bytes())))
        except json.JSONDecodeError as exc:
            print(f"{args.pods}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"{args.pods}: {exc.strerror}", file=sys.stderr)
            return 1
    deps = Deps(cfg, None, index)
    collector = get(name).factory(deps, cfg.collectors[name])
    if not isinstance(collector, Offline):
        print(f"source {args.source!r} cannot be transformed offline", file=sys.stderr)
        return 2
    try:
        payloads = [p.read_bytes() for p in args.payload]
    except OSError as exc:
        print(f"{exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        res = collector.process(*payloads)
    except ValueError as exc:  # JSON sources: the decoder names line and column
        print(f"{args.payload[0]}: {exc}", file=sys.stderr)
        return 1
    families, _ = merge([(name, res.families)])
    sys.stdout.buffer.write(encode_openmetrics(families) if args.openmetrics else encode_text(families))
    for line, why in res.errors:
        print(f"{args.payload[0]}:{_line_no(payloads[0], line)}: {why}", file=sys.stderr)
    return 1 if res.malformed else 0


def demo(listen: str, duration: float) -> int:
    """Start the replay cluster and kubebridge on loopback; serve until Ctrl-C or `duration`."""
    malloc.tune()
    logs.setup("info", "text")
    try:
        return asyncio.run(_demo(listen, duration))
    except KeyboardInterrupt:
        return 0


async def _demo(listen: str, duration: float) -> int:
    from exporter.replay.cluster import ReplayCluster

    with tempfile.TemporaryDirectory(prefix="kubebridge-demo-") as tmp:
        token = Path(tmp) / "token"
        token.write_text(secrets.token_urlsafe(32))
        cluster = ReplayCluster(Path(tmp), token)
        await cluster.start()
        cfg = config_mod.parse(cluster.exporter_config(listen), env={})
        app = build_app(cfg)
        runner = web.AppRunner(app, shutdown_timeout=5.0)
        await runner.setup()
        host, port = split_address(listen)
        site = web.TCPSite(runner, host, port)
        await site.start()
        base = f"http://{listen}"
        print(f"kubebridge demo: metrics at {base}/metrics, landing page at {base}/", flush=True)
        for what, url in cluster.urls().items():
            print(f"  replay {what}: {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), duration or None)
        except TimeoutError:
            pass
        await runner.cleanup()
        await cluster.stop()
    return 0
