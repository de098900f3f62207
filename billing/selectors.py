"""Read paths of billing that other apps use: price lookup, wallet state."""

import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from billing.models import Hold, JobFailure, LedgerEntry, Price, PricePlan, Quota, QuotaCounter, Wallet
from billing.money import from_micros, to_micros
from billing.rating import PriceTerms, terms_from_price
from billing.windows import PERIODS, TENANT_SCOPE, Cell, window_period, window_starts
from portal.accounts.models import Tenant
from portal.cache import BoundedCache
from portal.db import hot_cursor, instance_from_row

_GLOB_CHARS = ("*", "?", "[")


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in _GLOB_CHARS)


@dataclass
class PriceBook:
    """The prices that can apply to a set of models for one tenant, resolved in memory.

    Precedence: a tenant override beats the plan; within each, an exact model name beats a
    glob, and a longer glob beats a shorter one; then the newest version with
    effective_from <= the event's time.
    """

    currency: str
    allow_unpriced: bool
    # (is_override, pattern) -> versions newest first
    _versions: dict[tuple[bool, str], list[tuple[dt.datetime, PriceTerms]]] = field(default_factory=dict)
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

    def add_versions(self, other: "PriceBook") -> None:
        """Take the price versions `other` read that this book lacks (other models' exact names)."""
        for key, versions in other._versions.items():
            self._versions.setdefault(key, versions)
        self._candidates.clear()

    def terms_for(self, model: str, at: dt.datetime) -> PriceTerms | None:
        for key in self._candidates_for(model):
            for effective_from, terms in self._versions[key]:
                if effective_from <= at:
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
    ranked: tuple[tuple[tuple[bool, str], tuple[tuple[dt.datetime, PriceTerms], ...]], ...]


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
_PRICE_FIELDS = Price._meta.concrete_fields
_PRICE_BOOK_SQL = (
    f"SELECT pl.currency, pl.allow_unpriced_models, {', '.join(f'p.{f.column}' for f in _PRICE_FIELDS)} "  # noqa: S608
    f"FROM {PricePlan._meta.db_table} pl LEFT JOIN {Price._meta.db_table} p ON p.plan_id = pl.id "
    "AND (p.tenant_id IS NULL OR p.tenant_id = %s) AND (p.model_pattern IN ({models}) OR "
    + " OR ".join(f"p.model_pattern LIKE '%%{ch}%%'" for ch in _GLOB_CHARS)
    + ") WHERE pl.id = %s ORDER BY p.effective_from DESC, p.id DESC"
)


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
    versions: dict[tuple[bool, str], list] = defaultdict(list)
    for row in rows:
        if row[2] is None:  # the plan has none of these prices (the LEFT JOIN's empty row)
            continue
        price = instance_from_row(Price, _PRICE_FIELDS, row[2:])
        versions[(price.tenant_id is not None, price.model_pattern)].append(
            (price.effective_from, terms_from_price(price))
        )
    book._versions = dict(versions)
    return book


# (plan id, tenant id, model name) -> _ModelPrices; bounded because model names come from clients.
_PRICE_BOOKS: BoundedCache[_ModelPrices] = BoundedCache("price_book", max_size=lambda: settings.PRICE_BOOK_CACHE_SIZE)


def wallet_balance(*, tenant_id: int) -> Decimal:
    """The prepaid balance: the cached wallet figure (reconciled against the ledger's sum)."""
    balance = Wallet.objects.filter(tenant_id=tenant_id).values_list("balance", flat=True).first()
    return balance if balance is not None else Decimal(0)


def ledger_sum(*, tenant_id: int) -> Decimal:
    total = LedgerEntry.objects.filter(tenant_id=tenant_id).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else Decimal(0)


# --- Portal pages: wallets, ledger, quotas and plans as plain reads -------------------------


def wallet_balances(*, tenant_ids: list[int]) -> dict[int, Decimal]:
    return dict(Wallet.objects.filter(tenant_id__in=tenant_ids).values_list("tenant_id", "balance"))


def ledger_entries_page(
    *, tenant_id: int, kinds: list[str] | None = None, before_id: int | None = None, limit: int = 50
) -> tuple[list[LedgerEntry], int | None]:
    """Newest first, keyset-paginated on id. Returns the rows and the id to continue before."""
    entries = LedgerEntry.objects.filter(tenant_id=tenant_id)
    if kinds:
        entries = entries.filter(kind__in=kinds)
    if before_id is not None:
        entries = entries.filter(pk__lt=before_id)
    rows = list(entries.order_by("-id")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].pk


def tenant_quotas(*, tenant_id: int, api_key_id: int | None = None) -> list[Quota]:
    """The tenant's quotas (tenant-wide first, then per key); only one key's when api_key_id is set."""
    quotas = Quota.objects.filter(tenant_id=tenant_id).select_related("api_key")
    if api_key_id is not None:
        quotas = quotas.filter(api_key_id=api_key_id)
    return list(quotas.order_by(F("api_key_id").asc(nulls_first=True), "id"))


