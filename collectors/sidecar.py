"""The sidecar pattern: `kubebridge run` inside an application pod, scraping its localhost.

Option `targets` maps a container name to a template (as an autodiscovery annotation, but the
host is always 127.0.0.1 and the port must be given: there is no pod spec to read ports from).
The pod's identity comes from the downward API, never from the API server: env `POD_NAME`
(option `pod_name`; else the hostname, which is the pod name), `POD_NAMESPACE` and `NODE_NAME`
(the config keys `pod_namespace`, `node_name`), and the labels file (`labels_file`, default
/etc/podinfo/labels, one `key="value"` per line), re-read when it changes. The downward API has
no owner references, so the workload is inferred from the labels controllers put on their pods
(`pod-template-hash`, `controller-revision-hash`, `job-name`, ...).

Registered with scope "pod": with only this collector enabled the server builds no pod index
and no kubelet client, so it needs no RBAC and no service-account token.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

from exporter.autodiscovery.engine import (LIMIT_OPTIONS, Engine, EngineCollector, Key, TargetSpec, identity,
                                          own_port)
from exporter.autodiscovery.stores import ErrorLog
from exporter.autodiscovery.templates import PodContext, Template, TemplateError, parse, render
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.podindex import PodIndex
from exporter.pods import PodMeta, workload_of
from exporter.registry import Option, register

log = logging.getLogger("kubebridge.sidecar")
LOCALHOST = "127.0.0.1"
_LINE = re.compile(r'^([^=\s]+)="((?:[^"\\]|\\.)*)"$')


def _context(container: str, namespace: str = "ns", pod: str = "pod",
             denied: frozenset = frozenset()) -> PodContext:
    return PodContext(LOCALHOST, namespace, pod, container, (), False, denied)


def _template(doc: Any) -> Template:
    tmpl = parse(doc)
    return dataclasses.replace(tmpl, host="%%host%%") if tmpl.host == "localhost" else tmpl


def check_targets(value: Any) -> str | None:
    """Option check: every target is a valid template that renders for localhost."""
    if not isinstance(value, dict):
        return "must be a mapping of container name to template"
    for name, doc in value.items():
        try:
            render(_template(doc), _context(str(name)), 1.0)
        except TemplateError as exc:
            hint = " (a sidecar has no pod spec to read ports from: give the number)" \
                if "%%port" in str(exc) else ""
            return f"{name}: {exc}{hint}"
    return None


OPTIONS = {
    **LIMIT_OPTIONS,
    "targets": Option({}, check_targets, "Container name -> template ({port, path, scheme, interval, "
                      "timeout, labels, relabel_configs}); the host is always 127.0.0.1."),
    "labels_file": Option("/etc/podinfo/labels", help="Downward API labels file (key=\"value\" lines)."),
    "pod_name": Option("", help="This pod's name (default: env POD_NAME, else the hostname)."),
}


def parse_labels_file(text: str) -> dict[str, str]:
    """The downward API's `key="value"` lines (values Go-quoted) -> labels; bad lines skipped."""
    labels = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            if line.strip():
                log.warning("sidecar: labels file line not key=\"value\": %r", line[:80])
            continue
        try:
            labels[m.group(1)] = ast.literal_eval('"' + m.group(2) + '"')
        except (ValueError, SyntaxError):
            log.warning("sidecar: bad quoting in labels file line %r", line[:80])
    return labels


def infer_workload(name: str, labels: dict[str, str]) -> tuple[str, str]:
    """(workload, kind) from the labels controllers set on their pods (no owner references)."""
    owner: tuple[str, str] | None = None
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        owner = ("Job", job)
    elif labels.get("pod-template-hash") and name.count("-") >= 2:
        owner = ("ReplicaSet", name.rsplit("-", 1)[0])
    elif labels.get("statefulset.kubernetes.io/pod-name") == name:
        owner = ("StatefulSet", name.rsplit("-", 1)[0])
    elif labels.get("controller-revision-hash") and labels.get("pod-template-generation"):
        owner = ("DaemonSet", name.rsplit("-", 1)[0])
    refs = [{"kind": owner[0], "name": owner[1], "controller": True}] if owner else []
    return workload_of({"metadata": {"name": name, "labels": labels, "ownerReferences": refs}})


@register("sidecar", default_enabled=False, scope="pod", options=OPTIONS)
class SidecarCollector(EngineCollector):
    """An application pod's own metrics, from inside the pod (downward API identity). It
    follows no template stores; targets are sorted by container name."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps, self.cfg, self.opt = deps, cfg, cfg.options
        self.pod_name = self.opt["pod_name"] or os.environ.get("POD_NAME") or socket.gethostname()
        self.templates = {str(n): _template(doc) for n, doc in self.opt["targets"].items()}
        self.labels_file = Path(self.opt["labels_file"])
        self.labels: dict[str, str] = {}
        self.errors = ErrorLog()
        self.engine = Engine(deps, cfg)
        self.stats: dict[str, float] = {}
        self._stamp: tuple | None = None
        self._synced = False

    def _read_labels(self) -> bool:
        """Re-read the labels file when its stat changed (the kubelet rewrites it on a change)."""
        try:
            st = os.stat(self.labels_file)
            stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.labels = parse_labels_file(self.labels_file.read_text()) if stamp else {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("sidecar: cannot read %s (%s)", self.labels_file, exc)
            self.labels = {}
        return True

    def sync(self) -> None:
        """Rebuild the targets' identity when the labels file changed (and on the first scrape)."""
        if not self._read_labels() and self._synced:
            return
        self._synced = True
        cfg = self.deps.config
        workload, kind = infer_workload(self.pod_name, self.labels)
        meta = PodMeta(cfg.pod_namespace or "default", self.pod_name, node=cfg.node_name,
                       labels=dict(self.labels), workload=workload, workload_kind=kind)
        index = PodIndex(cfg.label_policy)
        index.replace({meta.key: meta})
        join = index.join_labels(meta)
        specs: dict[Key, TargetSpec] = {}
        bad = {}
        denied = frozenset({own_port(cfg.listen_address)})
        for name, tmpl in sorted(self.templates.items()):
            key = (meta.namespace, meta.name, name)
            try:
                ctx = _context(name, meta.namespace, meta.name, denied)
                ep = render(tmpl, ctx, self.opt["target_timeout"])
            except TemplateError as exc:
                bad[name] = ("config", repr(tmpl), f"sidecar target {name!r} rejected: {exc}")
                continue
            specs[key] = TargetSpec(key, "sidecar", ep, identity(meta, name, join, cfg.node_name))
        self.errors.sync("config", bad)
        self.engine.set_targets(specs)
