"""A real Prometheus scrapes `kubebridge demo`: the final judge of the exposition."""
from __future__ import annotations

from tests.realprom import demo, free_port, poll, prometheus, query, targets


def test_prometheus_scrapes_demo(tmp_path):
    port = free_port()
    with demo(port), prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
        up = poll(prom, 'up{job="kubebridge"} == 1')
        assert up[0]["value"][1] == "1"
        # A container's CPU carries its pod's join: no PromQL join needed.
        cpu = poll(prom, 'container_cpu_usage_seconds_total{cgroup_kind="container",pod=~"coredns.*"}')
        labels = cpu[0]["metric"]
        assert labels["label_k8s_app"] == "kube-dns"
        assert (labels["workload"], labels["workload_kind"]) == ("coredns", "Deployment")
        assert labels["namespace"] == "kube-system" and labels["node"] == "datagen-1-35"
        assert labels["cluster"] == "demo"
        # No scrape errors: healthy target, nothing rejected by the parser or the TSDB.
        (target,) = [t for t in targets(prom) if t["labels"]["job"] == "kubebridge"]
        assert target["health"] == "up" and target["lastError"] == "", target
        for metric in ("prometheus_target_scrapes_sample_duplicate_timestamp_total",
                       "prometheus_target_scrapes_sample_out_of_order_total",
                       "prometheus_target_scrapes_sample_out_of_bounds_total"):
            res = query(prom, metric)
            assert all(r["value"][1] == "0" for r in res), (metric, res)
        samples = poll(prom, 'scrape_samples_scraped{job="kubebridge"}')
        assert int(samples[0]["value"][1]) > 4000
        ok = poll(prom, 'kubebridge_up{collector="cadvisor"} == 1')
        assert ok
        # The demo includes the cluster agent (replay apiserver, etcd) and discovered app pods.
        # (The first, cold scrape of the 3 MB apiserver payload may miss this test's 1 s scrape
        # timeout; every later one makes it.)
        cluster = poll(prom, 'count(kubebridge_up{collector=~"apiserver|events|kube_system|etcd|etcd_v2|'
                             'autodiscovery"} == 1) == 6')
        assert cluster[0]["value"][1] == "6"


def test_one_container_without_joins(tmp_path):
    """The node agent's promise, checked by a real Prometheus: a container's CPU, memory, ephemeral
    storage, restarts and waiting reason all carry its workload, so no query needs a join."""
    port = free_port()
    with demo(port), prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
        def one(promql: str) -> dict:
            (row,) = poll(prom, promql)
            return row

        # A running container: every family, one selector each, one workload.
        sel = 'namespace="scraper",container="e2e-scraper"'
        rows = {
            "cpu": one(f'container_cpu_usage_seconds_total{{cgroup_kind="container",{sel}}}'),
            "memory": one(f'container_memory_working_set_bytes{{cgroup_kind="container",{sel}}}'),
            "ephemeral": one(f"kubebridge_stats_container_ephemeral_storage_used_bytes{{{sel}}}"),
            "restarts": one(f"kubebridge_pods_container_restarts_total{{{sel}}}"),
            "state": one(f'kubebridge_pods_container_state{{state="waiting",{sel}}}'),
        }
        owners = {(r["metric"]["workload"], r["metric"]["workload_kind"], r["metric"]["pod"])
                  for r in rows.values()}
        assert owners == {("e2e-scraper", "Deployment", "e2e-scraper-5f97dc94d8-vkcjl")}
        assert float(rows["ephemeral"]["value"][1]) == 13291520  # rootfs + logs
        assert rows["restarts"]["value"][1] == "0" and rows["state"]["value"][1] == "0"
        assert not query(prom, f"kubebridge_pods_container_waiting{{{sel}}}")

        # The capture's crash-looping container, between restarts (the demo shows it waiting).
        sel = 'namespace="scraper",pod="e2e-container-creating"'
        waiting = one(f'kubebridge_pods_container_waiting{{container="alpine",{sel}}}')
        assert waiting["metric"]["reason"] == "CrashLoopBackOff" and waiting["value"][1] == "1"
        restarts = one(f'kubebridge_pods_container_restarts_total{{container="alpine",{sel}}}')
        assert restarts["value"][1] == "2"
        last = one(f'kubebridge_pods_container_last_terminated{{container="alpine",{sel}}}')
        assert last["metric"]["reason"] == "Completed"
        # Its container had exited when cAdvisor was captured: CPU and memory are its pod cgroup's.
        cpu = one(f'container_cpu_usage_seconds_total{{cgroup_kind="pod",{sel}}}')
        memory = one(f'container_memory_working_set_bytes{{cgroup_kind="pod",{sel}}}')
        assert not query(prom, f'container_memory_working_set_bytes{{container="alpine",{sel}}}')
        owners = {r["metric"]["workload"] for r in (waiting, restarts, last, cpu, memory)}
        assert owners == {"e2e-container-creating"}
        # Alerts need no join either: crash loops by workload, straight from one family.
        alert = poll(prom, 'sum by (workload) '
                           '(kubebridge_pods_container_waiting{reason="CrashLoopBackOff"}) > 0')
        assert [a["metric"]["workload"] for a in alert] == ["e2e-container-creating"]
        ok = poll(prom, 'min(kubebridge_up{collector=~"stats_summary|pods|healthz"}) == 1')
        assert ok
