"""Collectors: one module per upstream. Importing this package registers them all."""
from collectors import cadvisor, docker, etcd, etcd_v2, kubelet, probes, resource  # noqa: F401  (sorted, explicit)
