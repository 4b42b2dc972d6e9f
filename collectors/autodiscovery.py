"""Autodiscovery: the custom metrics of the pods on this node, joined with their pod.

The pods come from the pod index (this node's kubelet `/pods`). A container is scraped when a
trigger asks for it, by precedence: its `kubebridge.io/<container>.check` annotation, the pod's
`prometheus.io/scrape: "true"` annotations, or a per-image template from a store (a file or
mounted ConfigMap, etcd v3/v2, Consul). See `exporter.autodiscovery.templates` for the template
format and the safety rules, `.stores` for the stores, `.engine` and `.target` for scraping.

Targets are recomputed only when the pod index was refreshed or a store changed (checked on each
scrape; unchanged targets keep their caches and counters), and every target is scraped
concurrently on each /metrics scrape, within the budget.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from exporter.autodiscovery.engine import (LIMIT_OPTIONS, Engine, EngineCollector, Key, TargetSpec, identity,
                                          own_port, positive)
from exporter.autodiscovery.stores import ConsulStore, ErrorLog, EtcdV2Store, EtcdV3Store, FileStore, Store
from exporter.autodiscovery.templates import (Candidate, PodContext, TemplateError, candidates, containers,
                                              render)
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.jsonshape import obj
from exporter.podindex import PodIndex
from exporter.pods import PodMeta
from exporter.registry import Option, register

log = logging.getLogger("kubebridge.autodiscovery")


def _networks(value: Any) -> str | None:
    try:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        return str(exc)
    return None


OPTIONS = {
    **LIMIT_OPTIONS,
    "annotations": Option(True, help="Trigger 1: `kubebridge.io/<container>.check` pod annotations."),
    "prometheus_annotations": Option(True, help="Trigger 2: `prometheus.io/scrape: \"true\"` annotations."),
    "templates_path": Option("/etc/kubebridge/autodiscovery", help="Trigger 3: per-image templates in a "
                             "YAML/JSON file or a directory of them (a mounted ConfigMap); '' for none."),
    "templates_poll_interval": Option(5.0, positive, "Seconds between checks of the template files' mtimes."),
    "etcd": Option((), kind="endpoints", help="etcd endpoints holding per-image templates (tried in turn)."),
    "etcd_api": Option("v3", lambda v: None if v in ("v3", "v2") else "must be v3 or v2",
                       "v3 (JSON gateway) or v2 (keys API, etcd --enable-v2)."),
    "etcd_prefix": Option("/kubebridge", help="Templates live under <prefix>/check_configs/<image>/."),
    "consul": Option((), kind="endpoints", help="Consul agents holding per-image templates (KV)."),
    "consul_prefix": Option("kubebridge", help="Templates live under <prefix>/check_configs/<image>/."),
    "networks": Option((), _networks, "CIDRs a pod IP must be in to be scraped (empty: any pod IP)."),
}


@register("autodiscovery", default_enabled=False, scope="node", options=OPTIONS)
class AutodiscoveryCollector(EngineCollector):
    """Custom metrics of this node's pods, found by annotations and per-image templates.
    Targets are sorted by namespace, pod, container (the order `process` hands payloads in)."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps, self.cfg, self.opt = deps, cfg, cfg.options
        self.errors = ErrorLog()
        self.stores: list[Store] = []
        if self.opt["templates_path"]:
            files = FileStore(self.errors, self.opt["templates_path"], self.opt["templates_poll_interval"])
            files.poll()  # the first scrape (and `kubebridge transform`) already has them
            self.stores.append(files)
        if self.opt["etcd"]:
            kind = EtcdV3Store if self.opt["etcd_api"] == "v3" else EtcdV2Store
            self.stores.append(kind(self.errors, deps, self.opt["etcd"], self.opt["etcd_prefix"]))
        if self.opt["consul"]:
            self.stores.append(ConsulStore(self.errors, deps, self.opt["consul"], self.opt["consul_prefix"]))
        self.networks = [ipaddress.ip_network(c, strict=False) for c in self.opt["networks"]]
        # kubebridge's own pod (a pod's hostname is its name): the manifests annotate it with
        # prometheus.io/scrape, and scraping itself would wait on its own in-flight scrape.
        self.own_pod = socket.gethostname()
        self.engine = Engine(deps, cfg)
        self.stats: dict[str, float] = {}
        self._synced: tuple | None = None

    def sync(self) -> None:
        """Recompute the targets when the pod index or a template store changed."""
        index = self.deps.index
        if index is None:
            raise RuntimeError("autodiscovery needs the pod index")
        # Every refresh of the index, not only its generation: PodMeta equality ignores the raw
        # item, so an annotation edit or a pod getting its IP does not bump the generation.
        state = (index.syncs, index.generation, tuple(s.version for s in self.stores))
        if state == self._synced:
            return
        self._synced = state
        images: dict[str, Any] = {}
        for store in self.stores:
            for image, tmpl in store.templates.items():
                images.setdefault(image, (store.name, tmpl))
        specs: dict[Key, TargetSpec] = {}
        bad: dict[Any, tuple[str, str, str]] = {}
        for meta in index.pods():
            try:
                self._sync_pod(index, meta, images, specs, bad)
            except Exception as exc:  # a pod shaped like no pod: only its own targets are lost
                key = (meta.namespace, meta.name, "")
                for stale in [k for k in specs if k[:2] == key[:2]]:
                    del specs[stale]
                bad[(key, "pod")] = ("pod", f"{type(exc).__name__}: {exc}",
                                     f"pod {meta.namespace}/{meta.name}: unreadable, not scraped "
                                     f"({type(exc).__name__}: {exc})")
        self.errors.sync("pods", bad)
        self.engine.set_targets(specs)

    def _sync_pod(self, index: PodIndex, meta: PodMeta, images: dict[str, Any], specs: dict[Key, TargetSpec],
                  bad: dict[Any, tuple[str, str, str]]) -> None:
        """The targets of one pod into `specs`, its rejected templates into `bad`."""
        if not self._eligible(meta):
            return
        for cand in candidates(meta.raw, images, annotations=self.opt["annotations"],
                               prometheus=self.opt["prometheus_annotations"]):
            key = (meta.namespace, meta.name, cand.container)
            try:
                specs[key] = self._spec(index, meta, cand)
            except TemplateError as exc:
                what = "annotation" if cand.trigger in ("annotation", "prometheus_io") else "template"
                message = (f"pod {meta.namespace}/{meta.name} container {cand.container!r}: "
                           f"{what} {cand.where} rejected: {exc}")
                bad[(key, cand.where)] = (cand.trigger, cand.text or repr(cand.template), message)

    def _eligible(self, meta: PodMeta) -> bool:
        status = obj(meta.raw.get("status"))  # (odd JSON types read as absent)
        node, own_ns = self.deps.config.node_name, self.deps.config.pod_namespace
        if meta.name == self.own_pod and meta.namespace == (own_ns or meta.namespace):
            return False
        if node and meta.node and meta.node != node:
            return False  # only this node's pods
        if not isinstance(status.get("podIP"), str) or status.get("phase", "Running") != "Running":
            return False
        try:
            ip = ipaddress.ip_address(status["podIP"])
        except ValueError:
            return False
        if self.networks and not any(ip in n for n in self.networks):
            log.debug("autodiscovery: pod %s/%s IP outside `networks`", meta.namespace, meta.name)
            return False
        return True

    def _spec(self, index: PodIndex, meta: PodMeta, cand: Candidate) -> TargetSpec:
        if cand.error or cand.template is None:
            raise TemplateError(cand.error)
        ports = next((c[2] for c in containers(meta.raw) if c[0] == cand.container), ())
        # On a hostNetwork pod's IP (the node's), kubebridge's own port may be kubebridge itself.
        denied = frozenset({own_port(self.deps.config.listen_address)}) if meta.host_network else frozenset()
        ctx = PodContext(meta.raw["status"]["podIP"], meta.namespace, meta.name, cand.container, ports,
                         meta.host_network, denied)
        endpoint = render(cand.template, ctx, self.opt["target_timeout"])
        trigger = cand.trigger if cand.trigger in ("annotation", "prometheus_io") else "image"
        ids = identity(meta, cand.container, index.join_labels(meta), self.deps.config.node_name)
        return TargetSpec((meta.namespace, meta.name, cand.container), trigger, endpoint, ids)
