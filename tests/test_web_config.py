"""The web config file's validation (exporter-toolkit's format) and `check-config`: every
error at once, ports, durations, URLs."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from exporter.errors import ConfigError, ConfigErrors
from exporter.web import config as webcfg
from exporter.web.guard import BasicAuth, basic_credentials
from tests.webkit import KB, bcrypt_hash, make_pki


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KB, *args], capture_output=True, text=True, timeout=60)


def test_a_node_exporter_web_config_is_accepted_unchanged(tmp_path):
    make_pki(tmp_path)
    # Every key exporter-toolkit documents, as a node_exporter user would have them.
    text = f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: VerifyClientCertIfGiven
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.monitoring.svc]
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                  TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: true
  curve_preferences: [CurveP256, X25519]
http_server_config:
  http2: true
  headers:
    Content-Security-Policy: "default-src 'self'"
    X-Frame-Options: sameorigin
    X-Content-Type-Options: nosniff
    X-XSS-Protection: "1; mode=block"
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  alice: {bcrypt_hash("a")}
  bob: {bcrypt_hash("b", "2b")}
rate_limit:
  interval: 1s
  burst: 20
"""
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    cfg = webcfg.load(path)
    assert cfg.tls is not None and cfg.tls.cert_file == str(tmp_path / "server.crt")  # relative to the file
    assert cfg.tls.client_auth_type == "VerifyClientCertIfGiven"
    assert set(cfg.users) == {"alice", "bob"}
    assert cfg.headers["X-Frame-Options"] == "sameorigin"
    assert cfg.rate_limit == webcfg.RateLimit(1.0, 20)
    from exporter.web.tls import server_context
    server_context(cfg.tls)  # the material loads
    assert run("check-config", "--web.config.file", str(path)).returncode == 0


def test_empty_file_means_plain_http_without_auth(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("")
    cfg = webcfg.load(path)
    assert cfg.tls is None and not cfg.users and not cfg.headers


def test_every_problem_is_reported_at_once(tmp_path):
    doc = {"tls_server_config": {"cert_fil": "x.crt", "key_file": "missing.key",
                                 "client_auth_type": "RequireAnyClientCert", "min_version": "TLS14",
                                 "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]},
           "http_server_config": {"headers": {"X-Frame-Options": "allow", "Server": "x"}},
           "basic_auth_users": {"alice": "hunter2"},
           "rate_limit": {"interval": "soon", "burst": -1},
           "tls_config": {}}
    with pytest.raises(ConfigErrors) as err:
        webcfg.parse(doc, str(tmp_path / "web.yml"))
    paths = [e.path for e in err.value.errors]
    for expected in ("tls_server_config.cert_fil", "tls_server_config.key_file", "tls_server_config",
                     "tls_server_config.client_auth_type", "tls_server_config.min_version",
                     "tls_server_config.cipher_suites", "http_server_config.headers.X-Frame-Options",
                     "http_server_config.headers.Server", "basic_auth_users.alice",
                     "rate_limit.interval", "rate_limit.burst", "tls_config"):
        assert expected in paths, (expected, paths)
    text = str(err.value)
    assert "RequireAndVerifyClientCert" in text and "can not be configured" in text


def test_client_ca_needs_a_client_auth_policy(tmp_path):
    pki = make_pki(tmp_path)
    with pytest.raises(ConfigError, match="without a Client Auth Policy"):
        webcfg.parse({"tls_server_config": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file),
                                            "client_ca_file": str(pki.ca_file)}})


def test_a_key_that_does_not_match_is_named(tmp_path):
    pki = make_pki(tmp_path)
    cfg = webcfg.parse({"tls_server_config": {"cert_file": str(pki.cert_file),
                                              "key_file": str(pki.client_key)}})
    from exporter.web.tls import server_context
    assert cfg.tls is not None
    with pytest.raises(ConfigError, match="tls_server_config.cert_file: cannot load certificate and key"):
        server_context(cfg.tls)


@pytest.mark.parametrize("header,expected", [
    ("Basic YWxpY2U6c2VjcmV0", ("alice", "secret")),
    ("basic YWxpY2U6c2U6Y3JldA==", ("alice", "se:cret")),  # a password may contain ':'
    ("Basic !!!", None), ("Bearer YWxpY2U6c2VjcmV0", None), ("Basic YWxpY2U=", None), ("", None),
])
def test_basic_credentials(header, expected):
    assert basic_credentials(header) == expected


async def test_bcrypt_verdicts_are_cached_and_unknown_users_refused():
    auth = BasicAuth()
    users = {"alice": bcrypt_hash("secret").encode()}
    good = "Basic YWxpY2U6c2VjcmV0"
    assert await auth.check(good, users) and await auth.check(good, users)
    assert auth.comparisons == 1  # the second one came from the cache
    assert not await auth.check("Basic bWFsbG9yeTpzZWNyZXQ=", users)  # mallory:secret
    assert auth.comparisons == 2  # an unknown user costs a comparison too


def test_check_config_reports_every_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({
        "listen_address": "0.0.0.0:99999", "scrape_timeout": "soon", "colectors": {},
        "kubelet": {"url": "https://10.0.0.1:70000"}, "telemetry_path": "metrics",
        "collectors": {"cadvisor": {"timeout": "-1s", "enabled": "yes"},
                       "etcd": {"members": [{"url": "http://127.0.0.1:0"}]}}}))
    out = run("check-config", str(f))
    assert out.returncode == 2, out
    for expected in ("listen_address: port '99999' out of range (0-65535)", "scrape_timeout: not a duration",
                     "colectors: unknown key (did you mean 'collectors'?)",
                     "kubelet.url: port '70000' out of range", "telemetry_path: must be a path",
                     "collectors.cadvisor.timeout", "collectors.cadvisor.enabled: must be true or false",
                     "collectors.etcd.members[0].url: port '0' out of range"):
        assert expected in out.stderr, (expected, out.stderr)
    assert "8 errors" in out.stderr, out.stderr


@pytest.mark.parametrize("listen,ok", [("0.0.0.0:9500", True), ("[::1]:9500", True), (":9100", True),
                                       ("0.0.0.0:99999", False), ("127.0.0.1:0", True), ("9500", False),
                                       ("host:９５００", False), ("a:b:9500", False)])
def test_listen_address(listen, ok):
    from exporter import config as config_mod
    if ok:
        assert config_mod.parse({"listen_address": listen}, env={}).listen_address == listen
    else:
        with pytest.raises(ConfigError, match="listen_address"):
            config_mod.parse({"listen_address": listen}, env={})


def test_check_config_follows_the_web_config_the_file_names(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plain\n")
    f = tmp_path / "c.yaml"
    f.write_text(f"web_config_file: {web}\n")
    out = run("check-config", str(f))
    assert out.returncode == 2 and "basic_auth_users.alice: not a bcrypt hash" in out.stderr, out
