"""Price books (which price applies to a model for a tenant, and when) with their bounded
per-process cache; the plans and prices the portal lists."""

import copy
import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q

from accounts.models import Tenant
from billing.models import PRICE_RATE_FIELDS, Price, PricePlan, ServiceTier
from billing.money import rate_product
from billing.patterns import GLOB_CHARS, is_glob
from billing.rating import TOKEN_KINDS, PriceTerms, kind_rate, terms_from_price
from infra.cache import BoundedCache
from infra.db import hot_cursor, instance_from_row

_GLOB_CHARS = GLOB_CHARS
_DEFAULT_TIER = str(ServiceTier.DEFAULT.value)
# One price version of a pattern: its effective_from and {service tier: that row's terms}.
Version = tuple[dt.datetime, dict[str, PriceTerms]]


@dataclass
class PriceBook:
    """The prices that can apply to a set of models for one tenant, resolved in memory.

    Precedence: a tenant override beats the plan; within each, an exact model name beats a
    glob, and a longer glob beats a shorter one; then the newest version with
    effective_from <= the event's time; within that version, the row of the request's service
    tier, else the version's default-tier row.
    """

    currency: str
    allow_unpriced: bool
    # (is_override, pattern) -> versions newest first, each {service tier: its row's terms}
    _versions: dict[tuple[bool, str], list[Version]] = field(default_factory=dict)
    _candidates: dict[str, list[tuple[bool, str]]] = field(default_factory=dict)

    def _candidates_for(self, model: str) -> list[tuple[bool, str]]:
        cached = self._candidates.get(model)
        if cached is not None:
            return cached
        ranked = []
        for is_override, pattern in self._versions:
            if pattern == model:
                ranked.append(((is_override, 1, len(pattern)), (is_override, pattern)))
            elif is_glob(pattern) and fnmatch.fnmatchcase(model, pattern):
                ranked.append(((is_override, 0, len(pattern)), (is_override, pattern)))
        ranked.sort(reverse=True)
        result = [key for _, key in ranked]
        self._candidates[model] = result
        return result

    def terms_for(self, model: str, at: dt.datetime, service_tier: str = ServiceTier.DEFAULT) -> PriceTerms | None:
        for key in self._candidates_for(model):
            terms = version_terms(self._versions[key], at, service_tier)
            if terms is not None:
                return terms
        return None


def version_terms(versions: Iterable[Version], at: dt.datetime, service_tier: str) -> PriceTerms | None:
    """Of one pattern's versions (newest first), the one in force at `at`: its row of
    `service_tier`, else its default-tier row; a version with neither gives way to an older one."""
    for effective_from, by_tier in versions:
        if effective_from <= at:
            terms = by_tier.get(service_tier) or by_tier.get(_DEFAULT_TIER)
            if terms is not None:
                return terms
    return None


def price_book_for(
    *, plan_id: int | None, tenant_id: int, models: set[str], version: int | None = None
) -> PriceBook | None:
    """The price book of `models` for a tenant on a plan (None: no plan).

    With the plan's `version` as just read from the database (the API key lookup loads the
    plan), a process reuses what it resolved for the same plan, tenant, model and version, and
    reads only the models it has not seen; PostgreSQL's triggers move the version on any change
    to the plan's prices (migration 0004), so a reused entry is never older than that read.
    The cache holds one entry per (plan, tenant, model), at most PRICE_BOOK_CACHE_SIZE of them:
    model names come from clients, so an unknown name costs one bounded entry, never more.
    """
    if plan_id is None:
        return None
    if version is None or connection.vendor != "postgresql":
        return _price_book_read(plan_id=plan_id, tenant_id=tenant_id, models=models)
    resolved: dict[str, _ModelPrices] = {}
    for model in models:
        entry = _PRICE_BOOKS.get((plan_id, tenant_id, model))
        if entry is not None and entry.version == version:
            resolved[model] = entry
    missing = models - resolved.keys()
    if missing:
        # One read for every model this process lacks (every read carries all the globs).
        book = _price_book_read(plan_id=plan_id, tenant_id=tenant_id, models=missing)
        if book is None:
            return None
        for model in missing:
            entry = _ModelPrices(
                version=version,
                currency=book.currency,
                allow_unpriced=book.allow_unpriced,
                ranked=tuple((key, tuple(book._versions[key])) for key in book._candidates_for(model)),
            )
            _PRICE_BOOKS.set((plan_id, tenant_id, model), entry)
            resolved[model] = entry
        if not resolved.keys() - missing:
            return book
    return _book_from(resolved)


