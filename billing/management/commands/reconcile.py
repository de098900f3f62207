"""reconcile: compare the hot balance counters (and each wallet row) with the ledger; fix drift."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.cli import tenant_or_error
from billing.services.balances import BalanceUnavailable
from billing.services.reconcile import balances_reconcile


class Command(BaseCommand):
    help = (
        "Compare every tenant's cached balance and quota counters (Redis with BALANCE_BACKEND=redis, "
        "and the wallet row) with PostgreSQL's ledger, fix any drift with SET, and report it. "
        "Exits 0 when clean or fixed; with --check, 1 when drift is found (and nothing is changed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant (default: all)")
        parser.add_argument("--check", action="store_true", help="report only; exit 1 on any drift")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id = tenant_or_error(options["tenant"]).pk if options["tenant"] else None
        try:
            report = balances_reconcile(tenant_id=tenant_id, fix=not options["check"])
        except BalanceUnavailable as exc:
            raise CommandError(exc.message) from None
        for wallet in report.wallets:
            self.stdout.write(
                f"tenant {wallet.tenant_id}: wallet {wallet.wallet} != ledger {wallet.ledger}"
                + (" (fixed)" if wallet.fixed else "")
            )
        for drift in report.drifts:
            self.stdout.write(
                f"tenant {drift.tenant_id}: {drift.key} cached {drift.cached}, expected {drift.expected}"
                + (" (fixed)" if drift.fixed else "")
            )
        found = len(report.wallets) + len(report.drifts)
        summary = f"{report.tenants} tenant(s) checked on the {report.backend} backend: {found} drift(s)"
        if found and options["check"]:
            raise CommandError(summary + " (not fixed: --check)")
        self.stdout.write(self.style.SUCCESS(summary + (", fixed." if found else ".")))
