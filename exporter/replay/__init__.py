"""Replay cluster: a fake kubelet that serves real captured payloads, plus a node generator.

Used by the tests and the demo, and installed with the product so the demo works from a
wheel. Nothing here is used by the exporter's own collection path.

- `exporter.replay.kubelet.ReplayKubelet`: an aiohttp HTTPS server on 127.0.0.1 speaking
  the kubelet protocol (bearer token re-read from a file on every request, TLS with the
  demo certificates, kubelet content types, /healthz checks) over real captures, with
  pod churn while running.
- `exporter.replay.synth`: pure functions that turn the real 1.35 capture into a node
  with N pods (fresh names/UIDs/container IDs) and remove pods, for scale tests.
- `exporter.replay.resource`: /metrics/resource derived from a /stats/summary (no real
  capture of that endpoint exists).
- `exporter.replay.democerts`: the DEMO-ONLY CA, server and client certificates, made at
  first use in a private temporary directory (no private key ships in the package).
- Package data: `data/` (the captured payloads, see data/PROVENANCE.md), located with
  `importlib.resources.files("exporter.replay")`.

Submodules are not imported here so `synth` stays usable without aiohttp.
"""

from __future__ import annotations
