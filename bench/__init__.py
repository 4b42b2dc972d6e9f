"""Benchmarks of kubebridge's scrape path (not shipped: setup.cfg packages only exporter/collectors).

- `bench.node`: one synthetic but realistic node (the Kubernetes 1.35 cAdvisor + /pods capture
  cloned to N pods) through a prometheus_client baseline, kubebridge cold and warm, and a
  `bytes.split`/`join` floor. Run `python -m bench.node` from the checkout; see bench/README.md.
"""
