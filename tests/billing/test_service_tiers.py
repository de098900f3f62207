"""Service tiers, 1-hour cache writes, reasoning tokens and length limits, through the API.

The worked examples of docs/billing-rules.md sections 9-11 (same numbers). Prices are per 1M.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import Price
from invoicing import services as invoicing_services
from metering.models import DailyUsage, UsageEvent
from metering.services.rollup import rollup_day
from tests import factories
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def api_key_a(key_a):
    return key_a.row


@pytest.fixture
def tiered(plan):
    """A gpt-5.4-like model: a 272k context tier; priority dearer (with its own long-context
    rates), batch cheaper (no tier of its own); no flex row. 1,050,000 input tokens at most."""
    common = {"plan": plan, "model_pattern": "tiered-1", "effective_from": T0, "max_input_tokens": 1_050_000}
    factories.PriceFactory(
        **common,
        input_per_mtok="2.5",
        output_per_mtok="15",
        cached_input_per_mtok="0.25",
        tier_threshold=272_000,
        tier_input_per_mtok="5",
        tier_output_per_mtok="22.5",
        tier_cached_input_per_mtok="0.5",
        max_output_tokens=128_000,
    )
    factories.PriceFactory(
        **common,
        service_tier="priority",
        input_per_mtok="5",
        output_per_mtok="30",
        cached_input_per_mtok="0.5",
        tier_threshold=272_000,
        tier_input_per_mtok="10",
        tier_output_per_mtok="45",
        tier_cached_input_per_mtok="1",
        max_output_tokens=128_000,
    )
    factories.PriceFactory(
        **common,
        service_tier="batch",
        input_per_mtok="1.25",
        output_per_mtok="7.5",
        cached_input_per_mtok="0.125",
        max_output_tokens=128_000,
    )
    return plan


def post_event(key, **fields):
    body = {"request_id": f"r-{fields.get('service_tier', 'none')}-{fields['input_tokens']}", "model": "tiered-1"}
    return key.post("/api/v1/events", {**body, **fields})


def test_example_priority_above_272k_with_cached_input(key_a, tiered):
    # 300,000 > 272,000: the whole request at priority's long-context rates.
    # (300,000 - 200,000) x 10 + 200,000 x 1 + 2,000 x 45 = 1,290,000 per 1M = 1.29
    response = post_event(
        key_a, input_tokens=300_000, cached_input_tokens=200_000, output_tokens=2_000, service_tier="priority"
    )
    assert response.status_code == 201, response.content
    assert Decimal(response.json()["cost"]) == Decimal("1.29")
    event = UsageEvent.objects.get(request_id="r-priority-300000")
    assert (event.service_tier, event.long_context) == ("priority", True)
    assert event.price_id == Price.objects.get(model_pattern="tiered-1", service_tier="priority").pk
    # The same request on the default tier: 100,000 x 5 + 200,000 x 0.5 + 2,000 x 22.5 = 645,000 -> 0.645
    default = post_event(key_a, input_tokens=300_000, cached_input_tokens=200_000, output_tokens=2_000)
    assert Decimal(default.json()["cost"]) == Decimal("0.645")
    assert UsageEvent.objects.get(request_id="r-none-300000").service_tier == "default"


def test_example_batch_request_and_a_tier_without_a_row(key_a, tiered):
    # Batch: 6,000 x 1.25 + 4,000 x 0.125 + 1,000 x 7.5 = 15,500 per 1M = 0.0155
    batch = post_event(key_a, input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000, service_tier="batch")
    assert Decimal(batch.json()["cost"]) == Decimal("0.0155")
    # Flex has no row in this version: the default row prices it.
    # 6,000 x 2.5 + 4,000 x 0.25 + 1,000 x 15 = 31,000 -> 0.031
    flex = post_event(key_a, input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000, service_tier="flex")
    assert Decimal(flex.json()["cost"]) == Decimal("0.031")
    event = UsageEvent.objects.get(request_id="r-flex-10000")
    assert event.service_tier == "flex"
    assert event.price_id == Price.objects.get(model_pattern="tiered-1", service_tier="default").pk


def test_a_newer_version_without_the_tier_row_prices_the_tier_at_its_default(key_a, tiered):
    factories.PriceFactory(
        plan=tiered, model_pattern="tiered-1", effective_from=T0 + dt.timedelta(days=30), input_per_mtok="3",
        output_per_mtok="15",
    )  # fmt: skip
    # The version in force has no priority row: its default row applies, not the older priority row.
    response = post_event(key_a, input_tokens=1_000, output_tokens=0, service_tier="priority")
    assert Decimal(response.json()["cost"]) == Decimal("0.003")


def test_an_unknown_service_tier_is_refused_naming_the_field(key_a, tiered):
    response = post_event(key_a, input_tokens=10, output_tokens=1, service_tier="turbo")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "service_tier"
    assert "default, priority, flex, batch" in response.json()["error"]["message"]
    for wrong in (None, 1, ["priority"], "PRIORITY", " priority"):
        assert post_event(key_a, input_tokens=11, output_tokens=1, service_tier=wrong).status_code == 400
    assert not UsageEvent.objects.exists()


def test_in_a_batch_only_the_item_with_a_bad_tier_is_rejected(key_a, tiered):
    events = [
        {"request_id": "ok-1", "model": "tiered-1", "input_tokens": 10, "output_tokens": 1, "service_tier": "flex"},
        {"request_id": "bad", "model": "tiered-1", "input_tokens": 10, "output_tokens": 1, "service_tier": "fast"},
        {"request_id": "ok-2", "model": "tiered-1", "input_tokens": 10, "output_tokens": 1},
    ]
    response = key_a.post("/api/v1/events/batch", {"events": events})
    items = response.json()["results"]
    assert [item["status"] for item in items] == ["accepted", "rejected", "accepted"]
    assert items[1]["error"]["field"] == "service_tier"
    assert sorted(UsageEvent.objects.values_list("request_id", "service_tier")) == [
        ("ok-1", "flex"),
        ("ok-2", "default"),
    ]


def test_one_hour_cache_writes_and_reasoning_tokens(key_a, plan):
    factories.PriceFactory(
        plan=plan,
        model_pattern="claude-like",
        effective_from=T0,
        input_per_mtok="3",
        output_per_mtok="15",
        cached_input_per_mtok="0.3",
        cache_write_per_mtok="3.75",
        cache_write_1h_per_mtok="6",
    )
    # 20,000 x 3 + 20,000 x 3.75 + 10,000 x 6 + 500 x 15 + 1,500 x 15 (no reasoning rate: output)
    # = 225,000 per 1M = 0.225
    body = {
        "request_id": "cw",
        "model": "claude-like",
        "input_tokens": 50_000,
        "cache_write_tokens": 30_000,
        "cache_write_1h_tokens": 10_000,
        "output_tokens": 2_000,
        "reasoning_tokens": 1_500,
    }
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    assert Decimal(response.json()["cost"]) == Decimal("0.225")
    event = UsageEvent.objects.get(request_id="cw")
    assert (event.cache_write_1h_tokens, event.reasoning_tokens) == (10_000, 1_500)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cache_write_tokens": 5, "cache_write_1h_tokens": 6}, "cache_write_1h_tokens"),
        ({"output_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens"),
    ],
)
def test_parts_larger_than_their_kind_are_refused(key_a, plan, fields, field):
    body = {"request_id": "p", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 10, **fields}
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field


def test_a_reasoning_rate_of_its_own(key_a, plan):
    factories.PriceFactory(
        plan=plan, model_pattern="thinker", effective_from=T0, input_per_mtok="1", output_per_mtok="4",
        reasoning_per_mtok="3.5",
    )  # fmt: skip
    # 1,000 x 1 + 1,000 x 4 + 2,000 x 3.5 = 12,000 per 1M = 0.012
    body = {
        "request_id": "t",
        "model": "thinker",
        "input_tokens": 1000,
        "output_tokens": 3000,
        "reasoning_tokens": 2000,
    }
    assert Decimal(key_a.post("/api/v1/events", body).json()["cost"]) == Decimal("0.012")


# --- authorize ------------------------------------------------------------------------------


def authorize(key, **fields):
    body = {"model": "tiered-1", "estimated_input_tokens": 1000, "max_output_tokens": 500, **fields}
    return key.post("/api/v1/authorize", body)


def test_authorize_estimates_at_the_tier_price(key_a, tenant_a, tiered):
    factories.topup(tenant_a, "10")
    # 1,000 x 2.5 + 500 x 15 = 10,000 per 1M = 0.01; priority: 1,000 x 5 + 500 x 30 = 0.02
    assert authorize(key_a).json()["estimated_cost"] == "0.01"
    assert authorize(key_a, service_tier="priority").json()["estimated_cost"] == "0.02"
    assert authorize(key_a, service_tier="flex").json()["estimated_cost"] == "0.01"
    refused = authorize(key_a, service_tier="express")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["field"] == "service_tier"


def test_example_over_length_authorize_is_refused_before_the_model_runs(key_a, tenant_a, tiered):
    factories.topup(tenant_a, "10")
    response = authorize(key_a, estimated_input_tokens=1_100_000)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "1050000" in error["message"] and "1100000" in error["message"]
    assert error["details"]["field"] == "estimated_input_tokens"
    too_long = authorize(key_a, max_output_tokens=128_001)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["details"]["limit"] == "max_output_tokens"
    # At the limits exactly: admitted.
    assert authorize(key_a, estimated_input_tokens=1_050_000, max_output_tokens=128_000).status_code == 200


def test_usage_over_the_limits_is_recorded_and_flagged(key_a, tiered):
    response = post_event(key_a, input_tokens=1_100_000, output_tokens=10)
    assert response.status_code == 201
    assert response.json()["flags"] == ["context_length_exceeded"]
    assert Decimal(response.json()["cost"]) > 0
    ok = post_event(key_a, input_tokens=1_050_000, output_tokens=10, service_tier="batch")
    assert ok.json()["flags"] == []


def test_a_plans_own_price_row_sets_the_limits(key_a, tenant_a, tiered):
    factories.topup(tenant_a, "10")
    factories.PriceFactory(
        plan=tiered, tenant=tenant_a, model_pattern="tiered-*", effective_from=T0, input_per_mtok="2",
        output_per_mtok="8", max_input_tokens=2_000,
    )  # fmt: skip
    assert authorize(key_a, estimated_input_tokens=2_001).json()["error"]["code"] == "context_length_exceeded"
    assert authorize(key_a, estimated_input_tokens=2_000, max_output_tokens=500_000).status_code == 200


# --- rollups and invoices ---------------------------------------------------------------------


def test_rollups_and_invoice_lines_per_service_tier(api_key_a, tenant_a, tiered):
    record(api_key_a, model="tiered-1", at=utc(2026, 10, 2), input_tokens=10_000, output_tokens=1_000)
    record(
        api_key_a, model="tiered-1", at=utc(2026, 10, 2), input_tokens=10_000, output_tokens=1_000,
        service_tier="batch",
    )  # fmt: skip
    record(
        api_key_a, model="tiered-1", at=utc(2026, 10, 3), input_tokens=300_000, output_tokens=1_000,
        service_tier="priority",
    )  # fmt: skip
    rollup_day(day=dt.date(2026, 10, 2))
    assert sorted(DailyUsage.objects.values_list("service_tier", "requests")) == [("batch", 1), ("default", 1)]

    invoice, _ = invoicing_services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=10, now=utc(2026, 11, 10))
    lines = {(line.service_tier, line.token_kind, line.long_context): line for line in invoice.lines.all()}
    assert lines[("default", "input", False)].unit_price_per_mtok == Decimal("2.5")
    batch = lines[("batch", "input", False)]
    assert (batch.unit_price_per_mtok, batch.amount) == (Decimal("1.25"), Decimal("0.01"))
    assert "(batch tier)" in batch.description
    priority = lines[("priority", "input", True)]
    assert priority.unit_price_per_mtok == Decimal("10")
    assert "(priority tier)" in priority.description and "long context" in priority.description
    assert invoice.subtotal == sum(line.amount for line in invoice.lines.all())


# --- constraints in the database ------------------------------------------------------------


def test_the_database_refuses_parts_larger_than_their_kind_and_unknown_tiers(key_a, plan):
    from django.db import IntegrityError, transaction  # noqa: PLC0415

    event = {"tenant_id": key_a.row.tenant_id, "api_key_id": key_a.row.pk, "model": "m", "currency": "USD"}
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    for n, fields in enumerate(
        [
            {"output_tokens": 5, "reasoning_tokens": 6},
            {"input_tokens": 10, "cache_write_tokens": 5, "cache_write_1h_tokens": 6, "output_tokens": 0},
        ]
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            UsageEvent.objects.create(
                **event, request_id=f"db-{n}", occurred_at=now, received_at=now, **{"input_tokens": 10, **fields}
            )
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.PriceFactory(plan=plan, model_pattern="x", service_tier="turbo")
    # Two rows of one tier in one version: refused; another tier in the same version: fine.
    factories.PriceFactory(plan=plan, model_pattern="y", effective_from=T0)
    factories.PriceFactory(plan=plan, model_pattern="y", effective_from=T0, service_tier="priority")
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.PriceFactory(plan=plan, model_pattern="y", effective_from=T0, service_tier="priority")
