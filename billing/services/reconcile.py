"""The reconciler: the ledger is the truth; the wallet row and the hot counters are caches of it.

For each tenant, under its exclusive balance lock (nothing moves meanwhile):
1. Wallet.balance must equal sum(ledger); a difference is reported and the wallet set to the sum.
2. The balance backend compares its keys (bal, quota cells) with PostgreSQL and SETs drifted ones.
Run it from cron or Celery (`reconcile` command); it is read-only with fix=False.
"""

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from accounts.models import Tenant
from billing.models import LedgerEntry, Wallet
from billing.services.balances import Drift, balance_backend
from billing.services.balances.base import lock_tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalletDrift:
    tenant_id: int
    wallet: Decimal
    ledger: Decimal
    fixed: bool


@dataclass
class ReconcileReport:
    backend: str
    tenants: int = 0
    wallets: list[WalletDrift] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.wallets and not self.drifts


def balances_reconcile(*, tenant_id: int | None = None, fix: bool = True) -> ReconcileReport:
    backend = balance_backend()
    report = ReconcileReport(backend=backend.name)
    tenants = Tenant.objects.order_by("id").only("id", "timezone")
    if tenant_id is not None:
        tenants = tenants.filter(pk=tenant_id)
    for tenant in tenants.iterator():
        report.tenants += 1
        with transaction.atomic():
            lock_tenant(tenant.pk, exclusive=True)
            wallet = Wallet.objects.select_for_update().filter(tenant_id=tenant.pk).first()
            if wallet is not None:
                total = LedgerEntry.objects.filter(tenant_id=tenant.pk).aggregate(s=Sum("amount"))["s"] or Decimal(0)
                if wallet.balance != total:
                    report.wallets.append(WalletDrift(tenant.pk, wallet.balance, total, fix))
                    if fix:
                        Wallet.objects.filter(pk=wallet.pk).update(balance=total)
            report.drifts += backend.drift(tenant_id=tenant.pk, tz_name=tenant.timezone, fix=fix)
    if not report.clean:
        logger.warning(
            "balance drift",
            extra={"wallets": len(report.wallets), "keys": len(report.drifts), "fixed": fix},
        )
    return report
