"""kubelet `/stats/summary`: what only the Summary API carries, declared as a table, joined per pod.

cAdvisor's `/metrics/cadvisor` has CPU and memory, but not the kubelet's own accounting of
ephemeral storage (what evictions are decided on: kubernetes/kubernetes#69507), per-volume
usage, or PIDs. Those come from here:
- per container: `rootfs` (writable layer) and `logs`, and their sum, which is the container's
  ephemeral-storage usage as the kubelet's eviction manager counts it against the limit;
- per pod: `ephemeral-storage` (rootfs + logs + local volumes) and `process_stats`;
- per volume: usage, with `persistentvolumeclaim` when the volume is a claim (`pvcRef` from
  newer kubelets; otherwise the pod's `spec.volumes[].persistentVolumeClaim.claimName` from the
  pod index, or `<pod>-<volume>` for a generic ephemeral volume);
- per node: `fs` (nodefs), `runtime.imageFs`, `runtime.containerFs` (split image filesystem,
  Kubernetes 1.30+) and `rlimit` (PIDs).
A field the kubelet did not send (old kubelets, 2018 minikube has no rlimit or process_stats) is
simply absent: nothing is invented. Pod-scoped series get the same join as passthrough series.
"""
from __future__ import annotations

import asyncio
import functools
from typing import Any
from collections.abc import Mapping, Sequence

from exporter import NAMESPACE, malloc
from exporter.config import CollectorConfig
from exporter.deps import Deps
from exporter.errors import ParseError
from exporter.expfmt import Family
from exporter.families import Builder, Labels, Metric
from exporter.jsonshape import loads, obj, objs, text
from exporter.transform import Result
from exporter.labels import CommonLabels
from exporter.podindex import PodIndex
from exporter.registry import register
from exporter.upstream import JSON_MAX_BODY

PATH = "/stats/summary"
POD = ("namespace", "pod")
CONTAINER = ("namespace", "pod", "container")
VOLUME = ("namespace", "pod", "volume")  # + persistentvolumeclaim when the volume is a claim
# FsStats JSON key -> (metric suffix, help)
FS_FIELDS = (("usedBytes", "used_bytes", "bytes used"),
             ("capacityBytes", "capacity_bytes", "total size of the filesystem holding it"),
             ("availableBytes", "available_bytes", "bytes available on that filesystem"),
             ("inodesUsed", "inodes_used", "inodes used"),
             ("inodes", "inodes", "total inodes of that filesystem"),
             ("inodesFree", "inodes_free", "free inodes of that filesystem"))


def _fs(scope: str, what: str, labels: tuple[str, ...]) -> dict[str, Metric]:
    return {key: Metric(f"{NAMESPACE}_stats_{scope}_{unit}", "gauge", f"{what}: {text}.", labels)
            for key, unit, text in FS_FIELDS}


NODE_FS = _fs("node_fs", "The node's root filesystem (nodefs)", ())
NODE_IMAGEFS = _fs("node_imagefs", "The container runtime's image filesystem", ())
NODE_CONTAINERFS = _fs("node_containerfs", "The runtime's container filesystem (writable layers; "
                       "the imagefs unless split)", ())
POD_EPHEMERAL = _fs("pod_ephemeral_storage", "The pod's ephemeral storage (container rootfs, "
                    "logs and local volumes, as the kubelet counts it)", POD)
CONTAINER_ROOTFS = _fs("container_rootfs", "The container's writable layer", CONTAINER)
CONTAINER_LOGS = _fs("container_logs", "The container's logs", CONTAINER)
VOLUMES = _fs("volume", "A pod volume", VOLUME)
CONTAINER_EPHEMERAL = Metric(f"{NAMESPACE}_stats_container_ephemeral_storage_used_bytes",
                             "gauge", "The container's ephemeral storage usage: rootfs + logs, "
                             "what the kubelet compares with its ephemeral-storage limit.", CONTAINER)
POD_PROCESSES = Metric(f"{NAMESPACE}_stats_pod_processes", "gauge",
                       "Processes running in the pod (process_stats.process_count).", POD)
NODE_PROCESSES = Metric(f"{NAMESPACE}_stats_node_processes", "gauge",
                        "Processes running on the node (rlimit.curproc).")
NODE_PROCESSES_MAX = Metric(f"{NAMESPACE}_stats_node_processes_max", "gauge",
                            "The node's PID limit (rlimit.maxpid).")
TABLE = (*NODE_FS.values(), *NODE_IMAGEFS.values(), *NODE_CONTAINERFS.values(), NODE_PROCESSES,
         NODE_PROCESSES_MAX, *POD_EPHEMERAL.values(), POD_PROCESSES, *CONTAINER_ROOTFS.values(),
         *CONTAINER_LOGS.values(), CONTAINER_EPHEMERAL, *VOLUMES.values())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fill_fs(b: Builder, table: Mapping[str, Metric], fs: Any, labels: Labels) -> None:
    if not isinstance(fs, Mapping):
        return
    for key, metric in table.items():
        value = _number(fs.get(key))
        if value is not None:
            b.add(metric, value, labels)


