"""Prometheus metrics of the relay, exported at /metrics with the others."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "tokenbill_relay_requests_total", "Relayed calls by endpoint and answer status.", ["endpoint", "status"]
)
UPSTREAM_CALLS = Counter(
    "tokenbill_relay_upstream_calls_total",
    "Calls to each upstream by outcome (ok, http_4xx, http_429, http_5xx, connect_error, timeout).",
    ["upstream", "outcome"],
)
BREAKER_OPENED = Counter(
    "tokenbill_relay_breaker_opened_total", "Times an upstream's circuit breaker opened.", ["upstream"]
)
TTFT_SECONDS = Histogram(
    "tokenbill_relay_time_to_first_token_seconds",
    "Time from the call's arrival to the first byte of the upstream's answer.",
    ["upstream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ADMIT_SECONDS = Histogram(
    "tokenbill_relay_admit_seconds",
    "Time the relay spends before forwarding (key, limits, estimate, authorize with hold).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
USAGE = Counter(
    "tokenbill_relay_usage_total",
    "Relayed calls recorded, by token source (reported by the upstream, counted by the relay) or released.",
    ["source"],
)
RECORD_PENDING = Gauge(
    "tokenbill_relay_record_pending",
    "Finished calls waiting in this process's recorder (in memory: lost if the process is killed).",
    multiprocess_mode="livesum",
)
RECORD_BATCH = Histogram(
    "tokenbill_relay_record_batch_size",
    "Calls per recorder write (one ingest batch).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
ADMIT_GROUP = Histogram(
    "tokenbill_relay_admit_group_size",
    "Calls of one tenant whose holds were placed together (one commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
