"""Prometheus metrics for ingest. Exported at /metrics with Django's own (django-prometheus)."""

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "tokenbill_ingest_events_total",
    "Usage events received, by outcome (accepted, duplicate, rejected) and rejection reason.",
    ["outcome", "reason"],
)
UNPRICED = Counter(
    "tokenbill_unpriced_events_total",
    "Usage events stored without a price (rated later when a price is added).",
)
REQUEST_SECONDS = Histogram(
    "tokenbill_ingest_request_seconds",
    "Time to handle an ingest request, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AUTHORIZE = Counter(
    "tokenbill_authorize_total",
    "Authorize answers by outcome (allowed, insufficient_balance, quota_exceeded, rate_limited, "
    "model_not_allowed, unpriced_model).",
    ["outcome"],
)
AUTHORIZE_SECONDS = Histogram(
    "tokenbill_authorize_seconds",
    "Time to decide an authorization (price, quotas, balance backend), without HTTP.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
INGEST_CEILING = Counter(
    "tokenbill_ingest_ceiling_refusals_total",
    "Ingest requests refused (429) because one credential passed INGEST_CEILING_PER_MINUTE.",
)
