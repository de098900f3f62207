from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.cli import tenant_or_error
from billing.money import currency_exponent
from invoicing import services
from invoicing.management.commands._period import period_or_error


class Command(BaseCommand):
    help = (
        "Close a month: create or refresh each tenant's draft invoice for the tenant-local month "
        "(late events fold in), and with --finalize issue it with the next gapless number. "
        "Idempotent: running it again creates nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="The month, YYYY-MM (each tenant's own time zone).")
        parser.add_argument("--tenant", help="Only this tenant (slug); default every tenant.")
        parser.add_argument("--finalize", action="store_true", help="Issue the invoices (numbers them; final).")

    def handle(self, *args: Any, **options: Any) -> None:
        year, month = period_or_error(options["period"])
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] else None
        results = services.invoices_close_month(
            year=year, month=month, tenant=tenant, finalize=options["finalize"], actor_label="cli"
        )
        failed = []
        for result in results:
            invoice = result.invoice
            figures = ""
            if invoice is not None:
                places = currency_exponent(invoice.currency)
                figures = (
                    f" {invoice.number or 'draft'} subtotal {invoice.subtotal:.{places}f} {invoice.currency},"
                    f" due {invoice.amount_due:.{places}f}"
                )
            self.stdout.write(f"{result.tenant} {result.period}: {result.outcome}{figures}")
            if result.message:
                self.stderr.write(f"  {result.message}")
                if (options["finalize"] and result.outcome == "draft") or result.outcome == services.FAILED:
                    failed.append(result.tenant)
        if not results:
            self.stdout.write("No tenants.")
        if failed:
            raise CommandError(f"Not finalized: {', '.join(failed)} (see the messages above).")
