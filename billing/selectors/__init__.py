"""Read paths of billing that other apps use, one concept per module; every public name is
re-exported here, so `from billing import selectors` and `from billing.selectors import ...` work.

- prices.py: price books (which price applies) and their bounded cache; plans and their prices
- wallets.py: the balance, ledger sums and pages, top-ups
- quotas.py: quotas and their usage (QuotaCounter cells): the one read model of quota usage
- holds.py: open holds
- balance.py: the balance summary (GET /balance)
- jobs.py: periodic jobs failing per tenant
"""

from billing.patterns import is_glob
from billing.selectors.balance import BalanceSummary, balance_summary
from billing.selectors.holds import hold_by_request, open_holds, open_holds_total
from billing.selectors.jobs import FailingTenant, failing_tenants
from billing.selectors.prices import (
    PriceBook,
    TenantPrice,
    cost_terms,
    plan_current_prices,
    price_book_for,
    price_book_for_tenant,
    price_plan_by_id,
    price_plans,
    tenant_prices,
)
from billing.selectors.quotas import (
    CellUsage,
    QuotaUsage,
    quota_cell_index,
    quota_cells_usage,
    quota_for_tenant,
    quota_usage,
    quota_usage_from_cell,
    tenant_quotas,
)
from billing.selectors.wallets import (
    TopUp,
    ledger_entries_page,
    ledger_sum,
    topups_since,
    wallet_balance,
    wallet_balance_micros,
    wallet_balances,
)

__all__ = [
    "BalanceSummary",
    "CellUsage",
    "FailingTenant",
    "PriceBook",
    "QuotaUsage",
    "TenantPrice",
    "TopUp",
    "balance_summary",
    "cost_terms",
    "failing_tenants",
    "hold_by_request",
    "is_glob",
    "ledger_entries_page",
    "ledger_sum",
    "open_holds",
    "open_holds_total",
    "plan_current_prices",
    "price_book_for",
    "price_book_for_tenant",
    "price_plan_by_id",
    "price_plans",
    "quota_cell_index",
    "quota_cells_usage",
    "quota_for_tenant",
    "quota_usage",
    "quota_usage_from_cell",
    "tenant_prices",
    "tenant_quotas",
    "topups_since",
    "wallet_balance",
    "wallet_balance_micros",
    "wallet_balances",
]
