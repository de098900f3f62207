"""Resale: a sell plan's prices derived from a cost plan's by markups and an exchange rate.

A *sell* plan names a *cost* plan (`PricePlan.cost_plan`, e.g. the provider prices imported
from LiteLLM's catalog). Its prices are materialized as ordinary Price versions of the sell
plan, so rating, tiers, invoices and the price book need nothing new; each derived version
records what it came from: the cost Price version (`cost_price`), the multiplier (`markup`,
null for a fixed price) and the exchange rate used (`exchange_rate`, 1 in the same currency).

The rule of a cost price's model pattern is the plan's Markup of that exact pattern, else of the
longest glob matching it (`*` is the plan-wide multiplier; billing.patterns.best_pattern). Each
derived rate is `cost rate x exchange rate x multiplier`, computed exactly and rounded once to 12
places (billing.money.rate_product); a fixed price's rates are taken as given. Every other
column is copied from the cost price (billing.models.PRICE_COPIED_FIELDS), so columns added to
Price later (a service tier, length limits) carry over without a change here.

A markup, an exchange rate or a cost price that changes produces new sell versions from an
effective date (`plan_derive`); versions already stored are never touched, so events rated
before keep their price and cost basis: the past is never re-rated.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts.services import audit_record
from billing.models import (
    EXCHANGE_RATE_FIELD,
    MARKUP_FIELD,
    PRICE_COPIED_FIELDS,
    PRICE_FIELD,
    PRICE_RATE_FIELDS,
    ExchangeRate,
    Markup,
    Price,
    PricePlan,
    price_version_key_fields,
)
from billing.money import DecimalColumn, rate_product
from billing.patterns import best_pattern, is_glob
from billing.services.pricing import default_effective_from

DERIVED_SOURCE = "derived"  # Price.source of derived versions
_REQUIRED_FIXED = ("input_per_mtok", "output_per_mtok")
_ONE = Decimal(1)
_WIDE = decimal.Context(prec=80, traps=[decimal.InvalidOperation])


# --- Validation of typed values (commands, admin, services) ----------------------------------


def parse_factor(value: object, *, field_name: str, column: DecimalColumn, positive: bool = False) -> Decimal:
    """A non-negative decimal (a markup multiplier, an exchange rate, a rate) that fits `column`:
    more decimal places than it keeps are refused, never rounded; so are floats, non-numbers,
    negatives (and 0 when `positive`) and values too large for the column."""
    if isinstance(value, bool | float):
        raise ValidationError({field_name: f"{field_name} must be a decimal number written as text, not {value!r}."})
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError({field_name: f"{field_name} must be a decimal number, not {value!r}."}) from None
    if not number.is_finite():
        raise ValidationError({field_name: f"{field_name} must be a finite number, not {value!r}."})
    if number < 0 or (positive and number == 0):
        raise ValidationError({field_name: f"{field_name} must be {'positive' if positive else '>= 0'}, not {number}."})
    places = column["decimal_places"]
    if number != number.quantize(Decimal(1).scaleb(-places), context=_WIDE):
        raise ValidationError({field_name: f"{field_name} has more than {places} decimal places: {number}."})
    if number >= Decimal(10) ** (column["max_digits"] - places):
        raise ValidationError({field_name: f"{field_name} is too large: {number}."})
    return number


def _parse_currency(value: str, *, field_name: str) -> str:
    code = (value or "").strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValidationError({field_name: f"{field_name} must be a 3-letter ISO 4217 code, not {value!r}."})
    return code


def _aware(moment: dt.datetime | None, *, field_name: str) -> dt.datetime | None:
    if moment is not None and timezone.is_naive(moment):
        raise ValidationError({field_name: f"{field_name} must be timezone-aware."})
    return moment


def _parse_fixed_rates(rates: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(rates, Mapping) or not rates:
        raise ValidationError({"fixed_rates": "A fixed price needs its rates (at least input and output)."})
    unknown = sorted(set(rates) - set(PRICE_RATE_FIELDS))
    if unknown:
        raise ValidationError(
            {"fixed_rates": f"Unknown rate(s): {', '.join(unknown)}; known: {', '.join(PRICE_RATE_FIELDS)}."}
        )
    missing = [name for name in _REQUIRED_FIXED if rates.get(name) is None]
    if missing:
        raise ValidationError({"fixed_rates": f"A fixed price needs {' and '.join(missing)}."})
    return {
        name: str(parse_factor(value, field_name=name, column=PRICE_FIELD))
        for name, value in rates.items()
        if value is not None
    }


# --- Exchange rates -------------------------------------------------------------------------


def exchange_rate_at(*, base: str, quote: str, at: dt.datetime) -> ExchangeRate | None:
    """The version of base -> quote in force at `at` (the newest with effective_from <= at)."""
    return (
        ExchangeRate.objects.filter(base=base, quote=quote, effective_from__lte=at)
        .order_by("-effective_from", "-pk")
        .first()
    )


@transaction.atomic
def exchange_rate_set(
    *,
    base: str,
    quote: str,
    rate: object,
    effective_from: dt.datetime | None = None,
    note: str = "",
    actor_label: str,
    derive: bool = True,
) -> tuple[ExchangeRate, list[DeriveResult]]:
    """Add a version of the base -> quote rate (audited with the rate it replaces) and, with
    `derive`, re-derive from the same moment every sell plan priced in `quote` over a cost plan
    in `base`. Never edits a stored rate or price."""
    if not actor_label:
        raise ValidationError({"actor": "Who sets the rate is required: exchange rates are audited."})
    base = _parse_currency(base, field_name="base")
    quote = _parse_currency(quote, field_name="quote")
    if base == quote:
        raise ValidationError({"quote": "An exchange rate needs two different currencies."})
    value = parse_factor(rate, field_name="rate", column=EXCHANGE_RATE_FIELD, positive=True)
    starts = _aware(effective_from, field_name="effective_from") or timezone.now()
    if ExchangeRate.objects.filter(base=base, quote=quote, effective_from=starts).exists():
        raise ValidationError({"effective_from": f"{base}->{quote} already has a version at {starts.isoformat()}."})
    before = exchange_rate_at(base=base, quote=quote, at=starts)
    row = ExchangeRate.objects.create(
        base=base, quote=quote, rate=value, effective_from=starts, note=note[:200], created_by=actor_label
    )
    audit_record(
        action="exchange_rate.set",
        target=row,
        actor_label=actor_label,
        changes={
            "pair": f"{base}->{quote}",
            "effective_from": starts.isoformat(),
            "rate": {"before": str(before.rate) if before is not None else None, "after": str(value)},
            "note": note[:200],
        },
    )
    results = []
    if derive:
        plans = PricePlan.objects.filter(currency=quote, cost_plan__currency=base).order_by("pk")
        # Undated: derived from now (a pattern's first version from the beginning, as any price).
        results = [plan_derive(plan=plan, effective_from=effective_from, actor_label=actor_label) for plan in plans]
    return row, results


# --- A plan's cost plan and markups ---------------------------------------------------------


@transaction.atomic
def plan_set_cost_plan(*, plan: PricePlan, cost_plan: PricePlan | None, actor_label: str) -> PricePlan:
    """Make `plan` a sell plan over `cost_plan` (None: its prices are its own again). Audited.

    Derived versions already stored keep their cost price; the next `plan_derive` uses the new one.
    """
    if cost_plan is not None:
        if cost_plan.pk == plan.pk:
            raise ValidationError({"cost_plan": "A plan cannot be its own cost plan."})
        if cost_plan.cost_plan_id is not None:
            raise ValidationError(
                {"cost_plan": f"Plan {cost_plan.slug!r} is itself derived; a cost plan holds the provider's prices."}
            )
    if plan.sell_plans.exists() and cost_plan is not None:
        raise ValidationError({"plan": f"Plan {plan.slug!r} is the cost plan of other plans; it cannot be derived."})
    locked = PricePlan.objects.select_for_update().get(pk=plan.pk)
    before = locked.cost_plan.slug if locked.cost_plan is not None else None
    locked.cost_plan = cost_plan
    locked.save(update_fields=["cost_plan"])
    audit_record(
        action="price_plan.cost_plan",
        target=locked,
        actor_label=actor_label,
        changes={"cost_plan": {"before": before, "after": cost_plan.slug if cost_plan is not None else None}},
    )
    plan.cost_plan = cost_plan
    return locked


@transaction.atomic
def markup_set(
    *,
    plan: PricePlan,
    model_pattern: str,
    multiplier: object = None,
    fixed_rates: Mapping[str, Any] | None = None,
    effective_from: dt.datetime | None = None,
    actor_label: str,
    derive: bool = True,
) -> tuple[Markup, DeriveResult | None]:
    """Add a version of the plan's rule for `model_pattern` (`*`: the whole plan): a multiplier
    (>= 0) of the cost prices or a fixed price in the plan's currency. Audited; with `derive`,
    the plan's prices are re-derived from the same moment (stored versions never change)."""
    if not actor_label:
        raise ValidationError({"actor": "Who sets the markup is required: markups are audited."})
    if plan.cost_plan_id is None:
        raise ValidationError({"plan": f"Plan {plan.slug!r} has no cost plan; set one first."})
    pattern = (model_pattern or "").strip()
    if not pattern or len(pattern) > 200:
        raise ValidationError({"model_pattern": "A model name or glob of 1 to 200 characters is required."})
    if (multiplier is None) == (fixed_rates is None):
        raise ValidationError({"multiplier": "Give either a multiplier or a fixed price, not both or neither."})
    value = parse_factor(multiplier, field_name="multiplier", column=MARKUP_FIELD) if multiplier is not None else None
    fixed = _parse_fixed_rates(fixed_rates) if fixed_rates is not None else None
    starts = _aware(effective_from, field_name="effective_from") or timezone.now()
    if Markup.objects.filter(plan=plan, model_pattern=pattern, effective_from=starts).exists():
        raise ValidationError({"effective_from": f"{pattern!r} already has a markup version at {starts.isoformat()}."})
    before = _rules_at(plan, starts).get(pattern)
    row = Markup.objects.create(
        plan=plan,
        model_pattern=pattern,
        effective_from=starts,
        multiplier=value,
        fixed_rates=fixed,
        created_by=actor_label,
    )
    audit_record(
        action="markup.set",
        target=row,
        actor_label=actor_label,
        changes={
            "plan": plan.slug,
            "model_pattern": pattern,
            "effective_from": starts.isoformat(),
            "before": _rule_summary(before),
            "after": _rule_summary(row),
        },
    )
    result = plan_derive(plan=plan, effective_from=effective_from, actor_label=actor_label) if derive else None
    return row, result


