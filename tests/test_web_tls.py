"""`--web.config.file` with real clients: a real Prometheus scraping over TLS with basic auth,
urllib and raw sockets for the failures, a certificate renewed on disk without a restart."""
from __future__ import annotations

import http.client
import ssl
import subprocess
import time

import pytest

from tests.realprom import free_port, poll, prometheus, targets
from tests.webkit import (KB, PKI, bcrypt_hash, client_context, get, kubebridge, make_pki, peer_cert,
                          write_web_config)


@pytest.fixture
def pki(tmp_path) -> PKI:
    return make_pki(tmp_path)


def node_exporter_style(pki: PKI, **extra) -> dict:
    """A web config as node_exporter users write it: relative file names, `$2y$` hashes."""
    doc = {"tls_server_config": {"cert_file": pki.cert_file.name, "key_file": pki.key_file.name},
           "basic_auth_users": {"alice": bcrypt_hash("wonderland"), "bob": bcrypt_hash("builder")}}
    doc.update(extra)
    return doc


def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path, pki):
    web = write_web_config(tmp_path / "web-config.yml", node_exporter_style(pki))
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        tls = {"ca_file": str(pki.ca_file)}
        jobs = [{"job_name": "good", "scheme": "https", "tls_config": tls,
                 "basic_auth": {"username": "alice", "password": "wonderland"},
                 "static_configs": [{"targets": [kb.base]}]},
                {"job_name": "wrong-password", "scheme": "https", "tls_config": tls,
                 "basic_auth": {"username": "alice", "password": "looking-glass"},
                 "static_configs": [{"targets": [kb.base]}]},
                {"job_name": "plain-http", "static_configs": [{"targets": [kb.base]}]}]
        with prometheus(tmp_path, [], jobs=jobs) as prom:
            assert poll(prom, 'up{job="good"} == 1', 30)
            assert poll(prom, 'kubebridge_build_info{job="good"}', 30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                health = {t["labels"]["job"]: t for t in targets(prom)}
                if all(health.get(j, {}).get("health") not in (None, "unknown")
                       for j in ("good", "wrong-password", "plain-http")):
                    break
                time.sleep(0.5)
            assert health["good"]["health"] == "up", health["good"]
            assert health["wrong-password"]["health"] == "down"
            assert "401" in health["wrong-password"]["lastError"], health["wrong-password"]
            assert health["plain-http"]["health"] == "down"


def test_wrong_or_missing_password_is_401(tmp_path, pki):
    headers = {"headers": {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff",
                           "Strict-Transport-Security": "max-age=31536000"}}
    web = write_web_config(tmp_path / "web.yml", node_exporter_style(pki, http_server_config=headers))
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        url = f"https://{kb.base}/metrics"
        ctx = client_context(pki)
        ok = get(url, ctx, "bob", "builder")
        assert ok.status == 200 and b"kubebridge_build_info" in ok.body
        assert ok.headers["X-Frame-Options"] == "deny"
        assert ok.headers["Strict-Transport-Security"] == "max-age=31536000"
        for user, password in (("bob", "wonderland"), ("mallory", "builder"), ("", "")):
            r = get(url, ctx, user, password)
            assert r.status == 401, (user, r)
            assert r.headers["WWW-Authenticate"] == "Basic"
            assert r.headers["X-Content-Type-Options"] == "nosniff"  # on refusals too
        assert get(f"https://{kb.base}/", ctx).status == 401  # the landing page is protected too
        # Kubelet probes cannot authenticate: /healthz and /readyz answer without credentials.
        assert get(f"https://{kb.base}/healthz", ctx).status == 200
        assert get(f"https://{kb.base}/readyz", ctx).status == 200


def test_plain_http_to_the_tls_port_fails(tmp_path, pki):
    web = write_web_config(tmp_path / "web.yml", node_exporter_style(pki))
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        conn = http.client.HTTPConnection("127.0.0.1", kb.port, timeout=15)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            pytest.fail(f"plain HTTP got an answer: {resp.status}")
        conn.close()
        # and the server is still fine afterwards
        assert get(f"https://{kb.base}/metrics", client_context(pki), "alice", "wonderland").status == 200
        assert "ssl:" not in kb.output() and "Traceback" not in kb.output()


def test_mutual_tls(tmp_path, pki):
    doc = {"tls_server_config": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file),
                                 "client_auth_type": "RequireAndVerifyClientCert",
                                 "client_ca_file": str(pki.ca_file)}}
    web = write_web_config(tmp_path / "web.yml", doc)
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        url = f"https://{kb.base}/metrics"
        assert get(url, client_context(pki, cert=True)).status == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            get(url, client_context(pki, cert=False))
        # A client certificate from another CA is refused as well.
        (tmp_path / "other").mkdir()
        other = make_pki(tmp_path / "other")
        stranger = ssl.create_default_context(cafile=str(pki.ca_file))
        stranger.load_cert_chain(str(other.client_cert), str(other.client_key))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            get(url, stranger)


