"""Property tests: invoices agree with rated usage exactly, whatever the prices and currencies.

Prices go down to 1e-9 per token (0.001 per 1M) and below; currencies with 0, 2 and 3 minor
digits. For every generated month: total == sum of rounded lines, exactly; sum of unrounded
lines == sum of the events' costs, exactly; each line is rounded once, half to even.
"""

import decimal
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.money import currency_exponent
from invoicing import services
from metering.models import UsageEvent
from tests import factories
from tests.invoicing.helpers import record_generated, utc

pytestmark = pytest.mark.django_db

# Per 1M tokens: an integer of up to 9 digits scaled by 10^-3 .. 10^-12 (1e-9 per token is 0.001).
prices = st.builds(lambda n, places: Decimal(n).scaleb(-places), st.integers(1, 10**9), st.integers(3, 12))


@st.composite
def usage(draw):
    tokens = draw(st.integers(0, 3_000_000))
    cached = draw(st.integers(0, tokens))
    cache_write = draw(st.integers(0, tokens - cached))
    return {
        "model": draw(st.sampled_from(["gpt-4o", "claude-x"])),
        "day": draw(st.integers(1, 30)),
        "input_tokens": tokens,
        "cached": cached,
        "cache_write": cache_write,
        "output_tokens": draw(st.integers(0, 1_000_000)),
    }


class _Rollback(Exception):
    pass


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    currency=st.sampled_from(["JPY", "USD", "KWD"]),
    rates=st.lists(prices, min_size=8, max_size=8),
    second_version=st.booleans(),
    events=st.lists(usage(), min_size=1, max_size=12),
)
def test_invoice_agrees_with_rated_usage(db, currency, rates, second_version, events):
    try:
        with transaction.atomic():
            _check(currency, rates, second_version, events)
            raise _Rollback
    except _Rollback:
        pass


def _check(currency, rates, second_version, events):
    plan = factories.PricePlanFactory(slug="prop", currency=currency)
    for index, model in enumerate(["gpt-4o", "claude-x"]):
        inp, out, cached, write = rates[index * 4 : index * 4 + 4]
        factories.PriceFactory(
            plan=plan,
            model_pattern=model,
            input_per_mtok=inp,
            output_per_mtok=out,
            cached_input_per_mtok=cached,
            cache_write_per_mtok=write,
        )
        if second_version:  # a price change in the middle of the month
            factories.PriceFactory(
                plan=plan,
                model_pattern=model,
                effective_from=utc(2026, 10, 15),
                input_per_mtok=out,
                output_per_mtok=inp,
            )
    tenant = factories.TenantFactory(slug="prop", price_plan=plan, currency=currency)
    key, _ = factories.issue_api_key(tenant)
    record_generated(key, events)
    invoice, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=utc(2026, 11, 10))
    invoice, _ = services.invoice_finalize(invoice=invoice, now=utc(2026, 11, 10))
    lines = list(invoice.lines.all())
    event_costs = sum((e.cost for e in UsageEvent.objects.filter(tenant=tenant)), Decimal(0))
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    assert invoice.subtotal == sum((line.amount for line in lines), Decimal(0))
    assert sum((line.amount_unrounded for line in lines), Decimal(0)) == event_costs == invoice.unrounded_total
    assert invoice.amount_due + invoice.credits_applied == invoice.subtotal
    for line in lines:
        assert line.amount == line.amount_unrounded.quantize(quantum, rounding=ROUND_HALF_EVEN)
        with decimal.localcontext(prec=80):
            assert line.amount_unrounded * 1_000_000 == line.quantity * line.unit_price_per_mtok