def _rule_summary(rule: Markup | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "multiplier": str(rule.multiplier) if rule.multiplier is not None else None,
        "fixed_rates": rule.fixed_rates,
    }


def _rules_at(plan: PricePlan, at: dt.datetime) -> dict[str, Markup]:
    rules: dict[str, Markup] = {}
    for rule in Markup.objects.filter(plan=plan, effective_from__lte=at).order_by("model_pattern", "-effective_from"):
        rules.setdefault(rule.model_pattern, rule)
    return rules


# --- Derivation ------------------------------------------------------------------------------


@dataclass
class DeriveResult:
    plan_slug: str
    effective_from: dt.datetime
    exchange_rate: Decimal
    created: list[str] = field(default_factory=list)  # model patterns with a new version
    unchanged: list[str] = field(default_factory=list)
    no_markup: list[str] = field(default_factory=list)  # cost patterns no rule covers (not sold)

    def summary(self) -> str:
        return (
            f"plan {self.plan_slug}: {len(self.created)} new derived versions, {len(self.unchanged)} unchanged, "
            f"{len(self.no_markup)} cost prices without a markup (not sold), exchange rate {self.exchange_rate}, "
            f"effective {self.effective_from.isoformat()}"
        )


def _in_force(prices: Iterable[Price], at: dt.datetime) -> dict[tuple[Any, ...], Price]:
    """The newest version in force at `at` of each versioned price (by its version key)."""
    key_fields = price_version_key_fields()
    current: dict[tuple[Any, ...], Price] = {}
    for price in prices:
        if price.effective_from <= at:
            key = tuple(getattr(price, f.attname) for f in _fields(key_fields))
            held = current.get(key)
            if held is None or (price.effective_from, price.pk) > (held.effective_from, held.pk):
                current[key] = price
    return current


