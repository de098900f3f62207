"""Finance exports: CSV of all tenants' invoices and lines, per-invoice CSV, reconciliation CSV.

Stable column order, decimals written in a fixed number of places, rows in a fixed order and
nothing that depends on when the file was made: the same data gives the same bytes. The BOM
option prefixes UTF-8's byte order mark so that Excel opens non-ASCII names correctly. Cells
go through api.csv_writer, which neutralises text a spreadsheet would run as a formula
(tenant names, models, descriptions); amounts are plain decimal strings and stay numbers.
"""

import csv
import datetime as dt
import io
from decimal import Decimal

from api import csv_writer
from billing.money import currency_exponent
from invoicing import selectors
from invoicing.models import Invoice, InvoiceLine

BOM = "\ufeff"

BILLS_COLUMNS = (
    "record", "invoice_number", "status", "tenant", "tenant_name", "period", "currency",
    "period_start_utc", "period_end_utc", "finalized_at_utc", "line", "line_kind", "usage_period",
    "model", "token_kind", "price_id", "price_effective_from_utc", "long_context", "service_tier",
    "description", "requests", "quantity_tokens", "unit_price_per_1m", "unit_price_per_1k", "amount_unrounded",
    "amount", "subtotal", "credits_applied", "amount_due", "credited", "cost", "margin",
)  # fmt: skip

INVOICE_COLUMNS = (
    "line", "line_kind", "usage_period", "model", "token_kind", "price_effective_from_utc", "long_context",
    "service_tier", "description", "requests", "quantity_tokens", "unit_price_per_1m", "unit_price_per_1k",
    "amount_unrounded", "amount",
)  # fmt: skip

RECONCILIATION_COLUMNS = (
    "tenant", "period", "currency", "invoice_number", "invoice_status", "requests", "unpriced_requests",
    "rated_usage", "invoice_usage_unrounded", "rated_minus_invoiced", "invoice_adjustments_unrounded",
    "invoice_lines_unrounded", "invoice_lines_rounded", "rounding_difference", "invoice_subtotal",
    "rated_usage_received", "ledger_usage_charged", "ledger_minus_received",
)  # fmt: skip


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:.{currency_exponent(currency)}f}"


def _exact(amount: Decimal) -> str:
    return f"{amount:.18f}"


def _rate(amount: Decimal) -> str:
    return f"{amount:.12f}"


def _per_k(per_mtok: Decimal) -> str:
    return f"{per_mtok / 1000:.15f}"


def _time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else ""


def _writer(buffer: io.StringIO) -> csv_writer.SafeWriter:
    return csv_writer.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def _finish(buffer: io.StringIO, *, bom: bool) -> bytes:
    return ((BOM if bom else "") + buffer.getvalue()).encode("utf-8")


def _line_cells(line: InvoiceLine, currency: str) -> list[str]:
    return [
        str(line.position),
        line.kind,
        line.usage_period,
        line.model,
        line.token_kind,
        _time(line.price_effective_from),
        "yes" if line.long_context else "no",
        line.service_tier,
        line.description,
        str(line.requests),
        str(line.quantity),
        _rate(line.unit_price_per_mtok),
        _per_k(line.unit_price_per_mtok),
        _exact(line.amount_unrounded),
        _money(line.amount, currency),
    ]


def _cost_cells(amount: Decimal, cost: Decimal | None, currency: str) -> list[str]:
    """Resale: our cost of the amount and the gross margin (amount - cost, exactly); blank when
    the price has no cost price."""
    if cost is None:
        return ["", ""]
    return [_money(cost, currency), _money(amount - cost, currency)]


def bills_csv(*, period: str, bom: bool = False) -> bytes:
    """One file for finance: per invoice a header row with totals, then its lines. `cost` and
    `margin` (resale): the invoice's cost is the sum of its lines' rounded cost."""
    buffer = io.StringIO()
    writer = _writer(buffer)
    writer.writerow(BILLS_COLUMNS)
    for invoice in selectors.invoices_for_period(period=period):
        cur = invoice.currency
        credited = sum((note.amount for note in invoice.credit_notes.all()), Decimal(0))
        head = [
            invoice.number or "",
            invoice.status,
            invoice.tenant.slug,
            invoice.tenant_name,
            invoice.period,
            cur,
            _time(invoice.period_start),
            _time(invoice.period_end),
            _time(invoice.finalized_at),
        ]
        writer.writerow(
            [
                "invoice",
                *head,
                *[""] * 16,
                _money(invoice.subtotal, cur),
                _money(invoice.credits_applied, cur),
                _money(invoice.amount_due, cur),
                _money(credited, cur),
                *_cost_cells(invoice.subtotal, invoice.cost_basis, cur),
            ]
        )
        for line in selectors.lines_of(invoice):
            cells = _line_cells(line, cur)
            writer.writerow(["line", *head, cells[0], cells[1], cells[2], cells[3], cells[4], str(line.price_id or ""),
                             *cells[5:], "", "", "", "", *_cost_cells(line.amount, line.cost_basis, cur)])  # fmt: skip
    return _finish(buffer, bom=bom)


def invoice_csv(invoice: Invoice, *, bom: bool = False) -> bytes:
    """One invoice: its lines, then the totals as labelled rows."""
    buffer = io.StringIO()
    writer = _writer(buffer)
    cur = invoice.currency
    writer.writerow(INVOICE_COLUMNS)
    for line in selectors.lines_of(invoice):
        writer.writerow(_line_cells(line, cur))
    blank = [""] * (len(INVOICE_COLUMNS) - 2)
    writer.writerow(["subtotal", *blank, _money(invoice.subtotal, cur)])
    writer.writerow(["credits_applied", *blank, _money(invoice.credits_applied, cur)])
    writer.writerow(["amount_due", *blank, _money(invoice.amount_due, cur)])
    return _finish(buffer, bom=bom)


def reconciliation_csv(*, year: int, month: int, bom: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = _writer(buffer)
    writer.writerow(RECONCILIATION_COLUMNS)
    for row in selectors.reconciliation(year=year, month=month):
        writer.writerow(
            [
                row.tenant,
                row.period,
                row.currency,
                row.invoice_number,
                row.invoice_status,
                str(row.requests),
                str(row.unpriced_requests),
                _exact(row.rated_usage),
                _exact(row.invoice_usage_unrounded),
                _exact(row.rated_minus_invoiced),
                _exact(row.invoice_adjustments_unrounded),
                _exact(row.invoice_lines_unrounded),
                _money(row.invoice_lines_rounded, row.currency),
                _exact(row.rounding_difference),
                _money(row.invoice_subtotal, row.currency),
                _exact(row.rated_usage_received),
                _exact(row.ledger_usage_charged),
                _exact(row.ledger_minus_received),
            ]
        )
    return _finish(buffer, bom=bom)
