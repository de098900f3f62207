"""Prometheus metrics for ingest. Exported at /metrics with Django's own (django-prometheus)."""

import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from infra.cache import BoundedCache

logger = logging.getLogger(__name__)

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


class UnpricedCollector:
    """`tokenbill_unpriced_events_pending` (events stored without a price and still not charged)
    and `tokenbill_unpriced_models`, computed when /metrics is scraped: what an operator alerts
    on, unlike the counter above, which only ever grows. One indexed count (the partial index
    usage_event_unpriced), at most once per UNPRICED_GAUGE_SECONDS per process. No model label:
    model names come from clients, and a label per name would grow the series without bound.

    The gauge's name must differ from the counter's family (`tokenbill_unpriced_events`): the
    registry refuses the clash, and a worker would not boot. `describe` names both gauges
    without a query, so registering in AppConfig.ready touches no database.
    """

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(PENDING_GAUGE, PENDING_HELP)
        yield GaugeMetricFamily(MODELS_GAUGE, MODELS_HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from metering.selectors import unpriced_by_model  # noqa: PLC0415 (models load after this module)

        try:
            if settings.UNPRICED_GAUGE_SECONDS > 0:
                by_model = _UNPRICED_SNAPSHOT.get_or_load("all", unpriced_by_model)
            else:
                by_model = unpriced_by_model()
        except DatabaseError as exc:  # the scrape still answers, without these two gauges
            logger.warning("unpriced gauge not computed: the database failed (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(PENDING_GAUGE, PENDING_HELP, value=sum(by_model.values()))
        yield GaugeMetricFamily(MODELS_GAUGE, MODELS_HELP, value=len(by_model))


PENDING_GAUGE = "tokenbill_unpriced_events_pending"
PENDING_HELP = "Usage events stored without a price and not charged yet (rerate_unpriced charges them)."
MODELS_GAUGE = "tokenbill_unpriced_models"
MODELS_HELP = "Models with usage stored without a price."


_UNPRICED_SNAPSHOT: BoundedCache[dict[str, int]] = BoundedCache(
    "unpriced_gauge", max_size=1, ttl=lambda: settings.UNPRICED_GAUGE_SECONDS
)


UNPRICED_COLLECTOR = UnpricedCollector()
