"""The bodies of `kubebridge run`, `transform` and `demo`."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from exporter import __version__, config as config_mod, logs, malloc
from exporter.deps import Deps
from exporter.expfmt import encode_openmetrics, encode_text
from exporter.merge import merge
from exporter.nodeinfo import NodeInfo, NodeTopology
from exporter.podindex import PodIndex
from exporter.pods import parse_podlist
from exporter.registry import Offline, get, registrations
from exporter.server import build_app, split_address
from exporter.web import guard
from exporter.web.listen import serve_until_signal
from exporter.web.tls import WebConfigSource

log = logging.getLogger("kubebridge")


def run(cfg: config_mod.Config) -> int:
    """Serve until SIGTERM."""
    malloc.tune()  # before any worker thread exists
    logs.setup(cfg.log_level, cfg.log_format)
    source = WebConfigSource(cfg.web_config_file) if cfg.web_config_file else None
    host, port = split_address(cfg.listen_address)
    app = build_app(cfg)
    if source is not None:
        app.middlewares.append(guard.middleware(source))
    try:
        asyncio.run(serve_until_signal(app, host, port, source, lambda url: _started(cfg, url, source)))
    except OSError as exc:  # the address is taken, or not ours
        log.error("cannot listen on %s: %s", cfg.listen_address, exc.strerror or exc)
        return 1
    return 0


def start_message(cfg: config_mod.Config, url: str, source: WebConfigSource | None) -> str:
    """The one line a successful start logs: version, address, protection, collectors, kubelet
    and node (the things an operator checks first)."""
    enabled = [c.name for c in cfg.enabled()]
    node_scoped = any(get(n).scope == "node" for n in enabled)
    wc = source.config if source is not None else None
    guard_text = ", ".join(x for x in (
        "TLS" + (" with client certificates" if wc and wc.tls and wc.tls.client_auth_type != "NoClientCert"
                 else "") if source is not None and source.tls_enabled else "",
        "basic auth" if wc and wc.users else "") if x) or "no TLS, no auth"
    kubelet, node = (cfg.kubelet.url if node_scoped else "not used"), (cfg.node_name or "unset")
    cc = cfg.cluster_collector
    if cc.enabled:  # (the cluster collector: every node of its shard, docs/sharding.md)
        kubelet = f"{cc.kubelet_url} for each node"
        shard = cc.shard if cc.shard >= 0 else f"ordinal of {cc.pod_name or 'POD_NAME'}"
        node = f"every node of shard {shard} of {cc.total_shards}"
    return (f"kubebridge {__version__} listening on {url}{cfg.telemetry_path} ({guard_text}); "
            f"collectors: {', '.join(enabled) or 'none'}; "
            f"kubelet: {kubelet}; node: {node}; cluster: {cfg.cluster or 'unset'}")


def _started(cfg: config_mod.Config, url: str, source: WebConfigSource | None) -> None:
    log.info("%s", start_message(cfg, url, source))


def _line_no(payload: bytes, line: bytes) -> int:
    try:
        return payload.split(b"\n").index(line) + 1
    except ValueError:
        return 0


def _node_object(path: Path, cfg: config_mod.Config) -> NodeTopology:
    """The topology of a saved Node object, as the node agent would read it. Raises ValueError."""
    try:
        obj = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    info = NodeInfo.from_node(obj, frozenset(cfg.node_topology.labels), cfg.node_topology.roles)
    topology = NodeTopology(info.name, "node_labels" in cfg.node_topology.cluster_from)
    topology.replace(info)
    return topology


def transform(args: argparse.Namespace) -> int:
    """Offline: one payload (plus pods) -> exactly what kubebridge would serve for it."""
    node = args.node
    if args.node_object and not node:
        try:  # (the name first: the config's node_name is the node the series get)
            node = str(json.loads(args.node_object.read_bytes())["metadata"]["name"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"{args.node_object}: not a Node object ({exc})", file=sys.stderr)
            return 1
    over = {"node_name": node} if node else {}
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
    topology = None
    if args.node_object:
        try:
            topology = _node_object(args.node_object, cfg)
        except (OSError, ValueError) as exc:
            print(f"{args.node_object}: {exc}", file=sys.stderr)
            return 1
    deps = Deps(cfg, None, index, topology=topology)
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


def demo(listen: str, duration: float, web_config_file: str | None = None, cluster: str = "demo",
         nodes: int = 3) -> int:
    """Start the replay cluster and kubebridge on loopback; serve until Ctrl-C or `duration`."""
    malloc.tune()
    logs.setup("info", "text")
    source = WebConfigSource(web_config_file) if web_config_file else None
    try:
        return asyncio.run(_demo(listen, duration, source, cluster, nodes))
    except KeyboardInterrupt:
        return 0


async def _demo(listen: str, duration: float, source: WebConfigSource | None, cluster_name: str,
                nodes: int) -> int:
    from exporter.replay.demo import DemoCluster

    with tempfile.TemporaryDirectory(prefix="kubebridge-demo-") as tmp:
        token = Path(tmp) / "token"
        token.write_text(secrets.token_urlsafe(32))
        cluster = DemoCluster(Path(tmp), token, nodes)
        await cluster.start()
        agents: list[tuple[str, web.AppRunner]] = []  # the node agents of nodes 2.. (as a DaemonSet)
        try:
            cfg = config_mod.parse({**cluster.exporter_config(listen), "cluster": cluster_name}, env={})
            app = build_app(cfg)
            if source is not None:
                app.middlewares.append(guard.middleware(source))
            host, port = split_address(listen)
            for node_cfg in cluster.node_agent_configs(f"{host}:0"):
                node_agent = config_mod.parse({**node_cfg, "cluster": cluster_name}, env={})
                agent = web.AppRunner(build_app(node_agent), shutdown_timeout=5.0)
                await agent.setup()
                await web.TCPSite(agent, host, 0).start()
                agents.append((node_cfg["node_name"], agent))

            def started(url: str) -> None:
                _started(cfg, url, source)
                print(f"kubebridge demo: metrics at {url}/metrics, landing page at {url}/", flush=True)
                for what, where in cluster.urls().items():
                    print(f"  replay {what}: {where}", flush=True)
                for node, agent in agents:
                    at = ":".join(map(str, agent.addresses[0][:2]))
                    print(f"  node agent {node}: metrics at http://{at}/metrics", flush=True)

            await serve_until_signal(app, host, port, source, started, duration)
        finally:
            for _, agent in agents:
                await agent.cleanup()
            await cluster.stop()
    return 0
