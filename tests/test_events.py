"""events: list+watch against the replay apiserver counts each event occurrence exactly once,
across reconnects, 410 relists and count increments, and only on the elected leader."""
from __future__ import annotations

import asyncio

import pytest

from collectors._events import EventCounter, Rules, guess_pod, owner_of
from exporter.errors import NotPermittedError
from exporter.expfmt import encode_text
from tests.conftest import offline
from tests.conftest import Fixtures
from tests.replay_api import background, collector, config, event, eventually, fast, replay, value

TOTAL = "kubebridge_kube_events_total"


def test_golden_offline(golden):
    c = offline("events", {"cluster": "demo"})
    res = c.process((Fixtures("events") / "dd-kubernetes-events.json").read_bytes(),
                    (Fixtures("events") / "k9s-event.json").read_bytes())
    golden("events.txt", encode_text(res.families))
    assert value(res.families, TOTAL, involved_kind="ReplicaSet", workload="hello-node",
                 workload_kind="Deployment", reason="SuccessfulCreate") == 3
    # No pod list exists for that 2016 cluster, so its pods are guessed from their names; the
    # pre-1.8 decimal pod-template-hash reads as a CronJob's scheduled time (see guess_pod).
    assert value(res.families, TOTAL, involved_kind="Pod", reason="Scheduled", workload="hello-node") == 3
    assert value(res.families, TOTAL, reason="Pulled", workload="hello", workload_kind="CronJob") == 1


@pytest.mark.parametrize("kind,name,expected", [
    ("ReplicaSet", "coredns-7d764666f9", ("coredns", "Deployment")),
    ("ReplicaSet", "hello-node-47289321", ("hello-node", "Deployment")),  # pre-1.8 decimal hash
    ("ReplicaSet", "standalone", ("standalone", "ReplicaSet")),
    ("Job", "backup-29707813", ("backup", "CronJob")),
    ("Job", "migrate", ("migrate", "Job")),
    ("Node", "node-1", ("node-1", "Node")),
    ("StatefulSet", "db", ("db", "StatefulSet")),
])
def test_owner_resolution(kind, name, expected):
    assert owner_of(kind, name) == expected


def test_unknown_pods_are_guessed_conservatively():
    assert guess_pod("web-7d9f8c6b5d-x2x4z") == ("web", "Deployment")
    assert guess_pod("backup-29707813-h2f28") == ("backup", "CronJob")
    assert guess_pod("hello-1567197780-mn4mv") == ("hello", "CronJob")  # pre-1.21: seconds
    assert guess_pod("db-0") == ("db-0", "Pod")
    assert guess_pod("my-app-debug") == ("my-app-debug", "Pod")


def test_reason_allowlist_and_overrides():
    rules = Rules({"Pod": ["BackOff"], "Service": ["*"]})
    assert rules.reason("Pod", "BackOff") == "BackOff"
    assert rules.reason("Pod", "Pulled") == "Other"  # the override replaced the Pod list
    assert rules.reason("Node", "NodeNotReady") == "NodeNotReady"  # built-in table kept
    assert rules.reason("Service", "Whatever") == "Whatever"
    assert rules.reason("Ingress", "Sync") == "Other"
    assert Rules({"*": ["*"]}).reason("Ingress", "Sync") == "Sync"


def test_counter_dedupes_by_uid_and_count():
    c = EventCounter(Rules({}), lambda ns, pod: ("web", "Deployment"))
    ev = event("a.1", "BackOff", count=3) | {"metadata": {"uid": "u1", "name": "a.1"}}
    c.replace([ev], initial=True)  # history
    assert c.totals == {}
    c.apply("MODIFIED", ev | {"count": 5})
    c.apply("MODIFIED", ev | {"count": 5})  # e.g. a label change: no new occurrence
    c.replace([ev | {"count": 6}], initial=False)  # relist: only the growth
    c.replace([ev | {"count": 6}], initial=False)
    assert list(c.totals.values()) == [3]
    c.apply("ADDED", event("b.1", "x", count=1, kind="Service", involved="svc")
            | {"series": {"count": 4}, "metadata": {"uid": "u2"}})  # events.k8s.io series count
    assert c.totals[("default", "Service", "Other", "Warning", "svc", "Service")] == 4