def test_client_allowed_sans(tmp_path, pki):
    doc = {"tls_server_config": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file),
                                 "client_auth_type": "RequireAndVerifyClientCert",
                                 "client_ca_file": str(pki.ca_file),
                                 "client_allowed_sans": ["someone-else.example"]}}
    web = write_web_config(tmp_path / "web.yml", doc)
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        url = f"https://{kb.base}/metrics"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError, http.client.HTTPException)):
            get(url, client_context(pki, cert=True))
        doc["tls_server_config"]["client_allowed_sans"] = ["prometheus.monitoring.svc"]
        write_web_config(web, doc)  # the web config is re-read for the next connection
        deadline = time.monotonic() + 20
        while True:
            try:
                assert get(url, client_context(pki, cert=True)).status == 200
                break
            except (ssl.SSLError, ConnectionError, OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def test_renewed_certificate_is_served_without_restart(tmp_path, pki):
    web = write_web_config(tmp_path / "web.yml", node_exporter_style(pki))
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        before = peer_cert(kb.port, pki)
        # An open keep-alive connection is not disturbed by the renewal.
        keep = http.client.HTTPSConnection("127.0.0.1", kb.port, context=client_context(pki), timeout=10)
        keep.request("GET", "/healthz")
        assert keep.getresponse().read() == b"ok\n"
        time.sleep(0.05)  # (a distinct mtime on coarse-timestamp filesystems; the inode changes anyway)
        pki.renew()
        deadline = time.monotonic() + 20
        after = peer_cert(kb.port, pki)
        while after == before and time.monotonic() < deadline:
            time.sleep(0.2)
            after = peer_cert(kb.port, pki)
        assert after != before, "the renewed certificate was not picked up"
        keep.request("GET", "/healthz")
        assert keep.getresponse().read() == b"ok\n"
        keep.close()
        assert kb.proc.poll() is None  # same process: no restart
        # A broken renewal (a key that does not match) keeps the last good certificate.
        (tmp_path / "other").mkdir()
        other = make_pki(tmp_path / "other")
        pki.key_file.write_bytes(other.key_file.read_bytes())
        time.sleep(0.05)
        assert peer_cert(kb.port, pki) == after
        assert "keeping the last good configuration" in kb.output()


def test_rate_limit(tmp_path, pki):
    doc = node_exporter_style(pki, rate_limit={"interval": "1m", "burst": 2})
    web = write_web_config(tmp_path / "web.yml", doc)
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        ctx = client_context(pki)
        codes = [get(f"https://{kb.base}/metrics", ctx, "alice", "wonderland").status for _ in range(4)]
        assert codes == [200, 200, 429, 429]


def test_a_bad_web_config_stops_the_start(tmp_path, pki):
    web = write_web_config(tmp_path / "web.yml", {"tls_server_config": {"cert_file": "server.crt"},
                                                  "basic_auth_users": {"alice": "plaintext"}})
    addr = f"127.0.0.1:{free_port()}"
    out = subprocess.run([*KB, "run", "--collector.disable-defaults", "--web.listen-address", addr,
                          "--web.config.file", str(web)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "tls_server_config: missing one of key or key_file" in out.stderr
    assert "basic_auth_users.alice: not a bcrypt hash" in out.stderr


def test_versions_and_cipher_suites(tmp_path, pki):
    doc = {"tls_server_config": {
        "cert_file": str(pki.cert_file), "key_file": str(pki.key_file), "max_version": "TLS12",
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                          "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]}}
    web = write_web_config(tmp_path / "web.yml", doc)
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        conn = http.client.HTTPSConnection("127.0.0.1", kb.port, context=client_context(pki), timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        tls = conn.sock
        assert isinstance(tls, ssl.SSLSocket)
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert cipher is not None and "AES256-GCM-SHA384" in cipher[0], cipher
        conn.close()
        # A client that only offers other TLS 1.2 suites is refused.
        narrow = client_context(pki)
        narrow.maximum_version = ssl.TLSVersion.TLSv1_2
        narrow.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            get(f"https://{kb.base}/healthz", narrow)
    # min_version TLS13 refuses a TLS 1.2 client.
    doc["tls_server_config"] = {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file),
                                "min_version": "TLS13"}
    write_web_config(web, doc)
    with kubebridge(tmp_path, "--collector.disable-defaults", web_config=web) as kb:
        old = client_context(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            get(f"https://{kb.base}/healthz", old)
        assert get(f"https://{kb.base}/healthz", client_context(pki)).status == 200
