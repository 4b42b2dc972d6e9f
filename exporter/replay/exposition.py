"""A Prometheus text payload split into families, with each sample attributed to its pod.

The synthetic node generator needs to copy, rename and drop a pod's series without
breaking the exposition: every family must keep its single HELP/TYPE block with all
of its samples contiguous under it. Parsing once into this model and re-rendering keeps
that invariant by construction, and lets churn (add/remove a pod) avoid re-parsing a
16 MB payload each time.

Attribution works on the raw line text (no float parsing) so values, timestamps and
label order stay byte-identical to the capture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PodKey = tuple[str, str]  # (namespace, name)

# Label names differ by era: `pod`/`namespace` since 1.16, `pod_name` before.
_POD_RE = re.compile(r'[{,]pod(?:_name)?="((?:[^"\\]|\\.)*)"')
_NS_RE = re.compile(r'[{,]namespace="((?:[^"\\]|\\.)*)"')


@dataclass
class Family:
    """One metric family: its comment header and the samples that belong to no pod."""

    name: str
    header: list[str]
    system: list[str] = field(default_factory=list)
    # Real kubelet output is sorted within a family (client_golang sorts by label
    # values); we only re-sort on render when the capture itself was sorted.
    sorted_input: bool = True
    had_samples: bool = False


class Exposition:
    """Families plus per-pod sample lines; render() rebuilds a valid text payload."""

    def __init__(self, families: list[Family], pod_lines: dict[PodKey, dict[int, list[str]]]) -> None:
        self.families = families
        self.pod_lines = pod_lines

    @classmethod
    def parse(cls, payload: bytes, uid_index: dict[str, PodKey] | None = None) -> Exposition:
        """Split `payload`; `uid_index` (pod UID -> key) attributes series without a pod label.

        In the captured shapes every pod series carries `pod`/`namespace` labels, but the
        UID fallback keeps pod cgroups attributable for cAdvisor builds that leave the
        pod label empty on the pod-level cgroup.
        """
        uid_index = uid_index or {}
        needles = {uid: key for uid, key in uid_index.items()}
        needles.update({uid.replace("-", "_"): key for uid, key in uid_index.items()})
        families: list[Family] = []
        pod_lines: dict[PodKey, dict[int, list[str]]] = {}
        last_sample: dict[int, str] = {}
        current: Family | None = None
        for line in payload.decode("utf-8").split("\n"):
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                is_meta = len(parts) >= 3 and parts[1] in ("HELP", "TYPE")
                if is_meta and (current is None or parts[2] != current.name or current.had_samples):
                    current = Family(name=parts[2], header=[])
                    families.append(current)
                elif current is None:
                    current = Family(name="", header=[])
                    families.append(current)
                current.header.append(line)
                continue
            if current is None:  # samples before any header: an untyped, headerless family
                current = Family(name="", header=[])
                families.append(current)
            index = len(families) - 1
            current.had_samples = True
            previous = last_sample.get(index)
            if previous is not None and line < previous:
                current.sorted_input = False
            last_sample[index] = line
            key = _pod_of(line, needles)
            if key is None:
                current.system.append(line)
            else:
                pod_lines.setdefault(key, {}).setdefault(index, []).append(line)
        return cls(families, pod_lines)

    def pods(self) -> list[PodKey]:
        return list(self.pod_lines)

    def add_pod_lines(self, key: PodKey, lines: dict[int, list[str]]) -> None:
        self.pod_lines[key] = lines

    def remove_pod(self, key: PodKey) -> bool:
        return self.pod_lines.pop(key, None) is not None

    def render(self) -> bytes:
        per_family: list[list[str]] = [list(f.system) for f in self.families]
        for by_family in self.pod_lines.values():
            for index, lines in by_family.items():
                per_family[index].extend(lines)
        out: list[str] = []
        for family, samples in zip(self.families, per_family):
            # The kubelet's registry drops a family once its last series is gone.
            if family.had_samples and not samples:
                continue
            out.extend(family.header)
            out.extend(sorted(samples) if family.sorted_input else samples)
        return ("\n".join(out) + "\n").encode("utf-8") if out else b""


def _pod_of(line: str, needles: dict[str, PodKey]) -> PodKey | None:
    pod = _POD_RE.search(line)
    if pod and pod.group(1):
        ns = _NS_RE.search(line)
        return (ns.group(1) if ns else "", pod.group(1))
    for needle, key in needles.items():
        if needle in line:
            return key
    return None
