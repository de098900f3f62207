"""Property: with random service tiers and token mixes, money agrees everywhere.

Events go through POST /api/v1/events/batch (rated, stored and charged as in production), the
month is closed into an invoice. For every example: the invoice's subtotal is the sum of its
rounded lines, exactly; its unrounded lines sum to the events' costs, exactly; each batch's
ledger charge is the batch's summed cost rounded once to 6 places, half to even (docs/billing-rules.md
section 5), so it differs from the events' prices by at most 0.0000005.
"""

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import LedgerEntry
from invoicing import services as invoicing_services
from metering.models import UsageEvent
from tests import factories

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
MONTH = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)  # the events' month
HALF_MICRO = Decimal("0.0000005")
prices = st.builds(lambda n, places: Decimal(n).scaleb(-places), st.integers(1, 10**9), st.integers(3, 12))
TIERS = ("default", "priority", "flex", "batch")


@st.composite
def event(draw):
    tokens = draw(st.integers(0, 400_000))
    cached = draw(st.integers(0, tokens))
    write = draw(st.integers(0, tokens - cached))
    output = draw(st.integers(0, 100_000))
    return {
        "model": "tiered",
        "service_tier": draw(st.sampled_from(TIERS)),
        "input_tokens": tokens,
        "cached_input_tokens": cached,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": draw(st.integers(0, write)),
        "output_tokens": output,
        "reasoning_tokens": draw(st.integers(0, output)),
        "timestamp": (MONTH + dt.timedelta(hours=draw(st.integers(0, 400)))).isoformat(),
    }


class _Rollback(Exception):
    pass


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rates=st.lists(prices, min_size=9, max_size=9),
    tier_rows=st.sets(st.sampled_from(TIERS[1:])),
    batches=st.lists(st.lists(event(), min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_invoice_and_ledger_agree_with_the_events(key_a, tenant_a, plan, any_past_timestamp, rates, tier_rows, batches):
    try:
        with transaction.atomic():
            _check(key_a, tenant_a, plan, rates, tier_rows, batches)
            raise _Rollback
    except _Rollback:
        pass


def _check(key_a, tenant_a, plan, rates, tier_rows, batches):
    inp, out, cached, write, write_1h, reasoning, tier_in, tier_out, tier_cached = rates
    common = {"plan": plan, "model_pattern": "tiered", "effective_from": T0}
    factories.PriceFactory(
        **common, input_per_mtok=inp, output_per_mtok=out, cached_input_per_mtok=cached, cache_write_per_mtok=write,
        cache_write_1h_per_mtok=write_1h, reasoning_per_mtok=reasoning, tier_threshold=200_000,
        tier_input_per_mtok=tier_in, tier_output_per_mtok=tier_out, tier_cached_input_per_mtok=tier_cached,
    )  # fmt: skip
    for n, tier in enumerate(sorted(tier_rows)):
        factories.PriceFactory(
            **common, service_tier=tier, input_per_mtok=inp * (n + 2), output_per_mtok=out / (n + 2),
            tier_threshold=100_000, tier_input_per_mtok=tier_in,
        )  # fmt: skip
    serial = 0
    for batch in batches:
        for item in batch:
            serial += 1
            item["request_id"] = f"p-{serial}"
        before = set(LedgerEntry.objects.filter(tenant=tenant_a, kind="usage").values_list("pk", flat=True))
        response = key_a.post("/api/v1/events/batch", {"events": batch})
        assert response.status_code == 200, response.content
        assert all(item["status"] == "accepted" for item in response.json()["results"]), response.json()
        ids = [item["request_id"] for item in batch]
        costs = sum(UsageEvent.objects.filter(tenant=tenant_a, request_id__in=ids).values_list("cost", flat=True))
        charged = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage").exclude(pk__in=before)
        charge = -sum(entry.amount for entry in charged)
        assert charge == costs.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
        assert abs(charge - costs) <= HALF_MICRO

    # Closed now: after every event was received (ingest stamps received_at with the present).
    invoice, _ = invoicing_services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=1, now=timezone.now())
    lines = list(invoice.lines.all())
    assert invoice.subtotal == sum((line.amount for line in lines), Decimal(0))
    events = UsageEvent.objects.filter(tenant=tenant_a)
    assert sum((line.amount_unrounded for line in lines), Decimal(0)) == sum(e.cost for e in events)
    # A line per tier that has tokens (an event of 0 tokens costs nothing and makes no line).
    with_tokens = events.exclude(input_tokens=0, output_tokens=0)
    assert {line.service_tier for line in lines} == set(with_tokens.values_list("service_tier", flat=True))