def quota_for_tenant(*, tenant_id: int, quota_id: int) -> Quota | None:
    return Quota.objects.filter(tenant_id=tenant_id, pk=quota_id).first()


def price_plans() -> list[PricePlan]:
    return list(PricePlan.objects.annotate(price_count=Count("prices")).order_by("name"))


def price_plan_by_id(plan_id: int) -> PricePlan | None:
    return PricePlan.objects.filter(pk=plan_id).first()


def plan_current_prices(*, plan_id: int, at: dt.datetime) -> list[Price]:
    """The version of each (pattern, tenant override) in force at `at`, by model pattern."""
    current: dict[tuple[int | None, str], Price] = {}
    rows = Price.objects.filter(plan_id=plan_id, effective_from__lte=at).select_related("tenant")
    for price in rows.order_by("model_pattern", "tenant_id", "-effective_from"):
        current.setdefault((price.tenant_id, price.model_pattern), price)
    return sorted(current.values(), key=lambda p: (p.model_pattern, p.tenant_id or 0))


# --- Quotas, holds and the balance (authorize, GET /balance, alerts) --------------------------


@dataclass(frozen=True, slots=True)
class CellUsage:
    """One quota cell: settled usage and what open holds reserve in it (tokens, micro-units)."""

    tokens: int = 0
    micros: int = 0
    held_tokens: int = 0
    held_micros: int = 0


def quota_cells_usage(*, tenant_id: int, tz_name: str, cells: Iterable[Cell]) -> dict[Cell, CellUsage]:
    """Settled usage and open-hold reservations of each cell (QuotaCounter rows): one query.

    `tz_name` is the tenant's zone, which the cells' start dates are already cut in.
    """
    cells = list(cells)
    if not cells:
        return {}
    rows = QuotaCounter.objects.filter(
        tenant_id=tenant_id,
        period_start__in={cell.start for cell in cells},
        api_key_ref__in={cell.api_key_ref for cell in cells},
    ).values_list("api_key_ref", "period", "period_start", "tokens", "micros", "held_tokens", "held_micros")
    found = {Cell(ref, period, start): CellUsage(*values) for ref, period, start, *values in rows}
    return {cell: found.get(cell, CellUsage()) for cell in cells}


@dataclass(frozen=True)
class QuotaUsage:
    """A quota's state in its current window. Tokens are whole numbers; money is in currency units.

    `used` is settled usage; `held` is what open authorizations reserve; remaining = limit -
    used - held (never below zero). period_start/end are UTC (end excluded); None for lifetime.
    """

    quota_id: int
    metric: str  # "tokens" | "money"
    window: str  # "day" | "month" | "lifetime"
    enforcement: str  # "hard" | "soft"
    api_key_id: int | None  # None: the whole tenant
    limit: Decimal
    used: Decimal
    held: Decimal
    period_start: dt.datetime | None
    period_end: dt.datetime | None

    @property
    def remaining(self) -> Decimal:
        return max(self.limit - self.used - self.held, Decimal(0))

    @property
    def fraction_used(self) -> Decimal:
        """Settled usage over the limit (1 for a zero limit): what alert thresholds compare."""
        return self.used / self.limit if self.limit else Decimal(1)

    def as_dict(self) -> dict:
        def show(value: Decimal) -> int | str:
            return int(value) if self.metric == Quota.Metric.TOKENS else str(value)

        return {
            "id": self.quota_id,
            "metric": self.metric,
            "window": self.window,
            "enforcement": self.enforcement,
            "scope": "tenant" if self.api_key_id is None else "api_key",
            "api_key_id": self.api_key_id,
            "limit": show(self.limit),
            "used": show(self.used),
            "held": show(self.held),
            "remaining": show(self.remaining),
            "period_start": self.period_start,
            "period_end": self.period_end,
        }


def quota_cell_index(*, tenant_scope: bool, window: str) -> int:
    """Where a quota's cell sits in windows.cells_for(...): tenant d/m/l, then key d/m/l."""
    return (0 if tenant_scope else 3) + PERIODS.index(window)


def quota_usage_from_cell(quota, usage: CellUsage, cell: Cell, tz_name: str) -> QuotaUsage:
    """Build a QuotaUsage from any object with Quota's fields and a cell's counters."""
    period = window_period(cell.period, cell.start, tz_name)
    if quota.metric == Quota.Metric.TOKENS:
        used, held = Decimal(usage.tokens), Decimal(usage.held_tokens)
    else:
        used, held = from_micros(usage.micros), from_micros(usage.held_micros)
    return QuotaUsage(
        quota_id=quota.id,
        metric=quota.metric,
        window=quota.window,
        enforcement=quota.enforcement,
        api_key_id=quota.api_key_id,
        limit=Decimal(quota.limit),
        used=used,
        held=held,
        period_start=period.start if period else None,
        period_end=period.end if period else None,
    )


