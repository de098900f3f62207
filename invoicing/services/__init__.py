"""Monthly close: draft invoices, finalization with gapless numbers, payments, voids, credit notes.

The rules (docs/billing-rules.md, "Invoices and monthly close"):
- An invoice covers one tenant-local month. Its usage lines are the rated usage of events that
  occurred in the month and were received before the invoice's `usage_cutoff`, per model,
  price version, context tier and token kind. Each line is rounded once to the currency's minor
  unit (ROUND_HALF_EVEN); the subtotal is the sum of the rounded lines, exactly.
- Until it is finalized the invoice is a draft, recomputed on every refresh (late events fold
  in during the grace period). Finalizing takes the next number of the issuing year from a
  counter row locked with SELECT ... FOR UPDATE in the same transaction, so numbers are gapless.
- Usage received after a month's invoice was finalized is stored like any other and billed on
  the tenant's next open invoice as adjustment lines ("usage for 2026-10 received after close").
- Prepaid credits applied: the wallet pays usage as it happens; what it had for the month (its
  balance when the month began plus the money paid in during it) is applied up to the subtotal,
  and the rest is due.

One module per concept: `periods` (which month), `lines` (an invoice's lines from rated usage,
priced by billing.rating), `drafts` (create and recompute), `numbering` (gapless numbers),
`finalize`, `payments` (paid, void), `credit_notes`, `close` (the monthly close of every
tenant). Callers import from this package.
"""

from invoicing.models import InvoiceImmutable
from invoicing.services.close import FAILED, CloseResult, invoices_close_due, invoices_close_month
from invoicing.services.credit_notes import credit_note_amount, credit_note_issue
from invoicing.services.drafts import invoice_draft_refresh
from invoicing.services.errors import InvoiceError
from invoicing.services.finalize import invoice_finalize
from invoicing.services.lines import Computed, LineData, invoice_compute
from invoicing.services.payments import invoice_mark_paid, invoice_void
from invoicing.services.periods import parse_period, period_label

__all__ = [
    "FAILED",
    "CloseResult",
    "Computed",
    "InvoiceError",
    "InvoiceImmutable",
    "LineData",
    "credit_note_amount",
    "credit_note_issue",
    "invoice_compute",
    "invoice_draft_refresh",
    "invoice_finalize",
    "invoice_mark_paid",
    "invoice_void",
    "invoices_close_due",
    "invoices_close_month",
    "parse_period",
    "period_label",
]
