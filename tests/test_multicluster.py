"""Many clusters in one place, end to end: two demos with different `cluster` names, a Prometheus
in agent mode per demo, both remote-writing to one central Prometheus that runs the
remote-write receiver (the recipe in docs/multi-cluster.md; Thanos, Mimir and Cortex take the same
remote write). The central store holds both clusters with no collision, and every dashboard's
cluster variable lists both."""
from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path


from tests.realprom import demo, free_port, poll, prometheus_process, query

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ("east", "west")
# A family every node agent serves, joined to pods: the same pod names in both clusters.
JOINED = 'container_cpu_usage_seconds_total{collector="cadvisor",cgroup_kind="container"}'


def label_values(url: str, label: str, selector: str) -> list[str]:
    q = urllib.parse.urlencode({"match[]": selector})
    with urllib.request.urlopen(f"{url}/api/v1/label/{label}/values?{q}", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return sorted(body["data"])


def cluster_variables() -> dict[str, str]:
    """Dashboard file -> the selector of its `cluster` variable's `label_values(...)` query."""
    out = {}
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var.get("name") != "cluster":
                continue
            q = var.get("query")
            text = q.get("query", "") if isinstance(q, dict) else str(q or var.get("definition", ""))
            m = re.fullmatch(r"\s*label_values\((.*),\s*cluster\s*\)\s*", text)
            assert m, f"{path.name}: cluster variable is not a label_values query: {text!r}"
            out[path.name] = m.group(1)
    return out


def scraped(port: int) -> int:
    """Series matching JOINED in one demo's own /metrics."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"X-Prometheus-Scrape-Timeout-Seconds": "60"})
    with urllib.request.urlopen(request, timeout=90) as r:
        text = r.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("container_cpu_usage_seconds_total{")
               and 'collector="cadvisor"' in line and 'cgroup_kind="container"' in line)


def count_until(url: str, promql: str, want: int, deadline: float = 60.0) -> int:
    """The count a query reaches (remote write delivers in batches: wait for `want`)."""
    end = time.monotonic() + deadline
    got = 0
    while time.monotonic() < end:
        res = query(url, promql)
        got = int(float(res[0]["value"][1])) if res else 0
        if got == want:
            break
        time.sleep(1)
    return got


def test_two_clusters_through_agents_into_one_store(tmp_path):
    variables = cluster_variables()
    assert variables, "no dashboard has a cluster variable"
    with ExitStack() as stack:
        central = stack.enter_context(prometheus_process(
            tmp_path, "central", {"global": {"scrape_interval": "1h"}},
            "--web.enable-remote-write-receiver", f"--storage.tsdb.path={tmp_path / 'central'}"))
        ports = {}
        for cluster in CLUSTERS:
            ports[cluster] = port = free_port()
            stack.enter_context(demo(port, cluster))
            stack.enter_context(prometheus_process(tmp_path, f"agent-{cluster}", {
                "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                           "external_labels": {"prometheus": f"agent-{cluster}"}},
                "scrape_configs": [{"job_name": "kubebridge",
                                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                "remote_write": [{"url": f"{central}/api/v1/write",
                                  "queue_config": {"batch_send_deadline": "1s"}}],
            }, "--enable-feature=agent", f"--storage.agent.path={tmp_path / ('agent-' + cluster)}"))
        for cluster in CLUSTERS:
            poll(central, f'kubebridge_up{{cluster="{cluster}",collector="cadvisor"}} == 1', deadline=90)

        # No collision: each cluster's joined series arrive whole and apart, although both
        # demos replay the same pods.
        for cluster, port in ports.items():
            selector = JOINED.replace("{", f'{{cluster="{cluster}",', 1)
            want = scraped(port)
            assert want > 0
            assert count_until(central, f"count({selector})", want) == want, cluster
        both = query(central, f"count by (namespace, pod, container) ({JOINED}) == 2")
        assert both, "the same pod in two clusters should be two series"
        mixed = query(central, 'count by (cluster) ({__name__=~"kubebridge_.+", cluster=""})')
        assert mixed == [], "every kubebridge series carries its cluster"
        # Each series came through its own cluster's agent.
        for cluster in CLUSTERS:
            agents = label_values(central, "prometheus", f'kubebridge_up{{cluster="{cluster}"}}')
            assert agents == [f"agent-{cluster}"]

        # Every dashboard's cluster variable lists both clusters.
        for dashboard, selector in variables.items():
            assert label_values(central, "cluster", selector) == list(CLUSTERS), dashboard
