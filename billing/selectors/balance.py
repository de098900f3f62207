"""What GET /balance shows: the wallet, open holds and every quota's usage, in one summary."""

from dataclasses import dataclass
from decimal import Decimal

from accounts.models import Tenant
from billing.models import Hold, Wallet
from billing.selectors.holds import open_holds, open_holds_total
from billing.selectors.quotas import QuotaUsage, quota_usage


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
        currency = tenant.price_plan.currency if tenant.price_plan is not None else tenant.currency
    count, held = open_holds_total(tenant_id=tenant_id)
    return BalanceSummary(
        balance=wallet.balance if wallet is not None else Decimal(0),
        currency=currency,
        held=held,
        holds_count=count,
        holds=open_holds(tenant_id=tenant_id, limit=holds_limit) if count else [],
        quotas=quota_usage(tenant_id=tenant_id),
    )