def _fields(names: Iterable[str]) -> list[models.Field[Any, Any]]:
    return [Price._meta.get_field(name) for name in names]  # type: ignore[misc]


def derived_price(
    *, plan: PricePlan, cost: Price | None, rule: Markup, exchange_rate: Decimal, model_pattern: str
) -> Price:
    """The sell version `rule` makes of `cost` (unsaved, effective_from unset): identity columns
    copied from the cost price, every rate of PRICE_RATE_FIELDS derived or fixed."""
    price = Price(plan=plan, source=DERIVED_SOURCE, cost_price=cost, exchange_rate=exchange_rate)
    for f in _fields(PRICE_COPIED_FIELDS):
        setattr(price, f.attname, getattr(cost, f.attname) if cost is not None else f.get_default())
    price.model_pattern = model_pattern
    price.tenant_id = None
    if rule.multiplier is not None:
        assert cost is not None
        price.markup = rule.multiplier
        for name in PRICE_RATE_FIELDS:
            value = getattr(cost, name)
            setattr(price, name, rate_product(value, exchange_rate, rule.multiplier) if value is not None else None)
    else:
        fixed = rule.fixed_rates or {}
        for name in PRICE_RATE_FIELDS:
            setattr(price, name, Decimal(fixed[name]) if fixed.get(name) is not None else None)
    return price


