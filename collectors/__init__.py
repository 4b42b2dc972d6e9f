"""Collectors: one module per upstream. Importing this package registers them all."""
from collectors import (  # noqa: F401  (sorted, explicit)
    apiserver, autodiscovery, cadvisor, cadvisor_standalone,
    docker, etcd, etcd_v2, events, healthz, kube_system, kubelet,
    pods, probes, resource, sidecar, stats_summary, statsd,
)