def claims_of(pod: Mapping[str, Any] | None) -> dict[str, str]:
    """volume name -> PVC name for a PodList item's volumes that are claims."""
    out: dict[str, str] = {}
    spec = obj(obj(pod).get("spec"))
    name = text(obj(obj(pod).get("metadata")).get("name"))
    for vol in objs(spec.get("volumes"))[0]:
        vname = text(vol.get("name"))
        claim = text(obj(vol.get("persistentVolumeClaim")).get("claimName"))
        if claim:
            out[vname] = claim
        elif vol.get("ephemeral") is not None:  # generic ephemeral volume: the PVC is <pod>-<volume>
            out[vname] = f"{name}-{vname}"
    return out


def fill(b: Builder, doc: Mapping[str, Any]) -> int:
    """One summary document -> samples. Pure but for the index lookups. Returns how many items
    were skipped for wrong JSON types (a field of a wrong type reads as absent)."""
    node = obj(doc.get("node"))
    _fill_fs(b, NODE_FS, node.get("fs"), {})
    runtime = obj(node.get("runtime"))
    _fill_fs(b, NODE_IMAGEFS, runtime.get("imageFs"), {})
    _fill_fs(b, NODE_CONTAINERFS, runtime.get("containerFs"), {})
    rlimit = obj(node.get("rlimit"))
    for key, metric in (("curproc", NODE_PROCESSES), ("maxpid", NODE_PROCESSES_MAX)):
        if _number(rlimit.get(key)) is not None:
            b.add(metric, float(rlimit[key]))
    pods, bad = objs(doc.get("pods"))
    for pod in pods:
        ref = obj(pod.get("podRef"))
        ns, name = text(ref.get("namespace")), text(ref.get("name"))
        if not name:
            bad += 1
            continue
        meta = b.meta(ns, name)
        pl = b.pod(ns, name, meta=meta)
        _fill_fs(b, POD_EPHEMERAL, pod.get("ephemeral-storage"), pl)
        count = _number(obj(pod.get("process_stats")).get("process_count"))
        if count is not None:
            b.add(POD_PROCESSES, count, pl)
        ctrs, skipped = objs(pod.get("containers"))
        bad += skipped
        for ctr in ctrs:
            cname = text(ctr.get("name"))
            if not cname:
                bad += 1
                continue
            cl = b.pod(ns, name, {"container": cname}, meta)
            rootfs, logs = ctr.get("rootfs"), ctr.get("logs")
            _fill_fs(b, CONTAINER_ROOTFS, rootfs, cl)
            _fill_fs(b, CONTAINER_LOGS, logs, cl)
            used = [_number(obj(fs).get("usedBytes")) for fs in (rootfs, logs)]
            if None not in used:
                b.add(CONTAINER_EPHEMERAL, sum(used), cl)  # type: ignore[arg-type]
        claims = claims_of(meta.raw if meta is not None else None)
        vols, skipped = objs(pod.get("volume"))
        bad += skipped
        for vol in vols:
            vname = text(vol.get("name"))
            if not vname:
                bad += 1
                continue
            claim = text(obj(vol.get("pvcRef")).get("name")) or claims.get(vname, "")
            labels = b.pod(ns, name, {"volume": vname, "persistentvolumeclaim": claim}, meta)
            _fill_fs(b, VOLUMES, vol, labels)
    return bad


@register("stats_summary", default_enabled=True, max_body=JSON_MAX_BODY)
class StatsSummaryCollector:
    """Ephemeral storage, volumes (with their PVC), PIDs and node filesystems from /stats/summary."""

    def __init__(self, deps: Deps, cfg: CollectorConfig) -> None:
        self.deps = deps
        self.cfg = cfg
        self.stats: dict[str, float] = {}

    async def collect(self, budget: float) -> Sequence[Family]:
        """Fetch and convert (a big node's summary is decoded off the event loop)."""
        if self.deps.kubelet is None:
            raise RuntimeError("no kubelet upstream configured")
        resp = await self.deps.kubelet.request(PATH, accept="application/json")
        if len(resp.body) > 256 << 10:
            convert = functools.partial(self._convert, resp.body, self.deps.index)
            return (await asyncio.to_thread(malloc.large, convert)).families
        return self._convert(resp.body, self.deps.index).families

    def process(self, payload: bytes) -> Result:
        """Offline entry point (`kubebridge transform --source stats-summary [--pods ...]`)."""
        return self._convert(payload, self.deps.index)

    def _convert(self, payload: bytes, index: PodIndex | None) -> Result:
        """The summary -> families. Not a JSON object, an object with neither `node` nor
        `pods`, or one with nothing usable but items of wrong types: ParseError (the source
        reads down). Otherwise items of wrong types are skipped and counted as malformed."""
        doc = loads(payload, PATH)
        if not isinstance(doc, Mapping) or not ({"node", "pods"} & doc.keys()):
            raise ParseError(f"{PATH}: not a Summary object")
        labels = self.deps.labels(self.cfg)
        node = obj(doc.get("node")).get("nodeName")
        if not labels.node and isinstance(node, str) and node:
            labels = CommonLabels(labels.collector, labels.cluster, node, labels.rules)
        b = Builder(TABLE, labels, index)
        bad = fill(b, doc) + (0 if isinstance(doc.get("node"), Mapping | None) else 1)
        res = b.result()
        if bad and not res.series_out:
            raise ParseError(f"{PATH}: nothing usable ({bad} items of wrong types)")
        res.malformed = bad
        self.stats = {"response_bytes": len(payload), "series_out": res.series_out,
                      "join_misses": res.join_misses, "malformed": bad}
        return res