@dataclass(frozen=True, slots=True)
class _ModelPrices:
    """What one model resolves to on a plan version: its candidate patterns, best first, each
    with its versions newest first (the slice of a PriceBook that answers this model)."""

    version: int
    currency: str
    allow_unpriced: bool
    ranked: tuple[tuple[tuple[bool, str], tuple[Version, ...]], ...]


def _book_from(resolved: dict[str, _ModelPrices]) -> PriceBook:
    """A PriceBook answering exactly the models in `resolved`."""
    first = next(iter(resolved.values()))
    book = PriceBook(currency=first.currency, allow_unpriced=first.allow_unpriced)
    for model, entry in resolved.items():
        for key, versions in entry.ranked:
            book._versions.setdefault(key, list(versions))
        book._candidates[model] = [key for key, _ in entry.ranked]
    return book


def price_book_for_tenant(*, tenant: Tenant, models: set[str]) -> PriceBook | None:
    """`price_book_for` the tenant's plan, reusing a cached book when the tenant came with its
    plan loaded (the API key lookup loads it): that plan's version is then as fresh as the key."""
    version = None
    if Tenant.price_plan.is_cached(tenant):
        plan = tenant.price_plan
        version = plan.version if plan is not None else None
    return price_book_for(plan_id=tenant.price_plan_id, tenant_id=tenant.pk, models=models, version=version)


# Written out once rather than built by the ORM per call: ingest reads the price book on every
# request, and compiling the equivalent queryset (OR-ed lookups, a join) cost more CPU than the
# query itself. Portable SQL (the embedded default runs on SQLite); `[` is literal in LIKE.
# Each price comes with the cost price it was derived from (resale; columns `c.`), if any.
_PRICE_FIELDS = Price._meta.concrete_fields
_N_FIELDS = len(_PRICE_FIELDS)
_PRICE_BOOK_SQL = (
    f"SELECT pl.currency, pl.allow_unpriced_models, {', '.join(f'p.{f.column}' for f in _PRICE_FIELDS)}, "  # noqa: S608
    f"{', '.join(f'c.{f.column}' for f in _PRICE_FIELDS)} "
    f"FROM {PricePlan._meta.db_table} pl LEFT JOIN {Price._meta.db_table} p ON p.plan_id = pl.id "
    "AND (p.tenant_id IS NULL OR p.tenant_id = %s) AND (p.model_pattern IN ({models}) OR "
    + " OR ".join(f"p.model_pattern LIKE '%%{ch}%%'" for ch in _GLOB_CHARS)
    + f") LEFT JOIN {Price._meta.db_table} c ON c.id = p.cost_price_id "
    "WHERE pl.id = %s ORDER BY p.effective_from DESC, p.id DESC"
)


def cost_terms(cost_price: Price, *, exchange_rate: Decimal | None) -> PriceTerms:
    """The terms of a cost price in the currency of the price derived from it: each rate times
    the exchange rate the derivation used, rounded to 12 places (billing.money.rate_product).
    `cost_price` itself is left as it is (a copy is converted)."""
    if exchange_rate is not None and exchange_rate != 1:
        cost_price = copy.copy(cost_price)
        for name in PRICE_RATE_FIELDS:
            value = getattr(cost_price, name)
            if value is not None:
                setattr(cost_price, name, rate_product(value, exchange_rate))
    return terms_from_price(cost_price)


def _terms_of_row(row: Any) -> tuple[Price, PriceTerms]:
    price = instance_from_row(Price, _PRICE_FIELDS, row[:_N_FIELDS])
    cost = None
    if row[_N_FIELDS] is not None:
        cost_price = instance_from_row(Price, _PRICE_FIELDS, row[_N_FIELDS:])
        cost = cost_terms(cost_price, exchange_rate=price.exchange_rate)
    return price, terms_from_price(price, cost=cost)


