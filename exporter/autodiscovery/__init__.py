"""Autodiscovery: finding metrics endpoints in pods and scraping them, for the `autodiscovery`
(this node's pods) and `sidecar` (its own pod's localhost) collectors.

- `templates`: the check template format, template variables, triggers and safety rules;
- `stores`: per-image template stores (files, etcd v3/v2, Consul), hot-reloaded;
- `target`: one discovered target: fetch, limits, transform;
- `engine`: the set of current targets, scraped concurrently, and the self-metrics.
"""
