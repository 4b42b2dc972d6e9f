"""Server TLS contexts from `tls_server_config`, and the reloading web config.

Contract: every new connection gets a context built from the files as they are now: the web
config file and the certificate, key and client CA files are stat'ed (not read) per
connection, and the context is rebuilt only when one of them changed (mtime, size, inode). A
change that does not load (half-written key, bad YAML) keeps the last good configuration and
logs one error per distinct problem; connections already open keep their certificate.
"""
from __future__ import annotations

import logging
import os
import ssl
import tempfile
from pathlib import Path

from exporter.errors import ConfigError
from exporter.web import config as webcfg

log = logging.getLogger("kubebridge.web")
_VERSION = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
            "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_NONE,
           "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


def _load_chain(ctx: ssl.SSLContext, tls: webcfg.TLSServerConfig) -> None:
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        return
    # Inline PEM: the ssl module loads chains from files only; a private temporary file
    # (0600, removed at once) holds what is inline.
    with tempfile.TemporaryDirectory(prefix="kubebridge-tls-") as tmp:
        cert, key = tls.cert_file, tls.key_file
        for name, text in (("cert", tls.cert), ("key", tls.key)):
            if text:
                f = Path(tmp) / name
                fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(text)
                cert, key = (str(f), key) if name == "cert" else (cert, str(f))
        ctx.load_cert_chain(cert, key)


def server_context(tls: webcfg.TLSServerConfig) -> ssl.SSLContext:
    """A server context for `tls`; ConfigError (naming the key) if the material does not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSION[tls.min_version]
    ctx.maximum_version = _VERSION[tls.max_version]
    openssl = [c for c in (webcfg.CIPHERS[n] for n in tls.cipher_suites) if c]
    if openssl:
        try:
            ctx.set_ciphers(":".join(openssl))
        except ssl.SSLError:
            raise ConfigError("tls_server_config.cipher_suites",
                              "none of these ciphers is available in this OpenSSL") from None
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        _load_chain(ctx, tls)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("tls_server_config.cert_file" if tls.cert_file else "tls_server_config.cert",
                          f"cannot load certificate and key: {_ssl_reason(exc)}") from None
    if tls.client_ca_file or tls.client_ca:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file or None, cadata=tls.client_ca or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError("tls_server_config.client_ca_file" if tls.client_ca_file else
                              "tls_server_config.client_ca", f"cannot load CA: {_ssl_reason(exc)}") from None
    ctx.verify_mode = _VERIFY[tls.client_auth_type]
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    if isinstance(exc, OSError):
        return exc.strerror or exc.__class__.__name__
    return str(exc)


def peer_allowed(peercert: dict | None, allowed: tuple[str, ...]) -> bool:
    """`client_allowed_sans`: some SAN (DNS, IP, e-mail, URI) of the verified client
    certificate is listed. No list: every verified client is allowed."""
    if not allowed:
        return True
    sans = [value for _kind, value in (peercert or {}).get("subjectAltName", ())]
    return any(s in allowed for s in sans)


Stamp = tuple[tuple[str, int, int, int], ...]


def _stamp(files: tuple[str, ...]) -> Stamp:
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((f, -1, -1, -1))
    return tuple(out)


class WebConfigSource:
    """The web config file, re-read when it changes; the TLS context, rebuilt when the config
    or the files it names change. Cheap per call: a few stat()s."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.config = webcfg.load(self.path)  # raises: a bad file at start is fatal
        self._config_stamp = _stamp((self.path,))
        self._context: ssl.SSLContext | None = None
        self._tls_stamp: Stamp = ()
        self._last_problem = ""
        self.reloads = 0
        self.reload_errors = 0
        if self.config.tls is not None:
            self._context = server_context(self.config.tls)
            self._tls_stamp = self._tls_files(self.config.tls)

    @property
    def tls_enabled(self) -> bool:
        """Whether the listener speaks TLS (decided at start, as in exporter-toolkit)."""
        return self._context is not None

    def current(self) -> webcfg.WebConfig:
        """The web config as the file says now (the last good one if it no longer loads)."""
        stamp = _stamp((self.path,))
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self.config = webcfg.load(self.path)
                self.reloads += 1
                self._last_problem = ""
                log.info("web config %s reloaded", self.path)
            except ConfigError as exc:
                self._problem(str(exc))
        return self.config

    def context(self) -> ssl.SSLContext:
        """The TLS context for a new connection."""
        cfg = self.current()
        assert self._context is not None, "context() on a plain-HTTP listener"
        if cfg.tls is None:
            self._problem("tls_server_config removed: TLS stays on until restart")
            return self._context
        stamp = self._tls_files(cfg.tls)
        if stamp != self._tls_stamp:
            self._tls_stamp = stamp
            try:
                self._context = server_context(cfg.tls)
                log.info("TLS certificate and settings reloaded from %s", self.path)
            except ConfigError as exc:
                self._problem(str(exc))
        return self._context

    def _tls_files(self, tls: webcfg.TLSServerConfig) -> Stamp:
        # (the reload count stands for the settings themselves: a new config, a new context)
        return _stamp(tls.files()) + (("", self.reloads, 0, 0),)

    def _problem(self, text: str) -> None:
        self.reload_errors += 1
        if text != self._last_problem:
            self._last_problem = text
            log.error("web config %s: %s; keeping the last good configuration", self.path, text)
