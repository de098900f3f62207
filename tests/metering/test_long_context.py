"""The tier choice is made once, when an event is rated, and stored on it (UsageEvent.long_context).

Invoices group by the stored choice instead of re-deriving it; the migration that added the
column gave events already stored the same choice.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.services.pricing import price_add
from invoicing import services as invoicing
from metering.models import UsageEvent
from metering.services.rerate import usage_rerate_unpriced
from tests import factories
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db

TIERED = {
    "input_per_mtok": "1.25",
    "output_per_mtok": "5",
    "tier_threshold": 200_000,
    "tier_input_per_mtok": "2.5",
    "tier_output_per_mtok": "10",
}


def _post(cred, request_id: str, input_tokens: int, *, model: str = "gemini-pro") -> dict:
    body = EventBodyFactory(request_id=request_id, model=model, input_tokens=input_tokens, output_tokens=1000)
    response = cred.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_ingest_stores_the_tier_choice_and_the_invoice_line_uses_the_tier_rate(key_a, tenant_a, plan):
    factories.PriceFactory(plan=plan, model_pattern="gemini-pro", **TIERED)
    _post(key_a, "at-threshold", 200_000)
    _post(key_a, "above-threshold", 200_001)
    stored = dict(UsageEvent.objects.filter(tenant=tenant_a).values_list("request_id", "long_context"))
    assert stored == {"at-threshold": False, "above-threshold": True}

    now = timezone.now() + dt.timedelta(seconds=1)
    invoice, _ = invoicing.invoice_draft_refresh(tenant=tenant_a, year=now.year, month=now.month, now=now)
    # The current month in the tenant's zone: both events are in it (the zone is UTC for tenant_a).
    tiered = invoice.lines.get(model="gemini-pro", token_kind="input", long_context=True)
    base = invoice.lines.get(model="gemini-pro", token_kind="input", long_context=False)
    assert (tiered.quantity, tiered.unit_price_per_mtok) == (200_001, Decimal("2.5"))
    assert (base.quantity, base.unit_price_per_mtok) == (200_000, Decimal("1.25"))
    output = invoice.lines.get(model="gemini-pro", token_kind="output", long_context=True)
    assert output.unit_price_per_mtok == Decimal("10")


def test_an_event_without_a_tier_is_not_long_context(key_a, tenant_a):
    _post(key_a, "big-gpt-4o", 900_000, model="gpt-4o")
    assert UsageEvent.objects.get(tenant=tenant_a).long_context is False


def test_rerate_stores_the_tier_choice_of_the_price_it_applies(key_a, tenant_a, plan):
    response = key_a.post(
        "/api/v1/events",
        EventBodyFactory(request_id="late-price", model="gemini-pro", input_tokens=300_000, output_tokens=10),
    )
    assert response.status_code == 201
    assert UsageEvent.objects.get(request_id="late-price").cost is None
    price_add(
        plan=plan,
        model_pattern="gemini-pro",
        input_per_mtok=Decimal("1.25"),
        output_per_mtok=Decimal(5),
        tier_threshold=200_000,
        tier_input_per_mtok=Decimal("2.5"),
        effective_from=timezone.now() - dt.timedelta(days=1),
        actor_label="test",
    )
    assert usage_rerate_unpriced(actor_label="test").priced == 1
    event = UsageEvent.objects.get(request_id="late-price")
    assert event.long_context is True
    assert event.cost == Decimal("0.75005")  # 300,000 x 2.5 + 10 x 5 (base output), per 1M


BEFORE = [("metering", "0005_unpriced_usage_notice")]
AFTER = [("metering", "0006_usage_event_long_context")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_tier_choice_of_stored_events(tenant_a, plan):
    tiered = factories.PriceFactory(plan=plan, model_pattern="gemini-pro", **TIERED)
    flat = plan.prices.get(model_pattern="gpt-4o")
    key, _ = factories.issue_api_key(tenant_a)
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old_event = executor.loader.project_state(BEFORE).apps.get_model("metering", "UsageEvent")
        at = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
        for request_id, price, input_tokens in [
            ("tier-above", tiered, 200_001),
            ("tier-at", tiered, 200_000),
            ("no-tier", flat, 900_000),
            ("unpriced", None, 900_000),
        ]:
            old_event.objects.create(
                tenant_id=tenant_a.pk, api_key_id=key.pk, request_id=request_id, model="m",
                input_tokens=input_tokens, output_tokens=0, occurred_at=at, received_at=at,
                cost=None if price is None else Decimal(1), currency="USD",
                price_id=None if price is None else price.pk, body_hash="0" * 64,
            )  # fmt: skip
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    stored = dict(UsageEvent.objects.values_list("request_id", "long_context"))
    assert stored == {"tier-above": True, "tier-at": False, "no-tier": False, "unpriced": False}