async def test_history_not_counted_new_events_counted_once_with_workloads(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "events", tmp_path, kubeconfig=True), "events"))
        async with background(c):
            await eventually(lambda: len(c.reflectors) == 2 and all(r.synced.is_set() for r in c.reflectors))
            fams = await c.collect(5)
            assert value(fams, TOTAL) == 0 and value(fams, "kubebridge_events_leader") == 1
            srv.add_event(event("dns.1", "BackOff", involved="coredns-7d764666f9-qdcxt",
                                namespace="kube-system"))
            srv.add_event(event("sched.1", "Unhealthy", involved="kube-scheduler-datagen-1-35",
                                namespace="kube-system"))
            srv.add_event(event("node.1", "NodeNotReady", kind="Node", involved="datagen-1-35"))
            srv.add_event(event("odd.1", "SomethingNew"))
            await eventually(lambda: sum(c.counter.totals.values()) == 4)
            fams = await c.collect(5)
        assert value(fams, TOTAL, namespace="kube-system", involved_kind="Pod", reason="BackOff",
                     type="Warning", workload="coredns", workload_kind="Deployment") == 1
        assert value(fams, TOTAL, reason="Unhealthy", workload="kube-scheduler",
                     workload_kind="StaticPod") == 1
        assert value(fams, TOTAL, involved_kind="Node", reason="NodeNotReady", workload="datagen-1-35") == 1
        assert value(fams, TOTAL, reason="Other", workload="web", workload_kind="Deployment") == 1
        assert value(fams, "kubebridge_kube_event_last_seen_timestamp_seconds", workload="coredns",
                     reason="BackOff") == 1567197785  # the event's lastTimestamp
        text = encode_text(fams).decode()
        assert "dns.1" not in text and "qdcxt" not in text and "Back-off" not in text  # no names/messages


async def test_count_growth_and_disconnects_never_double_count(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "events", tmp_path, resolve_pods=False), "events"))
        async with background(c):
            await eventually(lambda: c.reflectors and c.reflectors[0].synced.is_set())
            r = c.reflectors[0]
            ev = srv.add_event(event("crash.1", "BackOff", count=3))
            await eventually(lambda: value(c._families().families, TOTAL) == 3)
            srv.disconnect_watches()  # mid-stream: resumed from the last resourceVersion
            srv.add_event(ev | {"count": 5})
            await eventually(lambda: r.restarts >= 1 and value(c._families().families, TOTAL) == 5)
            srv.add_event(ev | {"count": 5, "message": "same count, new message"})
            srv.add_event(event("kill.1", "Killing", type_="Normal"))
            await eventually(lambda: value(c._families().families, TOTAL, reason="Killing") == 1)
        assert value(c._families().families, TOTAL, reason="BackOff") == 5
        assert r.lists == 1 and r.expired == 0


async def test_410_relists_without_double_counting(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "events", tmp_path, resolve_pods=False), "events"))
        async with background(c):
            await eventually(lambda: c.reflectors and c.reflectors[0].synced.is_set())
            r = c.reflectors[0]
            a = srv.add_event(event("a.1", "BackOff"))
            await eventually(lambda: value(c._families().families, TOTAL) == 1)
            # While the collector cannot watch, A repeats twice, B happens, history is compacted.
            srv.forbid("/api/v1/events")
            srv.disconnect_watches()
            await eventually(lambda: isinstance(r.error, NotPermittedError))
            with pytest.raises(NotPermittedError):
                await c.collect(5)
            srv.add_event(a | {"count": 3})
            srv.add_event(event("b.1", "FailedMount"))
            srv.expire_history()
            srv.allow("/api/v1/events")
            await eventually(lambda: r.expired == 1 and r.lists == 2, what="410 then relist")
            fams = await c.collect(5)
            srv.disconnect_watches()  # and one more reconnect, now from the relist's RV
            srv.add_event(event("c.1", "Killing"))
            await eventually(lambda: value(c._families().families, TOTAL, reason="Killing") == 1)
        assert value(fams, TOTAL, reason="BackOff") == 3 and value(fams, TOTAL, reason="FailedMount") == 1
        assert value(c._families().families, TOTAL) == 5


