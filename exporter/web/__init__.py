"""The HTTP side: exporter-toolkit web config (TLS, basic auth, headers), the listener and the
landing page."""
