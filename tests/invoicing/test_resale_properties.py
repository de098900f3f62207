"""Property test of resale: for random markups, exchange rates and token mixes, a sell plan's
invoice total is the sum of its rounded lines, its cost the sum of the lines' rounded cost, the
lines' exact amounts and costs sum to the events' costs and cost bases, and the margin is
revenue - cost exactly, per event, per line and per invoice (and so in the finance export)."""

import csv
import io
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.money import currency_exponent
from billing.services.resale import exchange_rate_set, markup_set, plan_set_cost_plan
from invoicing import exports, services
from metering.models import UsageEvent
from tests import factories
from tests.invoicing.helpers import record_generated, utc

pytestmark = pytest.mark.django_db

# Per 1M tokens, 0.001 .. 1,000,000 with up to 12 places; factors with the columns' places.
rates = st.builds(lambda n, places: Decimal(n).scaleb(-places), st.integers(1, 10**9), st.integers(3, 12))
markups = st.builds(lambda n: Decimal(n).scaleb(-6), st.integers(0, 5 * 10**6))
fx_rates = st.builds(lambda n: Decimal(n).scaleb(-12), st.integers(10**8, 10**15))  # 0.0001 .. 1000


@st.composite
def usage(draw):
    tokens = draw(st.integers(0, 3_000_000))
    cached = draw(st.integers(0, tokens))
    return {
        "model": draw(st.sampled_from(["gpt-4o", "claude-x"])),
        "day": draw(st.integers(1, 30)),
        "input_tokens": tokens,
        "cached": cached,
        "cache_write": draw(st.integers(0, tokens - cached)),
        "output_tokens": draw(st.integers(0, 1_000_000)),
    }


class _Rollback(Exception):
    pass


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    currency=st.sampled_from(["CNY", "JPY", "KWD", "USD"]),
    cost_rates=st.lists(rates, min_size=6, max_size=6),
    plan_markup=markups,
    model_markup=markups,
    fx=fx_rates,
    events=st.lists(usage(), min_size=1, max_size=10),
)
def test_resold_invoice_agrees_with_dual_rated_usage(db, currency, cost_rates, plan_markup, model_markup, fx, events):
    try:
        with transaction.atomic():
            _check(currency, cost_rates, plan_markup, model_markup, fx, events)
            raise _Rollback
    except _Rollback:
        pass


def _check(currency, cost_rates, plan_markup, model_markup, fx, events):
    provider = factories.PricePlanFactory(slug="prop-cost", currency="USD")
    for index, model in enumerate(["gpt-4o", "claude-x"]):
        inp, out, cached = cost_rates[index * 3 : index * 3 + 3]
        factories.PriceFactory(
            plan=provider,
            model_pattern=model,
            input_per_mtok=inp,
            output_per_mtok=out,
            cached_input_per_mtok=cached,
            tier_threshold=1_000_000,
            tier_input_per_mtok=inp * 2,
        )
    sell = factories.PricePlanFactory(slug="prop-sell", currency=currency)
    plan_set_cost_plan(plan=sell, cost_plan=provider, actor_label="prop")
    if currency != "USD":
        exchange_rate_set(base="USD", quote=currency, rate=fx, actor_label="prop", effective_from=utc(2026, 1, 1))
    markup_set(plan=sell, model_pattern="*", multiplier=plan_markup, actor_label="prop", effective_from=utc(2026, 1, 1))
    markup_set(
        plan=sell, model_pattern="claude-*", multiplier=model_markup, actor_label="prop", effective_from=utc(2026, 1, 2)
    )
    tenant = factories.TenantFactory(slug="prop", price_plan=sell, currency=currency)
    key, _ = factories.issue_api_key(tenant)
    record_generated(key, events)
    invoice, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=utc(2026, 11, 10))
    invoice, _ = services.invoice_finalize(invoice=invoice, now=utc(2026, 11, 10))
    lines = list(invoice.lines.all())
    stored = list(UsageEvent.objects.filter(tenant=tenant))
    quantum = Decimal(1).scaleb(-currency_exponent(currency))

    assert all(e.cost is not None and e.cost_basis is not None for e in stored)
    assert invoice.subtotal == sum((line.amount for line in lines), Decimal(0))
    assert invoice.cost_basis == sum((line.cost_basis for line in lines), Decimal(0))
    assert sum((line.amount_unrounded for line in lines), Decimal(0)) == sum((e.cost for e in stored), Decimal(0))
    assert sum((line.cost_basis_unrounded for line in lines), Decimal(0)) == sum(
        (e.cost_basis for e in stored), Decimal(0)
    )
    for line in lines:
        assert line.amount == line.amount_unrounded.quantize(quantum, rounding=ROUND_HALF_EVEN)
        assert line.cost_basis == line.cost_basis_unrounded.quantize(quantum, rounding=ROUND_HALF_EVEN)

    # The finance export: margin = revenue - cost exactly, on the invoice row and every line.
    rows = list(csv.DictReader(io.StringIO(exports.bills_csv(period="2026-10").decode())))
    (head,) = [row for row in rows if row["record"] == "invoice"]
    assert Decimal(head["margin"]) == Decimal(head["subtotal"]) - Decimal(head["cost"])
    assert Decimal(head["cost"]) == invoice.cost_basis
    line_rows = [row for row in rows if row["record"] == "line"]
    assert len(line_rows) == len(lines)
    for row in line_rows:
        assert Decimal(row["margin"]) == Decimal(row["amount"]) - Decimal(row["cost"])
    assert sum(Decimal(row["margin"]) for row in line_rows) == Decimal(head["margin"])