def _same_version(a: Price, b: Price) -> bool:
    names = (*PRICE_COPIED_FIELDS, *PRICE_RATE_FIELDS, "markup", "exchange_rate")
    return a.cost_price_id == b.cost_price_id and all(
        getattr(a, f.attname) == getattr(b, f.attname) for f in _fields(names)
    )


@transaction.atomic
def plan_derive(*, plan: PricePlan, effective_from: dt.datetime | None = None, actor_label: str) -> DeriveResult:
    """Derive the sell plan's prices in force at `effective_from` (default now) and add a version
    for each that differs from the sell version in force then. Audited (`price.derive`).

    Without `effective_from`, a pattern's first version applies from the beginning (as every
    first price; docs/billing-rules.md section 4) and later ones from now. A cost price no rule
    covers is not sold (reported). A fixed price for an exact model the cost plan has no pattern
    of is added too, its cost price the cost plan's price for that name (exact or glob), if any.
    """
    at = _aware(effective_from, field_name="effective_from") or timezone.now()
    locked = PricePlan.objects.select_for_update(of=("self",)).select_related("cost_plan").get(pk=plan.pk)
    cost_plan = locked.cost_plan
    if cost_plan is None:
        raise ValidationError({"plan": f"Plan {plan.slug!r} has no cost plan to derive its prices from."})
    if cost_plan.currency == locked.currency:
        fx = _ONE
    else:
        rate_row = exchange_rate_at(base=cost_plan.currency, quote=locked.currency, at=at)
        if rate_row is None:
            raise ValidationError(
                {
                    "exchange_rate": f"No {cost_plan.currency}->{locked.currency} exchange rate in force at "
                    f"{at.isoformat()}; set one (manage.py set_exchange_rate)."
                }
            )
        fx = rate_row.rate
    result = DeriveResult(plan_slug=locked.slug, effective_from=at, exchange_rate=fx)
    costs = _in_force(Price.objects.filter(plan=cost_plan, tenant__isnull=True), at)
    rules = _rules_at(locked, at)
    wanted: list[Price] = []
    cost_patterns = {price.model_pattern for price in costs.values()}
    for cost in sorted(costs.values(), key=lambda p: (p.model_pattern, p.pk)):
        pattern = best_pattern(cost.model_pattern, rules)
        if pattern is None:
            result.no_markup.append(cost.model_pattern)
            continue
        wanted.append(
            derived_price(
                plan=locked, cost=cost, rule=rules[pattern], exchange_rate=fx, model_pattern=cost.model_pattern
            )
        )
    by_pattern: dict[str, list[Price]] = {}
    for cost in costs.values():
        by_pattern.setdefault(cost.model_pattern, []).append(cost)
    for pattern, rule in sorted(rules.items()):
        # A glob's fixed price governs the cost patterns it matches (above); an exact name the
        # cost plan has no pattern of gets its own version.
        if rule.fixed_rates is None or pattern in cost_patterns or is_glob(pattern):
            continue
        source = best_pattern(pattern, by_pattern)
        fixed_cost = min(by_pattern[source], key=lambda p: p.pk) if source is not None else None
        wanted.append(derived_price(plan=locked, cost=fixed_cost, rule=rule, exchange_rate=fx, model_pattern=pattern))

    sells = list(Price.objects.filter(plan=locked, tenant__isnull=True))
    current = _in_force(sells, at)
    key_fields = _fields(price_version_key_fields())
    has_versions = {tuple(getattr(p, f.attname) for f in key_fields) for p in sells}
    taken = {(tuple(getattr(p, f.attname) for f in key_fields), p.effective_from) for p in sells}
    to_create = []
    for price in wanted:
        key = tuple(getattr(price, f.attname) for f in key_fields)
        held = current.get(key)
        if held is not None and _same_version(held, price):
            result.unchanged.append(price.model_pattern)
            continue
        starts = at if effective_from is not None else default_effective_from(first=key not in has_versions, now=at)
        if (key, starts) in taken:
            raise ValidationError(
                {"effective_from": f"{price.model_pattern!r} already has a version at {starts.isoformat()}."}
            )
        price.effective_from = starts
        price.clean_fields(exclude=["plan", "cost_price"])  # digits and places; the constraints are the database's
        to_create.append(price)
        result.created.append(price.model_pattern)
    Price.objects.bulk_create(to_create, batch_size=500)
    audit_record(
        action="price.derive",
        target=locked,
        actor_label=actor_label,
        changes={
            "cost_plan": cost_plan.slug,
            "effective_from": at.isoformat(),
            "exchange_rate": str(fx),
            "created": result.created,
            "unchanged": len(result.unchanged),
            "no_markup": result.no_markup,
        },
    )
    return result


def sell_plans_derive(
    *, cost_plan: PricePlan, effective_from: dt.datetime | None, actor_label: str
) -> tuple[list[DeriveResult], dict[str, str]]:
    """Re-derive every sell plan of `cost_plan` (after its prices changed) from `effective_from`.

    Returns the results and, by plan slug, why a plan could not be derived (no exchange rate in
    force, a version already at that moment): that plan keeps its prices; the others go on."""
    results, failures = [], {}
    for plan in PricePlan.objects.filter(cost_plan=cost_plan).order_by("pk"):
        try:
            with transaction.atomic():
                results.append(plan_derive(plan=plan, effective_from=effective_from, actor_label=actor_label))
        except ValidationError as exc:
            failures[plan.slug] = "; ".join(exc.messages)
    return results, failures
