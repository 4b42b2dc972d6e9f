"""Cluster-wide collection without a DaemonSet (Heapster's pattern), sharded by node.

A Deployment or StatefulSet runs the kubelet-facing node collectors (cadvisor, kubelet, probes,
resource, stats_summary, pods, healthz) against EVERY node's kubelet, directly
(`https://<InternalIP>:<kubelet port>`) or through the API server's node proxy, and scales
out by sharding the nodes:

- `membership`: which shard owns a node (sha256 of the name mod the shard count), and the
  shard's own number (static, or the StatefulSet ordinal in the pod name); or, with
  `membership: ready_pods`, rendezvous hashing over the Ready replicas (`peers`: their watch);
- `nodes`: the Node watch's handler: each node's kubelet address and topology (`NodeInfo`);
- `agent`: one node's collectors, pod index (fed by a pod watch on that node) and common
  labels (its `node`, `region`, `zone`, ...): the node agent's machinery, once per node;
- `pool`: the shard: watches Nodes, starts an agent for each node it owns and stops the agent
  of a node that left or moved, and merges the agents' families for `/metrics`.

The package imports kubernetes-asyncio (through exporter.kube.watch) only from `pool.run`.
See docs/sharding.md.
"""
