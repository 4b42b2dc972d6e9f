"""kubebridge: a Prometheus exporter that joins Kubernetes pod metadata at collection time."""
from __future__ import annotations

NAMESPACE = "kubebridge"
__version__ = "0.1.0"
