"""Collectors: one module per upstream. Importing this package registers them all."""
from collectors import cadvisor, kubelet, probes, resource  # noqa: F401  (sorted, explicit)
