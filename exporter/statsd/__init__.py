"""StatsD / DogStatsD ingestion for the node agent (the `statsd` collector's framework part).

- `protocol`: the line protocol (StatsD and the DogStatsD extensions), line by line, strict.
- `mapping`: statsd_exporter's `mappings` YAML (glob and regex rules -> name and labels).
- `origin`: which pod sent a datagram (source IP, Unix peer credentials, explicit entity id).
- `store`: the aggregated series, their budgets and TTL, encoded as families.
- `ingest`: the hot path from datagram to store, with its cache of resolved lines.
- `listener`: the UDP and Unix datagram sockets and their receiver threads.
"""
