"""Rating rules, with the worked examples of docs/billing-rules.md (same numbers).

Prices are per 1M tokens. Lookups go through price_book_for (what ingest uses) and rate, or
through POST /api/v1/events.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing import rating
from billing.money import round_to_currency, round_to_ledger, to_micros
from billing.rating import rate
from billing.selectors import price_book_for
from invoicing.models import InvoiceLine
from tests import factories

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def sonnet_like(plan, **overrides):
    """The docs' example price: a cache-write rate and a context tier above 200k input tokens."""
    fields = {
        "model_pattern": "claude-sonnet-4-5",
        "effective_from": T0,
        "input_per_mtok": Decimal("3"),
        "output_per_mtok": Decimal("15"),
        "cached_input_per_mtok": Decimal("0.30"),
        "cache_write_per_mtok": Decimal("3.75"),
        "tier_threshold": 200_000,
        "tier_input_per_mtok": Decimal("6"),
        "tier_output_per_mtok": Decimal("22.5"),
        "tier_cached_input_per_mtok": Decimal("0.60"),
        "tier_cache_write_per_mtok": Decimal("7.5"),
    }
    fields.update(overrides)
    return factories.PriceFactory(plan=plan, **fields)


def cost(tenant, model, at=LATER, *, input_tokens, output_tokens, cached=0, cache_write=0):
    book = price_book_for(plan_id=tenant.price_plan_id, tenant_id=tenant.pk, models={model})
    terms = book.terms_for(model, at)
    if terms is None:
        return None
    return rate(
        terms,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=cache_write,
    )


@pytest.fixture
def rules_plan(db):
    return factories.PricePlanFactory(slug="rules")


@pytest.fixture
def tenant(rules_plan):
    return factories.TenantFactory(price_plan=rules_plan)


# --- token kinds and the formula ----------------------------------------------------------


def test_example_1_token_kinds(rules_plan, tenant):
    sonnet_like(rules_plan)
    # 150,000 input of which 100,000 cache reads and 20,000 cache writes; 30,000 uncached.
    # 30,000 x 3 + 100,000 x 0.30 + 20,000 x 3.75 + 4,000 x 15 = 255,000 per 1M = 0.255
    assert cost(
        tenant, "claude-sonnet-4-5", input_tokens=150_000, output_tokens=4_000, cached=100_000, cache_write=20_000
    ) == Decimal("0.255")


