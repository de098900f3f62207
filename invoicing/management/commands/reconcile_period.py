from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.cli import tenant_or_error
from invoicing import exports, selectors
from invoicing.management.commands._period import period_or_error
from invoicing.management.commands.export_bills import _write


class Command(BaseCommand):
    help = (
        "Reconcile a month per tenant: rated usage (sum of event costs) vs invoice lines (unrounded "
        "and rounded) vs ledger usage charges. Every difference is printed, none is netted away."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="The month, YYYY-MM.")
        parser.add_argument("--tenant", help="Only this tenant (slug).")
        parser.add_argument("--out", help="Write the report as CSV to this file.")
        parser.add_argument("--bom", action="store_true", help="Start the CSV with a UTF-8 byte order mark.")
        parser.add_argument("--strict", action="store_true", help="Exit non-zero when any difference is found.")

    def handle(self, *args: Any, **options: Any) -> None:
        year, month = period_or_error(options["period"])
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] else None
        rows = selectors.reconciliation(year=year, month=month, tenant=tenant)
        if options["out"]:
            if tenant is not None:
                raise CommandError("--out writes every tenant; drop --tenant.")
            _write(self, exports.reconciliation_csv(year=year, month=month, bom=options["bom"]), options["out"])
        differing = []
        for row in rows:
            notes = []
            if row.rated_minus_invoiced:
                notes.append(f"rated - invoiced {row.rated_minus_invoiced}")
            if row.unpriced_requests:
                notes.append(f"{row.unpriced_requests} unpriced requests")
            if row.ledger_minus_received:
                notes.append(f"ledger - received {row.ledger_minus_received}")
            if row.invoice_lines_rounded != row.invoice_subtotal:
                notes.append(f"lines {row.invoice_lines_rounded} != subtotal {row.invoice_subtotal}")
            self.stdout.write(
                f"{row.tenant} {row.period} {row.currency} {row.invoice_number or row.invoice_status}: "
                f"rated {row.rated_usage} | lines unrounded {row.invoice_lines_unrounded} "
                f"(usage {row.invoice_usage_unrounded}, adjustments {row.invoice_adjustments_unrounded}) | "
                f"lines rounded {row.invoice_lines_rounded} (rounding {row.rounding_difference}) | "
                f"ledger usage {row.ledger_usage_charged} (received {row.rated_usage_received})"
                + (f" | DIFFERENCES: {'; '.join(notes)}" if notes else " | agrees")
            )
            if notes:
                differing.append(row.tenant)
        if not rows:
            self.stdout.write("Nothing to reconcile for this period.")
        if differing and options["strict"]:
            raise CommandError(f"Differences for: {', '.join(differing)}")
