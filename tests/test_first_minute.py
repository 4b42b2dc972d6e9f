"""An operator's first minute: the start line, errors without object reprs, node_exporter's web
flags, one spelling of the listen flag."""
from __future__ import annotations

import time

from exporter import __version__
from exporter.cli import parser
from tests.realprom import free_port
from tests.webkit import get, kubebridge


def wait_for(predicate, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition never met")
        time.sleep(0.1)


def test_start_line_and_errors_without_reprs(tmp_path):
    kubelet = f"https://127.0.0.1:{free_port()}"  # nothing listens: the first errors are connect errors
    cfg = tmp_path / "kubebridge.yaml"
    cfg.write_text(f"cluster: prod\nnode_name: node-7\nkubelet:\n  url: {kubelet}\n")
    with kubebridge(tmp_path, "--config", str(cfg)) as kb:
        wait_for(lambda: "listening on" in kb.output())
        first = kb.output().splitlines()[0]
        for part in (f"kubebridge {__version__}", f"listening on http://127.0.0.1:{kb.port}/metrics",
                     "no TLS, no auth", "collectors: cadvisor, healthz, kubelet, pods, probes, stats_summary",
                     f"kubelet: {kubelet}", "node: node-7", "cluster: prod"):
            assert part in first, (part, first)
        assert get(f"http://{kb.base}/metrics").status == 200
        wait_for(lambda: "collector cadvisor: connect" in kb.output())
        wait_for(lambda: "pod index: connect" in kb.output())
        out = kb.output()
        assert "object at 0x" not in out and "ssl:<" not in out, out
        assert f"cannot connect to 127.0.0.1:{kubelet.rsplit(':', 1)[1]}" in out, out
        pod_lines = [ln for ln in out.splitlines() if "pod index: connect" in ln]
        assert len(pod_lines) == 1, pod_lines  # the same failure again is not logged again


def test_telemetry_path_and_disable_exporter_metrics(tmp_path):
    with kubebridge(tmp_path, "--collector.disable-defaults", "--web.telemetry-path", "/internal/metrics",
                    "--web.disable-exporter-metrics") as kb:
        assert get(f"http://{kb.base}/metrics").status == 404
        r = get(f"http://{kb.base}/internal/metrics")
        assert r.status == 200
        text = r.body.decode()
        assert "kubebridge_build_info" in text
        assert "process_" not in text and "python_" not in text
        landing = get(f"http://{kb.base}/").body.decode()
        assert 'href="internal/metrics"' in landing


def test_collector_disable_defaults_keeps_only_the_named(tmp_path):
    cfg = tmp_path / "kubebridge.yaml"
    cfg.write_text(f"kubelet:\n  url: https://127.0.0.1:{free_port()}\ncollectors:\n  etcd:\n"
                   "    enabled: true\n    members: [{url: 'http://127.0.0.1:1'}]\n")
    flags = ("--collector.disable-defaults", "--collector.kubelet")
    with kubebridge(tmp_path, "--config", str(cfg), *flags) as kb:
        text = get(f"http://{kb.base}/metrics").body.decode()
        ups = sorted(ln.split('"')[1] for ln in text.splitlines() if ln.startswith("kubebridge_up{"))
        assert ups == ["etcd", "kubelet"], ups  # enabled by the file and by the flag; cadvisor off
        assert "process_cpu_seconds_total" in text  # exporter metrics stay on by default


def test_one_spelling_of_the_listen_flag():
    demo = parser().parse_args(["demo", "--web.listen-address", "127.0.0.1:9600"])
    assert demo.listen_address == "127.0.0.1:9600"
    assert parser().parse_args(["demo"]).listen_address == "127.0.0.1:9500"
    old = parser().parse_args(["demo", "--listen", "127.0.0.1:9601"])  # the old spelling, hidden
    assert old.listen_address == "127.0.0.1:9601"
    run = parser().parse_args(["run", "--web.listen-address", "0.0.0.0:9100"])
    assert run.listen_address == "0.0.0.0:9100"
    demo_help = parser()._subparsers._group_actions[0].choices["demo"].format_help()  # type: ignore[union-attr]
    assert "--web.listen-address" in demo_help and "--listen " not in demo_help


async def test_describe_a_real_tls_connection_error():
    # The original symptom: aiohttp's message for a refused HTTPS connection names the context
    # object (`ssl:<ssl.SSLContext object at 0x…>`).
    import ssl

    import aiohttp

    from exporter.errors import describe
    port = free_port()
    async with aiohttp.ClientSession() as session:
        try:
            await session.get(f"https://127.0.0.1:{port}/pods", ssl=ssl.create_default_context())
        except aiohttp.ClientConnectorError as exc:
            assert "object at 0x" in str(exc)  # (what used to be logged)
            assert describe(exc) == f"cannot connect to 127.0.0.1:{port}: Connection refused"
        else:
            raise AssertionError("nothing listens there")


def test_log_filter_scrubs_reprs_from_any_logger(capsys):
    import logging

    from exporter import logs
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("info", "text")
        logging.getLogger("aiohttp.client").warning("Cannot connect ssl:%s [x]", object())
        err = capsys.readouterr().err
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert "ssl:object [x]" in err and "0x" not in err, err