def quota_usage(*, tenant_id: int, api_key_id: int | None = None, at: dt.datetime | None = None) -> list[QuotaUsage]:
    """Limit, used, held, remaining and window of the tenant's quotas at `at` (default now).

    api_key_id None: every quota of the tenant; a key id: the quotas that apply to that key's
    requests (tenant-wide ones and the key's own). From PostgreSQL, the source of truth.
    """
    tenant = Tenant.objects.filter(pk=tenant_id).only("timezone").first()
    if tenant is None:
        return []
    at = at or timezone.now()
    quotas = Quota.objects.filter(tenant_id=tenant_id)
    if api_key_id is not None:
        quotas = quotas.filter(Q(api_key__isnull=True) | Q(api_key_id=api_key_id))
    quotas = list(quotas.order_by(F("api_key_id").asc(nulls_first=True), "id"))
    starts = window_starts(at, tenant.timezone)
    cell_of = {q.pk: Cell(q.api_key_id or TENANT_SCOPE, q.window, starts[q.window]) for q in quotas}
    usage = quota_cells_usage(tenant_id=tenant_id, tz_name=tenant.timezone, cells=set(cell_of.values()))
    return [quota_usage_from_cell(q, usage[cell_of[q.pk]], cell_of[q.pk], tenant.timezone) for q in quotas]


def wallet_balance_micros(*, tenant_id: int) -> int:
    return to_micros(wallet_balance(tenant_id=tenant_id))


def open_holds(*, tenant_id: int, limit: int = 100) -> list[Hold]:
    """The tenant's open holds, oldest first (at most `limit`)."""
    return list(Hold.objects.filter(tenant_id=tenant_id, status=Hold.Status.OPEN).order_by("created_at", "id")[:limit])


def open_holds_total(*, tenant_id: int) -> tuple[int, Decimal]:
    row = Hold.objects.filter(tenant_id=tenant_id, status=Hold.Status.OPEN).aggregate(
        n=Count("id"), total=Sum("amount")
    )
    return row["n"], row["total"] or Decimal(0)


def hold_by_request(*, tenant_id: int, request_id: str) -> Hold | None:
    return Hold.objects.filter(tenant_id=tenant_id, request_id=request_id).first()


@dataclass(frozen=True)
class TopUp:
    entry_id: int
    created_at: dt.datetime
    amount: Decimal  # currency units
    balance_after: Decimal  # the balance right after this top-up (currency units)


def topups_since(*, tenant_id: int, since: dt.datetime) -> list[TopUp]:
    """Top-ups posted after `since`, oldest first, with the balance each one left (low-balance
    alerts re-arm when a top-up lifts the balance back above their level)."""
    rows = list(
        LedgerEntry.objects.filter(tenant_id=tenant_id, kind=LedgerEntry.Kind.TOPUP, created_at__gt=since)
        .order_by("id")
        .values_list("id", "created_at", "amount")
    )
    if not rows:
        return []
    balance = wallet_balance(tenant_id=tenant_id)
    result = []
    for entry_id, created_at, amount in rows:
        later = LedgerEntry.objects.filter(tenant_id=tenant_id, pk__gt=entry_id).aggregate(total=Sum("amount"))
        result.append(TopUp(entry_id, created_at, amount, balance - (later["total"] or Decimal(0))))
    return result


@dataclass(frozen=True)
class BalanceSummary:
    balance: Decimal  # == sum(ledger): prepaid money net of open holds
    currency: str
    held: Decimal  # reserved by open holds
    holds_count: int
    holds: list[Hold]  # the oldest open holds
    quotas: list[QuotaUsage]


def balance_summary(*, tenant_id: int, holds_limit: int = 100) -> BalanceSummary:
    """What GET /balance shows: from PostgreSQL, the source of truth."""
    wallet = Wallet.objects.filter(tenant_id=tenant_id).only("balance", "currency").first()
    if wallet is not None:
        currency = wallet.currency
    else:
        tenant = Tenant.objects.select_related("price_plan").get(pk=tenant_id)
        currency = tenant.price_plan.currency if tenant.price_plan_id else tenant.currency
    count, held = open_holds_total(tenant_id=tenant_id)
    return BalanceSummary(
        balance=wallet.balance if wallet is not None else Decimal(0),
        currency=currency,
        held=held,
        holds_count=count,
        holds=open_holds(tenant_id=tenant_id, limit=holds_limit) if count else [],
        quotas=quota_usage(tenant_id=tenant_id),
    )


@dataclass(frozen=True)
class FailingTenant:
    job: str
    tenant_id: int
    tenant_slug: str
    tenant_name: str
    error: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    attempts: int
    next_retry_at: dt.datetime


def failing_tenants() -> list[FailingTenant]:
    """Every tenant a periodic job is failing for (billing/services/tenant_jobs.py), the
    longest-failing first: the ops page "Failing jobs"."""
    rows = JobFailure.objects.select_related("tenant").order_by("first_seen", "job", "tenant_id")
    return [
        FailingTenant(
            job=row.job,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant.slug,
            tenant_name=row.tenant.name,
            error=row.error,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            attempts=row.attempts,
            next_retry_at=row.next_retry_at,
        )
        for row in rows
    ]
