"""Resale: sell plans derived from a cost plan by markups and exchange rates, and dual rating.

The worked example of docs/billing-rules.md section 9 is `test_worked_example_cny_plan_over_the_usd_catalog`.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import AuditLog
from billing.models import (
    PRICE_COPIED_FIELDS,
    PRICE_DERIVATION_FIELDS,
    PRICE_RATE_FIELDS,
    ExchangeRate,
    Markup,
    Price,
    PricePlan,
)
from billing.money import rate_product
from billing.rating import rate_with_basis
from billing.selectors import price_book_for
from billing.services.catalog import prices_import_litellm
from billing.services.pricing import PRICED_FROM_BEGINNING
from billing.services.resale import exchange_rate_set, markup_set, plan_derive, plan_set_cost_plan
from metering.models import DailyUsage, UsageEvent
from metering.services.rerate import usage_rerate_unpriced
from metering.services.rollup import rollup_day
from tests import factories
from tests.conftest import Credential

pytestmark = pytest.mark.django_db

# LiteLLM's catalog format, USD per token: gpt-4o 2.5 / 10 / cache read 1.25 per 1M.
CATALOG = {
    "gpt-4o": {
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
    },
    "gpt-4o-mini": {"mode": "chat", "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
    "claude-sonnet-4-5": {
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
    },
}
ACTOR = "ops@example.com"


def _catalog_plan(catalog=None) -> PricePlan:
    plan = factories.PricePlanFactory(slug="provider", currency="USD")
    prices_import_litellm(plan=plan, catalog=catalog or CATALOG, actor_label=ACTOR)
    return plan


def _cny_plan(cost_plan: PricePlan, *, rate: str = "7.3", markup: str = "1.3") -> PricePlan:
    sell = factories.PricePlanFactory(slug="retail-cny", currency="CNY")
    plan_set_cost_plan(plan=sell, cost_plan=cost_plan, actor_label=ACTOR)
    exchange_rate_set(base="USD", quote="CNY", rate=rate, actor_label=ACTOR)
    markup_set(plan=sell, model_pattern="*", multiplier=markup, actor_label=ACTOR)
    return sell


def _shop(plan: PricePlan) -> Credential:
    tenant = factories.TenantFactory(slug="shop-cn", price_plan=plan, currency="CNY", timezone="Asia/Shanghai")
    return Credential(*factories.issue_api_key(tenant))


def _post(cred: Credential, **fields) -> dict:
    response = cred.post("/api/v1/events", factories.EventBodyFactory(**fields))
    assert response.status_code == 201, response.content
    return response.json()


def _current(plan: PricePlan, model: str) -> Price:
    return Price.objects.filter(plan=plan, model_pattern=model).order_by("-effective_from", "-pk").first()


def test_worked_example_cny_plan_over_the_usd_catalog():
    """docs/billing-rules.md section 9: a CNY plan, 1.3x over the USD catalog at 7.3 CNY per USD."""
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    price = _current(sell, "gpt-4o")
    cost = Price.objects.get(plan=provider, model_pattern="gpt-4o")
    # 2.5 x 7.3 x 1.3 = 23.725; 10 x 7.3 x 1.3 = 94.9; 1.25 x 7.3 x 1.3 = 11.8625 (CNY per 1M)
    assert (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok) == (
        Decimal("23.725"),
        Decimal("94.9"),
        Decimal("11.8625"),
    )
    assert (price.cost_price_id, price.markup, price.exchange_rate) == (cost.pk, Decimal("1.3"), Decimal("7.3"))
    assert price.effective_from == PRICED_FROM_BEGINNING  # the pattern's first version
    assert price.cache_write_per_mtok is None  # missing in the cost price: still the input rate

    shop = _shop(sell)
    body = _post(shop, model="gpt-4o", input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000)
    # revenue: 6,000 x 23.725 + 4,000 x 11.8625 + 1,000 x 94.9 = 284,700 -> 0.2847 CNY
    assert (Decimal(body["cost"]), body["currency"]) == (Decimal("0.2847"), "CNY")
    assert "cost_basis" not in body  # our cost is never shown to the tenant
    event = UsageEvent.objects.get(pk=body["id"])
    # cost: 6,000 x 18.25 + 4,000 x 9.125 + 1,000 x 73 = 219,000 -> 0.219 CNY
    assert event.cost_basis == Decimal("0.219")
    assert event.cost - event.cost_basis == Decimal("0.0657")  # margin, 23.08 % of revenue
    assert round((event.cost - event.cost_basis) / event.cost * 100, 2) == Decimal("23.08")


def test_a_markup_change_is_a_new_version_and_never_rerates_the_past():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    shop = _shop(sell)
    before = _post(shop, model="gpt-4o", input_tokens=1_000_000, output_tokens=0)
    assert Decimal(before["cost"]) == Decimal("23.725")
    old = _current(sell, "gpt-4o")
    changed_at = timezone.now()

    _, result = markup_set(plan=sell, model_pattern="*", multiplier="1.5", actor_label=ACTOR)
    assert "gpt-4o" in result.created
    new = _current(sell, "gpt-4o")
    assert new.pk != old.pk and new.input_per_mtok == Decimal("27.375")  # 2.5 x 7.3 x 1.5
    old.refresh_from_db()
    assert old.input_per_mtok == Decimal("23.725")  # the old version is untouched

    after = _post(shop, model="gpt-4o", input_tokens=1_000_000, output_tokens=0)
    late = _post(
        shop,
        model="gpt-4o",
        input_tokens=1_000_000,
        output_tokens=0,
        timestamp=(changed_at - dt.timedelta(seconds=30)).isoformat(),
    )
    assert Decimal(after["cost"]) == Decimal("27.375")
    assert Decimal(late["cost"]) == Decimal("23.725")  # stamped before the change: the old version
    stored = UsageEvent.objects.get(pk=before["id"])
    assert (stored.cost, stored.price_id, stored.cost_basis) == (Decimal("23.725"), old.pk, Decimal("18.25"))
    assert AuditLog.objects.filter(action="markup.set").count() == 2


def test_an_exchange_rate_change_is_audited_and_derives_new_versions():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    first = _current(sell, "gpt-4o")
    row, results = exchange_rate_set(base="usd", quote="cny", rate="7.1", note="monthly fix", actor_label=ACTOR)
    assert (row.base, row.quote, row.rate) == ("USD", "CNY", Decimal("7.1"))
    entry = AuditLog.objects.filter(action="exchange_rate.set").latest("pk")
    assert entry.actor_label == ACTOR
    assert entry.changes["rate"] == {"before": "7.300000000000", "after": "7.1"}
    assert [r.plan_slug for r in results] == ["retail-cny"]
    second = _current(sell, "gpt-4o")
    assert second.pk != first.pk
    assert (second.exchange_rate, second.input_per_mtok) == (Decimal("7.1"), Decimal("23.075"))  # 2.5 x 7.1 x 1.3
    # Deriving again with nothing changed creates nothing.
    again = plan_derive(plan=sell, actor_label=ACTOR)
    assert again.created == [] and "gpt-4o" in again.unchanged


def test_a_new_cost_version_derives_new_sell_versions():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    cheaper = {**CATALOG, "gpt-4o": {**CATALOG["gpt-4o"], "input_cost_per_token": 2e-06}}
    result = prices_import_litellm(plan=provider, catalog=cheaper, actor_label=ACTOR)
    assert result.created_models == ["gpt-4o"]
    assert any("retail-cny" in line for line in result.derived)
    price = _current(sell, "gpt-4o")
    assert price.cost_price == Price.objects.filter(plan=provider, model_pattern="gpt-4o").latest("effective_from")
    assert price.input_per_mtok == Decimal("18.98")  # 2 x 7.3 x 1.3
    # A sell plan is not imported into: its prices come from its cost plan.
    with pytest.raises(ValidationError, match="sell plan"):
        prices_import_litellm(plan=sell, catalog=CATALOG, currency="CNY", actor_label=ACTOR)


def test_exact_markup_beats_the_longest_glob_and_the_plan_multiplier():
    provider = _catalog_plan()
    sell = _cny_plan(provider, rate="1")
    markup_set(plan=sell, model_pattern="gpt-4o*", multiplier="2", actor_label=ACTOR)
    markup_set(plan=sell, model_pattern="gpt-4o-mini", multiplier="3", actor_label=ACTOR)
    assert _current(sell, "gpt-4o-mini").input_per_mtok == Decimal("0.45")  # exact: 0.15 x 3
    assert _current(sell, "gpt-4o").input_per_mtok == Decimal("5")  # gpt-4o* : 2.5 x 2
    assert _current(sell, "claude-sonnet-4-5").input_per_mtok == Decimal("3.9")  # `*`: 3 x 1.3


def test_a_fixed_price_keeps_its_cost_basis_and_the_tier_is_copied():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    markup_set(
        plan=sell,
        model_pattern="claude-sonnet-4-5",
        fixed_rates={"input_per_mtok": "30", "output_per_mtok": "150"},
        actor_label=ACTOR,
    )
    price = _current(sell, "claude-sonnet-4-5")
    assert (price.input_per_mtok, price.output_per_mtok, price.markup) == (Decimal("30"), Decimal("150"), None)
    assert price.tier_threshold == 200_000  # copied from the cost price
    shop = _shop(sell)
    body = _post(shop, model="claude-sonnet-4-5", input_tokens=300_000, output_tokens=0)
    event = UsageEvent.objects.get(pk=body["id"])
    # The fixed price has no tier rates: the base rates apply; the cost price's tier does apply.
    assert event.cost == Decimal("9")  # 300,000 x 30 / 1M
    assert event.cost_basis == Decimal("13.14")  # 300,000 x (6 x 7.3) / 1M: sold at a loss, and visible


def test_negative_markups_and_fixed_prices_are_refused():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    with pytest.raises(ValidationError, match="multiplier must be >= 0"):
        markup_set(plan=sell, model_pattern="*", multiplier="-0.1", actor_label=ACTOR)
    with pytest.raises(ValidationError, match="input_per_mtok must be >= 0"):
        markup_set(
            plan=sell,
            model_pattern="gpt-4o",
            fixed_rates={"input_per_mtok": "-1", "output_per_mtok": "1"},
            actor_label=ACTOR,
        )
    with pytest.raises(ValidationError, match="more than 6 decimal places"):
        markup_set(plan=sell, model_pattern="*", multiplier="1.0000001", actor_label=ACTOR)
    with pytest.raises(ValidationError, match="rate must be positive"):
        exchange_rate_set(base="USD", quote="CNY", rate="0", actor_label=ACTOR)
    with pytest.raises(ValidationError, match="Unknown rate"):
        markup_set(
            plan=sell, model_pattern="gpt-4o", fixed_rates={"input_per_mtok": "1", "bogus": "1"}, actor_label=ACTOR
        )
    # The database refuses them too, whatever writes the row.
    cost = Price.objects.filter(plan=provider).first()
    for bad in (
        {"markup": Decimal("-1")},
        {"exchange_rate": Decimal("0")},
        {"input_per_mtok": Decimal("-1")},
    ):
        fields = {"input_per_mtok": Decimal(1), "output_per_mtok": Decimal(1), **bad}
        with pytest.raises(IntegrityError), transaction.atomic():
            Price.objects.create(plan=sell, model_pattern="x", effective_from=timezone.now(), cost_price=cost, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Markup.objects.create(
            plan=sell, model_pattern="y", effective_from=timezone.now(), multiplier=-1, created_by="x"
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        ExchangeRate.objects.create(base="USD", quote="EUR", rate=-1, effective_from=timezone.now(), created_by="x")


def test_deriving_without_an_exchange_rate_is_refused_and_changes_nothing():
    provider = _catalog_plan()
    sell = factories.PricePlanFactory(slug="retail-eur", currency="EUR")
    plan_set_cost_plan(plan=sell, cost_plan=provider, actor_label=ACTOR)
    with pytest.raises(ValidationError, match="No USD->EUR exchange rate"):
        markup_set(plan=sell, model_pattern="*", multiplier="1.2", actor_label=ACTOR)
    assert not Price.objects.filter(plan=sell).exists()
    with pytest.raises(ValidationError, match="own cost plan"):
        plan_set_cost_plan(plan=provider, cost_plan=provider, actor_label=ACTOR)
    with pytest.raises(ValidationError, match="itself derived"):
        plan_set_cost_plan(plan=factories.PricePlanFactory(slug="x"), cost_plan=sell, actor_label=ACTOR)


def test_derivation_carries_every_rate_and_every_other_column():
    """Every Price column is a rate (derived), a derivation record, bookkeeping, or copied: a
    column added later lands in one of them without a change to the derivation."""
    decimal_columns = {f.name for f in Price._meta.concrete_fields if f.get_internal_type() == "DecimalField"}
    assert decimal_columns == set(PRICE_RATE_FIELDS) | {"markup", "exchange_rate"}
    assert {"model_pattern", "tenant", "tier_threshold"} <= set(PRICE_COPIED_FIELDS)
    assert not set(PRICE_COPIED_FIELDS) & (set(PRICE_RATE_FIELDS) | set(PRICE_DERIVATION_FIELDS))
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    for derived in Price.objects.filter(plan=sell).select_related("cost_price"):
        cost = derived.cost_price
        for name in PRICE_RATE_FIELDS:
            value = getattr(cost, name)
            expected = rate_product(value, Decimal("7.3"), Decimal("1.3")) if value is not None else None
            assert getattr(derived, name) == expected, name
        for name in PRICE_COPIED_FIELDS:
            assert getattr(derived, name) == getattr(cost, name), name


def test_rounding_of_a_derived_rate_is_half_even_at_12_places():
    # 1.25 x 7.123456789012 x 1.3 = 11.5756172821445 exactly: a tie, to the even digit.
    assert rate_product(Decimal("1.25"), Decimal("7.123456789012"), Decimal("1.3")) == Decimal("11.575617282144")
    assert rate_product(Decimal("0.000000000003"), Decimal("0.5")) == Decimal("0.000000000002")
    provider = _catalog_plan()
    sell = _cny_plan(provider, rate="7.123456789012")
    assert _current(sell, "gpt-4o").cached_input_per_mtok == Decimal("11.575617282144")


def test_rollups_sum_the_cost_basis_and_events_without_one_add_nothing(plan):
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    shop = _shop(sell)
    own = factories.PriceFactory(plan=sell, model_pattern="house-model", input_per_mtok="1", output_per_mtok="1")
    _post(shop, model="gpt-4o", input_tokens=1_000_000, output_tokens=0)
    _post(shop, model="gpt-4o", input_tokens=2_000_000, output_tokens=0)
    house = _post(shop, model="house-model", input_tokens=1_000_000, output_tokens=0)
    assert UsageEvent.objects.get(pk=house["id"]).cost_basis is None  # the plan's own price: no cost
    assert own.cost_price_id is None
    tenant = shop.row.tenant
    today = timezone.localdate(timezone=dt.timezone(dt.timedelta(hours=8)))
    rollup_day(day=today, tenants={tenant.pk: tenant.timezone})
    rows = {row.model: row for row in DailyUsage.objects.filter(tenant=tenant)}
    assert rows["gpt-4o"].cost == Decimal("71.175") and rows["gpt-4o"].cost_basis == Decimal("54.75")
    assert (rows["house-model"].cost, rows["house-model"].cost_basis) == (Decimal("1"), Decimal("0"))


def test_rerating_unpriced_usage_sets_both_sides(any_past_timestamp):
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    shop = _shop(sell)
    body = _post(shop, model="new-model", input_tokens=1_000_000, output_tokens=0)
    assert body["cost"] is None
    prices_import_litellm(
        plan=provider,
        catalog={"new-model": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}},
        actor_label=ACTOR,
    )
    result = usage_rerate_unpriced(actor_label=ACTOR)
    assert result.priced == 1
    event = UsageEvent.objects.get(pk=body["id"])
    assert (event.cost, event.cost_basis) == (Decimal("9.49"), Decimal("7.3"))


def test_dual_rating_refuses_cache_tokens_above_input_and_needs_no_cost_price():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    book = price_book_for(plan_id=sell.pk, tenant_id=0, models={"gpt-4o"})
    terms = book.terms_for("gpt-4o", timezone.now())
    with pytest.raises(ValueError, match="exceed input_tokens"):
        rate_with_basis(terms, input_tokens=10, output_tokens=0, cached_input_tokens=8, cache_write_tokens=3)
    own = price_book_for(plan_id=provider.pk, tenant_id=0, models={"gpt-4o"}).terms_for("gpt-4o", timezone.now())
    assert rate_with_basis(own, input_tokens=1_000_000, output_tokens=0) == (Decimal("2.5"), None)
    assert rate_with_basis(terms, input_tokens=1_000_000, output_tokens=0) == (Decimal("23.725"), Decimal("18.25"))


def test_resale_changes_need_an_actor():
    provider = _catalog_plan()
    sell = _cny_plan(provider)
    with pytest.raises(ValidationError, match="audited"):
        exchange_rate_set(base="USD", quote="CNY", rate="7", actor_label="")
    with pytest.raises(ValidationError, match="audited"):
        markup_set(plan=sell, model_pattern="*", multiplier="2", actor_label="")