def test_cache_tokens_above_input_are_rejected(rules_plan, tenant, key_a):
    sonnet_like(rules_plan)
    book = price_book_for(plan_id=rules_plan.pk, tenant_id=tenant.pk, models={"claude-sonnet-4-5"})
    with pytest.raises(ValueError, match="exceed input_tokens"):
        rate(
            book.terms_for("claude-sonnet-4-5", LATER),
            input_tokens=100,
            output_tokens=0,
            cached_input_tokens=60,
            cache_write_tokens=41,
        )
    response = key_a.post(
        "/api/v1/events",
        {"request_id": "r-over", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 0,
         "cached_input_tokens": 60, "cache_write_tokens": 41},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "cached_input_tokens"


# --- context tiers ------------------------------------------------------------------------


def test_example_2_tier_reprices_the_whole_request(rules_plan, tenant):
    sonnet_like(rules_plan)
    # 250,000 > 200,000: every token at the tier's rates, not only the 50,000 above it.
    # 130,000 x 6 + 100,000 x 0.60 + 20,000 x 7.5 + 4,000 x 22.5 = 1,080,000 per 1M = 1.08
    assert cost(
        tenant, "claude-sonnet-4-5", input_tokens=250_000, output_tokens=4_000, cached=100_000, cache_write=20_000
    ) == Decimal("1.08")


def test_tier_starts_above_the_threshold_not_at_it(rules_plan, tenant):
    sonnet_like(rules_plan)
    assert cost(tenant, "claude-sonnet-4-5", input_tokens=200_000, output_tokens=0) == Decimal("0.6")
    assert cost(tenant, "claude-sonnet-4-5", input_tokens=200_001, output_tokens=0) == Decimal("1.200006")
    # Output tokens never trigger the tier: only input_tokens counts.
    assert cost(tenant, "claude-sonnet-4-5", input_tokens=1_000, output_tokens=300_000) == Decimal("4.503")


def test_tier_through_the_ingest_api(key_a, tenant_a):
    sonnet_like(tenant_a.price_plan)
    response = key_a.post(
        "/api/v1/events",
        {"request_id": "r-tier", "model": "claude-sonnet-4-5", "input_tokens": 250_000, "output_tokens": 4_000,
         "cached_input_tokens": 100_000, "cache_write_tokens": 20_000},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert Decimal(response.json()["cost"]) == Decimal("1.08")


# --- missing cache rates ------------------------------------------------------------------


def test_example_3_missing_cache_rates_mean_the_input_rate(rules_plan, tenant):
    factories.PriceFactory(
        plan=rules_plan, model_pattern="plain", input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8")
    )
    # 10,000 input (4,000 cached, 1,000 written) all at 2, + 500 x 8 = 24,000 per 1M = 0.024
    assert cost(tenant, "plain", input_tokens=10_000, output_tokens=500, cached=4_000, cache_write=1_000) == Decimal(
        "0.024"
    )


def test_missing_tier_rates_fall_back_to_the_base_rate_of_the_same_kind(rules_plan, tenant):
    # A tier with only an input rate: output and cache rates come from the base price
    # (as LiteLLM does); a cache rate missing in both is the tier's input rate.
    sonnet_like(
        rules_plan,
        tier_output_per_mtok=None,
        tier_cached_input_per_mtok=None,
        tier_cache_write_per_mtok=None,
        cache_write_per_mtok=None,
    )
    # 250,000 input: 130,000 x 6 + 100,000 x 0.30 (base cache read) + 20,000 x 6 (tier input)
    # + 4,000 x 15 (base output) = 990,000 per 1M = 0.99
    assert cost(
        tenant, "claude-sonnet-4-5", input_tokens=250_000, output_tokens=4_000, cached=100_000, cache_write=20_000
    ) == Decimal("0.99")
    # Below the tier, the missing cache-write rate is the base input rate:
    # 30,000 x 3 + 100,000 x 0.30 + 20,000 x 3 + 4,000 x 15 = 240,000 per 1M = 0.24
    assert cost(
        tenant, "claude-sonnet-4-5", input_tokens=150_000, output_tokens=4_000, cached=100_000, cache_write=20_000
    ) == Decimal("0.24")


# --- which price applies ------------------------------------------------------------------


def test_example_4_exact_beats_longer_glob_beats_shorter_glob(rules_plan, tenant):
    for pattern, price in [("*", "9"), ("gpt-4o*", "2.5"), ("gpt-4o-mini*", "0.15"), ("gpt-4o-mini", "0.10")]:
        factories.PriceFactory(plan=rules_plan, model_pattern=pattern, input_per_mtok=Decimal(price), output_per_mtok=0)

    def input_price(model):
        return cost(tenant, model, input_tokens=1_000_000, output_tokens=0)

    assert input_price("gpt-4o-mini") == Decimal("0.10")  # exact
    assert input_price("gpt-4o-mini-2024-07-18") == Decimal("0.15")  # longest glob
    assert input_price("gpt-4o-2024-08-06") == Decimal("2.5")
    assert input_price("llama-3.1-70b") == Decimal("9")  # catch-all
    assert input_price("gpt-4") == Decimal("9")  # gpt-4o* needs the "o"


def test_tenant_override_beats_the_plan_even_an_exact_plan_price(rules_plan, tenant):
    other = factories.TenantFactory(price_plan=rules_plan)
    factories.PriceFactory(
        plan=rules_plan, model_pattern="gpt-4o-mini", input_per_mtok=Decimal("0.10"), output_per_mtok=0
    )
    factories.PriceFactory(
        plan=rules_plan, tenant=tenant, model_pattern="gpt-4o*", input_per_mtok=Decimal("0.08"), output_per_mtok=0
    )
    assert cost(tenant, "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0) == Decimal("0.08")
    assert cost(other, "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0) == Decimal("0.10")


def test_example_5_versions_by_effective_from(rules_plan, tenant):
    factories.PriceFactory(plan=rules_plan, model_pattern="m", effective_from=T0, input_per_mtok=Decimal("2.5"))
    factories.PriceFactory(plan=rules_plan, model_pattern="m", effective_from=T1, input_per_mtok=Decimal("3"))

    def at(moment):
        return cost(tenant, "m", moment, input_tokens=1_000_000, output_tokens=0)

    assert at(T0 - dt.timedelta(microseconds=1)) is None  # before any version: unpriced
    assert at(T0) == Decimal("2.5")  # effective_from is inclusive
    assert at(T1 - dt.timedelta(seconds=1)) == Decimal("2.5")
    assert at(T1) == Decimal("3")


def test_override_not_yet_in_force_leaves_the_plan_price(rules_plan, tenant):
    factories.PriceFactory(plan=rules_plan, model_pattern="m", effective_from=T0, input_per_mtok=Decimal("2.5"))
    factories.PriceFactory(
        plan=rules_plan,
        tenant=tenant,
        model_pattern="m",
        effective_from=T1,
        input_per_mtok=Decimal("2"),
        output_per_mtok=0,
    )
    assert cost(tenant, "m", T0, input_tokens=1_000_000, output_tokens=0) == Decimal("2.5")
    assert cost(tenant, "m", T1, input_tokens=1_000_000, output_tokens=0) == Decimal("2")


@pytest.mark.usefixtures("any_past_timestamp")  # fixed dates
def test_event_time_picks_the_version_through_the_api(key_a, tenant_a):
    plan = tenant_a.price_plan
    factories.PriceFactory(plan=plan, model_pattern="m", effective_from=T0, input_per_mtok=Decimal("2.5"))
    factories.PriceFactory(plan=plan, model_pattern="m", effective_from=T1, input_per_mtok=Decimal("3"))
    body = {"model": "m", "input_tokens": 1_000, "output_tokens": 0}
    before = key_a.post("/api/v1/events", {**body, "request_id": "r-jan", "timestamp": "2026-02-01T00:00:00Z"})
    after = key_a.post("/api/v1/events", {**body, "request_id": "r-mar", "timestamp": "2026-03-01T00:00:00Z"})
    assert (Decimal(before.json()["cost"]), Decimal(after.json()["cost"])) == (Decimal("0.0025"), Decimal("0.003"))


# --- precision and rounding ---------------------------------------------------------------


def test_costs_are_exact_to_18_places(rules_plan, tenant):
    factories.PriceFactory(
        plan=rules_plan, model_pattern="tiny", input_per_mtok=Decimal("0.000000000001"), output_per_mtok=Decimal("0")
    )
    assert cost(tenant, "tiny", input_tokens=1, output_tokens=0) == Decimal("0.000000000000000001")
    assert cost(tenant, "tiny", input_tokens=1, output_tokens=0).as_tuple().exponent == -18


def test_example_6_rounding_once_per_line_half_even():
    # Three events of 0.004 USD: rounded per line 0.012 -> 0.01; rounded per event it would be 0.
    assert round_to_currency(Decimal("0.004") * 3, "USD") == Decimal("0.01")
    assert sum(round_to_currency(Decimal("0.004"), "USD") for _ in range(3)) == 0
    # Half-even: ties go to the even digit.
    assert round_to_currency(Decimal("0.125"), "USD") == Decimal("0.12")
    assert round_to_currency(Decimal("0.135"), "USD") == Decimal("0.14")
    assert round_to_currency(Decimal("2.5"), "JPY") == Decimal("2")
    assert round_to_currency(Decimal("0.0125"), "KWD") == Decimal("0.012")
    # Wallet charges: micro-units (6 places), the same rule.
    assert round_to_ledger(Decimal("0.255")) == Decimal("0.255000")
    assert round_to_ledger(Decimal("0.0000125")) == Decimal("0.000012")
    assert to_micros(Decimal("1.08")) == 1_080_000


# --- the parts invoices use: kinds, tier choice, kind rates, line amounts -------------------


@pytest.mark.parametrize(
    ("input_tokens", "cached", "cache_write", "output_tokens", "long_context"),
    [(150_000, 100_000, 20_000, 4_000, False), (250_000, 100_000, 20_000, 4_000, True), (200_000, 0, 0, 0, False)],
)
def test_lines_by_kind_add_up_to_the_cost_of_the_request(
    rules_plan, input_tokens, cached, cache_write, output_tokens, long_context
):
    terms = rating.terms_from_price(sonnet_like(rules_plan))
    counts = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
    }
    assert rating.tier_applies(terms, input_tokens=input_tokens) is long_context
    rates = rating.tier_rates(terms, long_context=long_context)
    quantities = rating.quantities(**counts)
    assert list(quantities) == list(rating.TOKEN_KINDS)
    assert quantities[rating.INPUT] == input_tokens - cached - cache_write
    lines = sum(rating.line_amount(n, rating.kind_rate(rates, kind)) for kind, n in quantities.items())
    assert lines == rate(terms, **counts)


def test_the_tier_applies_only_above_its_threshold(rules_plan):
    tiered = rating.terms_from_price(sonnet_like(rules_plan))
    flat = rating.terms_from_price(sonnet_like(rules_plan, model_pattern="flat", tier_threshold=None))
    assert [rating.tier_applies(tiered, input_tokens=n) for n in (200_000, 200_001)] == [False, True]
    assert rating.tier_applies(flat, input_tokens=10**9) is False
    assert rating.tier_rates(flat, long_context=True) == flat.base


def test_cache_tokens_above_input_are_refused_by_every_path():
    with pytest.raises(ValueError, match="exceed input_tokens"):
        rating.quantities(input_tokens=10, output_tokens=0, cached_input_tokens=8, cache_write_tokens=3)


def test_invoice_token_kinds_are_the_rating_kinds():
    assert set(InvoiceLine.TokenKind.values) == set(rating.TOKEN_KINDS)
