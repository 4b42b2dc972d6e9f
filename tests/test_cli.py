"""The command line: run (with SIGTERM), check-config, transform."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import Fixtures
from tests.realprom import free_port, wait_http

KB = [sys.executable, "-m", "exporter"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*KB, *args], capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("doc,path,why", [
    ({"collectors": {"kubelet": {"url": 3}}}, "collectors.kubelet.url", "unknown key"),
    ({"kubelet": {"url": "ftp://x"}}, "kubelet.url", "not an http(s) URL"),
    ({"colectors": {}}, "colectors", "did you mean 'collectors'"),
    ({"collectors": {"cadvisr": {}}}, "collectors.cadvisr", "did you mean 'cadvisor'"),
    ({"scrape_timeout": "soon"}, "scrape_timeout", "not a duration"),
    ({"log_level": "loud"}, "log_level", "must be one of"),
    ({"listen_address": "9500"}, "listen_address", "HOST:PORT"),
    ({"collectors": {"cadvisor": {"enabled": "yes"}}}, "collectors.cadvisor.enabled", "true or false"),
    ({"relabel_configs": [{"action": "explode"}]}, "relabel_configs[0].action", "unknown action"),
    ({"collectors": {"cadvisor": {"drop_labels": "id"}}}, "collectors.cadvisor.drop_labels", "list"),
    ({"kubelet": {"ca_file": "/nonexistent/ca.crt"}}, "kubelet.ca_file", "file not found"),
])
def test_check_config_names_the_key(tmp_path, doc, path, why):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = run("check-config", str(f))
    assert out.returncode == 2, out
    assert path in out.stderr and why in out.stderr, out.stderr


def test_check_config_ok_and_bad_yaml(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("cluster: prod\nlabel_allowlist: [app, team]\ncollectors:\n  cadvisor:\n"
                    "    drop_labels: [id]\n    relabel_configs:\n"
                    "      - action: labeldrop\n        regex: image\n")
    assert run("check-config", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: [\n")
    out = run("check-config", str(bad))
    assert out.returncode == 2 and "invalid YAML at line" in out.stderr


def test_transform_matches_served_join(tmp_path):
    out = run("transform", "--source", "cadvisor", "--pods",
              str(Fixtures("kubelet") / "nri-k8s-1.35-kubelet-pods.json"),
              str(Fixtures("cadvisor") / "nri-k8s-1.35-kubelet-metrics-cadvisor.txt"))
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines()
                if ln.startswith("container_memory_working_set_bytes{") and 'pod="coredns-' in ln
                and 'cgroup_kind="container"' in ln)
    assert 'workload="coredns"' in line and 'label_k8s_app="kube-dns"' in line


def test_transform_bad_inputs_exit_nonzero_with_line(tmp_path):
    payload = tmp_path / "p.txt"
    payload.write_text('# TYPE g gauge\ng{a="1"} 1\ng{a="2"} nope\n')
    out = run("transform", "--source", "kubelet", str(payload))
    assert out.returncode == 1 and ":3:" in out.stderr and 'g{a="1"' in out.stdout
    pods = tmp_path / "pods.json"
    pods.write_text('{"items": [\n  {"metadata": }\n]}')
    out = run("transform", "--source", "kubelet", "--pods", str(pods), str(payload))
    assert out.returncode == 1 and "pods.json:2:" in out.stderr
    out = run("transform", "--source", "nope", str(payload))
    assert out.returncode == 2 and "one of" in out.stderr


def test_run_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}",
                                   "kubelet": {"url": "https://127.0.0.1:1"}}))
    proc = subprocess.Popen([*KB, "run", "--config", str(cfg), "--no-collector.probes",
                             "--log.format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        import urllib.request
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'kubebridge_up{collector="cadvisor"} 0' in body  # kubelet unreachable: still 200
        assert 'collector="probes"' not in body  # the flag overrode the default
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
        assert time.monotonic() - start < 25
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert '"level"' in err  # JSON logs