def _price_book_read(*, plan_id: int, tenant_id: int, models: set[str]) -> PriceBook | None:
    """One query: the plan, every version of the exact names in `models` and of every glob."""
    names = sorted(models) or [""]
    sql = _PRICE_BOOK_SQL.format(models=", ".join(["%s"] * len(names)))
    with hot_cursor() as cursor:
        cursor.execute(sql, [tenant_id, *names, plan_id])
        rows = cursor.fetchall()
    if not rows:
        return None
    book = PriceBook(currency=rows[0][0], allow_unpriced=bool(rows[0][1]))
    versions: dict[tuple[bool, str], list[Version]] = defaultdict(list[Version])
    for row in rows:
        if row[2] is None:  # the plan has none of these prices (the LEFT JOIN's empty row)
            continue
        price, terms = _terms_of_row(row[2:])
        pattern = versions[(price.tenant_id is not None, price.model_pattern)]
        if not pattern or pattern[-1][0] != price.effective_from:  # rows come newest version first
            pattern.append((price.effective_from, {}))
        pattern[-1][1].setdefault(price.service_tier, terms)
    book._versions = dict(versions)
    return book


# (plan id, tenant id, model name) -> _ModelPrices; bounded because model names come from clients.
_PRICE_BOOKS: BoundedCache[_ModelPrices] = BoundedCache("price_book", max_size=lambda: settings.PRICE_BOOK_CACHE_SIZE)


def price_plans() -> list[PricePlan]:
    return list(PricePlan.objects.annotate(price_count=Count("prices")).order_by("name"))


def price_plan_by_id(plan_id: int) -> PricePlan | None:
    return PricePlan.objects.filter(pk=plan_id).first()


def plan_current_prices(*, plan_id: int, at: dt.datetime) -> list[Price]:
    """The version of each (pattern, tenant override) in force at `at`, by model pattern: every
    service tier's row of it (default first)."""
    newest: dict[tuple[int | None, str], dt.datetime] = {}
    chosen: list[Price] = []
    rows = Price.objects.filter(plan_id=plan_id, effective_from__lte=at).select_related("tenant")
    for price in rows.order_by("model_pattern", "tenant_id", "-effective_from"):
        version = newest.setdefault((price.tenant_id, price.model_pattern), price.effective_from)
        if price.effective_from == version:
            chosen.append(price)
    order = {tier: n for n, tier in enumerate(ServiceTier.values)}
    return sorted(chosen, key=lambda p: (p.model_pattern, p.tenant_id or 0, order.get(p.service_tier, 99)))


@dataclass(frozen=True)
class TenantPrice:
    """One price row a tenant pays, resolved: every token kind's rate per 1M (billing.rating's
    fallbacks applied: a missing cache rate is the input rate, and so on)."""

    model_pattern: str
    override: bool  # the tenant's own price, not the plan's
    service_tier: str
    effective_from: dt.datetime
    rates: dict[str, Decimal]  # token kind (billing.rating.TOKEN_KINDS) -> per 1M
    tier_threshold: int | None  # above this many input tokens, `tier_rates` apply to the whole request
    tier_rates: dict[str, Decimal] | None
    max_input_tokens: int | None
    max_output_tokens: int | None


def tenant_prices(*, tenant_id: int, plan_id: int, at: dt.datetime) -> list[TenantPrice]:
    """The prices in force for a tenant at `at`: the plan's current version of each pattern, its
    service tiers' rows included, with the tenant's overrides in place of the plan's same pattern."""
    newest: dict[tuple[bool, str], dt.datetime] = {}
    chosen: list[Price] = []
    rows = Price.objects.filter(plan_id=plan_id, effective_from__lte=at).filter(
        Q(tenant__isnull=True) | Q(tenant_id=tenant_id)
    )
    for price in rows.order_by("model_pattern", "tenant_id", "-effective_from", "id"):
        key = (price.tenant_id is not None, price.model_pattern)
        if newest.setdefault(key, price.effective_from) == price.effective_from:
            chosen.append(price)
    overridden = {pattern for is_override, pattern in newest if is_override}
    order = {tier: n for n, tier in enumerate(ServiceTier.values)}
    result = []
    for price in chosen:
        is_override = price.tenant_id is not None
        if not is_override and price.model_pattern in overridden:
            continue
        terms = terms_from_price(price)
        result.append(
            TenantPrice(
                model_pattern=price.model_pattern,
                override=is_override,
                service_tier=price.service_tier,
                effective_from=price.effective_from,
                rates={kind: kind_rate(terms.base, kind) for kind in TOKEN_KINDS},
                tier_threshold=price.tier_threshold if terms.tier is not None else None,
                tier_rates={kind: kind_rate(terms.tier, kind) for kind in TOKEN_KINDS} if terms.tier else None,
                max_input_tokens=price.max_input_tokens,
                max_output_tokens=price.max_output_tokens,
            )
        )
    result.sort(key=lambda p: (p.model_pattern, not p.override, order.get(p.service_tier, 99)))
    return result