async def test_refused_watch_recovers_from_the_same_resource_version(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "events", tmp_path, resolve_pods=False), "events"))
        async with background(c):
            await eventually(lambda: c.reflectors and c.reflectors[0].synced.is_set())
            r = c.reflectors[0]
            await eventually(lambda: srv.store.watchers, what="watch open")
            srv.forbid("/api/v1/events")
            srv.disconnect_watches()
            srv.add_event(event("during.1", "BackOff"))  # happens while we are refused
            await eventually(lambda: isinstance(r.error, NotPermittedError))
            srv.allow("/api/v1/events")
            await eventually(lambda: r.error is None and value(c._families().families, TOTAL) == 1)
            fams = await c.collect(5)  # the source is ok again while the watch stays open
        assert value(fams, TOTAL, reason="BackOff") == 1 and r.lists == 1 and r.expired == 0


async def test_bookmarks_advance_the_resource_version(tmp_path):
    async with replay(tmp_path) as srv:
        c = fast(collector(config(srv, "events", tmp_path, resolve_pods=False), "events"))
        async with background(c):
            await eventually(lambda: c.reflectors and c.reflectors[0].synced.is_set())
            r = c.reflectors[0]
            start = r.rv
            for i in range(5):  # writes the events watch does not see
                srv.add_pod({"metadata": {"name": f"churn-{i}", "namespace": "default"}})
            await eventually(lambda: srv.store.watchers, what="watch open")
            srv.send_bookmarks()
            await eventually(lambda: r.bookmarks == 1)
            assert int(r.rv) == srv.store.rv > int(start)
            srv.expire_history()  # older RVs are gone, the bookmarked one is not
            srv.disconnect_watches()
            srv.add_event(event("after.1", "BackOff"))
            await eventually(lambda: value(c._families().families, TOTAL) == 1)
        assert r.expired == 0 and r.lists == 1  # resumed without a relist


def _elected(srv, tmp_path, identity):
    cfg = config(srv, "events", tmp_path, top={"pod_namespace": "monitoring"}, resolve_pods=False,
                 leader_election=True, identity=identity, lease_duration=1.0,
                 lease_renew_deadline=0.6, lease_retry_period=0.1)
    return fast(collector(cfg, "events"))


async def test_leader_election_one_counts_and_a_successor_takes_over(tmp_path):
    async with replay(tmp_path) as srv:
        a, b = _elected(srv, tmp_path, "pod-a"), _elected(srv, tmp_path, "pod-b")
        tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
        try:
            await eventually(lambda: a.leader != b.leader and (a.reflectors or b.reflectors))
            leader, follower = (a, b) if a.leader else (b, a)
            await eventually(lambda: leader.reflectors[0].synced.is_set())
            lease = srv.store.get("leases", "monitoring", "kubebridge-events")
            assert lease["spec"]["holderIdentity"] == leader.opt["identity"]
            srv.add_event(event("one.1", "BackOff"))
            await eventually(lambda: value(leader._families().families, TOTAL) == 1)
            assert value(follower._families().families, TOTAL) == 0
            assert value(follower._families().families, "kubebridge_events_leader") == 0
            assert not follower.reflectors  # a follower does not even watch

            tasks[leader].cancel()  # the leader dies without releasing the lease
            await asyncio.gather(tasks[leader], return_exceptions=True)
            await eventually(lambda: follower.leader and follower.reflectors
                             and follower.reflectors[0].synced.is_set(), timeout=15, what="takeover")
            srv.add_event(event("two.1", "Killing"))
            await eventually(lambda: value(follower._families().families, TOTAL) == 1)
            assert value(follower._families().families, TOTAL, reason="BackOff") == 0  # history
            lease = srv.store.get("leases", "monitoring", "kubebridge-events")
            assert lease["spec"]["holderIdentity"] == follower.opt["identity"]
            assert lease["spec"]["leaseTransitions"] == 1
        finally:
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
