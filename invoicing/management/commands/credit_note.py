"""credit_note: issue a credit note against a finalized or paid invoice, audited."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.money import currency_exponent
from invoicing import selectors, services


class Command(BaseCommand):
    help = (
        "Issue a credit note against a finalized or paid invoice: everything not yet credited, or "
        "--amount. The note is numbered CN-YYYY-NNNNNN, credited to the tenant's wallet as an "
        "adjustment and audited; the invoice itself never changes, and the credited total never "
        "exceeds its subtotal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--invoice", required=True, metavar="NUMBER", help="e.g. INV-2026-000042")
        parser.add_argument("--reason", required=True, help="why; printed on the note and kept in the audit log")
        parser.add_argument("--amount", help="in the invoice's currency, e.g. 12.50 (default: all that is left)")

    def handle(self, *args: Any, **options: Any) -> None:
        invoice = selectors.invoice_by_number(options["invoice"])
        if invoice is None:
            raise CommandError(
                f"No invoice numbered {options['invoice'].strip()!r}. A draft has no number until it is "
                "finalized (close_month --finalize)."
            )
        try:
            amount = None
            if options["amount"] is not None:
                amount = services.credit_note_amount(options["amount"], invoice.currency)
            note = services.credit_note_issue(
                invoice=invoice, reason=options["reason"], amount=amount, actor_label="cli:credit_note"
            )
        except services.InvoiceError as exc:
            raise CommandError(str(exc)) from None
        places = currency_exponent(note.currency)
        self.stdout.write(
            self.style.SUCCESS(
                f"{note.number}: {note.amount:.{places}f} {note.currency} credited against {invoice.number}"
                f" to {invoice.tenant.slug}'s wallet."
            )
        )
