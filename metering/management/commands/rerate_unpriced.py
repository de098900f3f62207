from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.cli import tenant_or_error
from metering.services.rerate import usage_rerate_unpriced


class Command(BaseCommand):
    help = (
        "Price usage stored without a price, now that a price exists (at each event's own time), "
        "charge the wallet once for it, and record it in the audit log. Safe to run again: "
        "events already priced are never re-rated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant (default: every tenant).")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] is not None else None
        result = usage_rerate_unpriced(tenant_id=tenant.pk if tenant is not None else None, actor_label="cli")
        charged = ", ".join(f"{amount} {currency}" for currency, amount in sorted(result.charged.items())) or "nothing"
        self.stdout.write(f"Priced {result.priced} event(s); charged {charged}.")
        if result.still_unpriced:
            self.stdout.write(
                f"{result.still_unpriced} event(s) still have no price for their model and time; "
                "add the price (import_prices or the admin) and run this again."
            )
        if result.days:
            days = sum(len(tenant_days) for tenant_days in result.days.values())
            self.stdout.write(f"Rebuilt the daily rollups of {days} tenant-day(s) whose cost changed.")
