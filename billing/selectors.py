"""Read paths of billing that other apps use: price lookup, wallet state."""

import datetime as dt
import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, F, Q, Sum

from billing.models import LedgerEntry, Price, PricePlan, Quota, Wallet
from billing.rating import PriceTerms, terms_from_price

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

    def terms_for(self, model: str, at: dt.datetime) -> PriceTerms | None:
        for key in self._candidates_for(model):
            for effective_from, terms in self._versions[key]:
                if effective_from <= at:
                    return terms
        return None


def price_book_for(*, plan_id: int | None, tenant_id: int, models: set[str]) -> PriceBook | None:
    """One query: every version of the exact names in `models` and of every glob in the plan."""
    if plan_id is None:
        return None
    plan = PricePlan.objects.filter(pk=plan_id).only("currency", "allow_unpriced_models").first()
    if plan is None:
        return None
    book = PriceBook(currency=plan.currency, allow_unpriced=plan.allow_unpriced_models)
    pattern_filter = Q(model_pattern__in=models)
    for ch in _GLOB_CHARS:
        pattern_filter |= Q(model_pattern__contains=ch)
    rows = (
        Price.objects.filter(plan_id=plan_id)
        .filter(Q(tenant__isnull=True) | Q(tenant_id=tenant_id))
        .filter(pattern_filter)
        .order_by("-effective_from")
    )
    versions: dict[tuple[bool, str], list] = defaultdict(list)
    for price in rows:
        versions[(price.tenant_id is not None, price.model_pattern)].append(
            (price.effective_from, terms_from_price(price))
        )
    book._versions = dict(versions)
    return book


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

