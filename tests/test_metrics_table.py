"""docs/metrics.md lists exactly kubebridge's own families (the KSM `doccheck` habit)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
VOLATILE_ONLY = {"kubebridge_scrape_duration_seconds", "kubebridge_pod_index_last_sync_timestamp_seconds",
                 "kubebridge_scrape_errors_total",  # only after a failure; asserted in test_e2e
                 "kubebridge_pod_index_sync_failures_total",  # only after a failure; test_faults
                 "kubebridge_pod_index_syncs_total",  # filtered out of the golden files as volatile
                 # only with node_topology on (a live API server): asserted in test_topology
                 "kubebridge_node_topology_last_sync_timestamp_seconds",
                 "kubebridge_node_topology_syncs_total", "kubebridge_node_topology_errors_total",
                 # the statsd listener's socket counters (the offline replay has no socket) and
                 # errors (the golden capture is clean): asserted in test_statsd
                 "kubebridge_statsd_packets_total", "kubebridge_statsd_socket_drops_total",
                 "kubebridge_statsd_parse_errors_total", "kubebridge_statsd_refused_total",
                 # only with cluster_collector on (a live API server): asserted in test_sharding
                 "kubebridge_shard_info", "kubebridge_shard_nodes", "kubebridge_shard_cluster_nodes",
                 "kubebridge_shard_nodes_unreachable", "kubebridge_shard_node_watch_up"}


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(kubebridge_\w+)` \| (\w+) \|", (ROOT / "docs" / "metrics.md").read_text(), re.M)
    return dict(rows)


def exposed() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in (ROOT / "tests" / "golden").glob("*.txt"):
        for name, kind in re.findall(r"^# TYPE (kubebridge_\w+) (\w+)$", path.read_text(), re.M):
            found[name] = kind
    return found


def test_every_exposed_family_is_documented_with_its_type():
    docs = documented()
    for name, kind in exposed().items():
        assert name in docs, f"{name} is exposed but not in docs/metrics.md"
        assert docs[name] == kind, f"{name}: documented as {docs[name]}, exposed as {kind}"


def test_every_documented_family_is_exposed():
    missing = set(documented()) - set(exposed()) - VOLATILE_ONLY
    assert not missing, f"documented but in no golden file: {sorted(missing)}"
