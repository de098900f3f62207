"""Invoices, their lines, credit notes and the gapless number sequences.

Money fields say their unit. Line amounts are rounded once, to the currency's minor unit
(billing.money.round_to_currency, ROUND_HALF_EVEN); `amount_unrounded` keeps the exact sum
of the rated usage behind the line. A finalized invoice never changes: the services refuse,
save()/delete() here refuse, the admin and the API are read-only, and on PostgreSQL a trigger
(migration 0002) raises on any UPDATE or DELETE that would alter one.
"""

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models

from billing.money import DecimalColumn

AMOUNT_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 6}  # currency units, rounded to the minor unit
EXACT_FIELD: DecimalColumn = {"max_digits": 38, "decimal_places": 18}  # currency units, unrounded
PRICE_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 12}  # currency units per 1M tokens


class InvoiceImmutable(Exception):
    """A finalized invoice (or its lines, or an issued credit note) cannot be changed."""


class NumberSequence(models.Model):
    """One counter per document kind and issuing year; the row is locked while a number is taken."""

    class Kind(models.TextChoices):
        INVOICE = "INV"
        CREDIT_NOTE = "CN"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    year = models.PositiveSmallIntegerField()
    last_value = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "year"], name="number_sequence_unique_kind_year")]

    def __str__(self) -> str:
        return f"{self.kind}-{self.year}: {self.last_value}"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        FINALIZED = "finalized"
        PAID = "paid"
        VOID = "void"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)  # "YYYY-MM", the tenant-local month
    period_start = models.DateTimeField()  # UTC, included
    period_end = models.DateTimeField()  # UTC, excluded
    timezone = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    language = models.CharField(max_length=8, default="en")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    number = models.CharField(max_length=32, null=True, blank=True, unique=True)  # drafts have none
    # Events received before this instant are on this invoice (or an earlier one); later ones
    # land on the next open invoice as adjustment lines. Drafts: the last refresh.
    usage_cutoff = models.DateTimeField()
    unrounded_total = models.DecimalField(**EXACT_FIELD, default=0)  # sum of line amount_unrounded
    subtotal = models.DecimalField(**AMOUNT_FIELD, default=0)  # sum of rounded line amounts
    credits_applied = models.DecimalField(**AMOUNT_FIELD, default=0)  # prepaid wallet funds
    amount_due = models.DecimalField(**AMOUNT_FIELD, default=0)  # subtotal - credits_applied
    # Resale: our cost of the billed usage, the sum of the lines' rounded cost_basis (lines
    # without a cost price add 0). Gross margin = subtotal - cost_basis, exactly.
    cost_basis = models.DecimalField(**AMOUNT_FIELD, default=0)
    tenant_name = models.CharField(max_length=200)
    issuer = models.JSONField(default=dict, blank=True)  # issuer details frozen at finalization
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-period", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period"], name="invoice_unique_tenant_period"),
            models.CheckConstraint(
                condition=models.Q(status__in=["draft", "finalized", "paid", "void"]), name="invoice_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status="draft", number__isnull=True, finalized_at__isnull=True)
                | (~models.Q(status="draft") & models.Q(number__isnull=False, finalized_at__isnull=False)),
                name="invoice_number_iff_issued",
            ),
            models.CheckConstraint(
                condition=models.Q(subtotal__gte=0, credits_applied__gte=0, amount_due__gte=0)
                & models.Q(credits_applied__lte=models.F("subtotal"))
                & models.Q(amount_due=models.F("subtotal") - models.F("credits_applied")),
                name="invoice_totals_consistent",
            ),
        ]
        indexes = [models.Index(fields=["period", "status"], name="invoice_period_status")]

    def __str__(self) -> str:
        return self.number or f"draft {self.period} ({self.tenant_id})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Drafts are written by the services; an issued invoice changes state only through the
        # services' conditional UPDATE (finalized -> paid / void), never through save().
        if self._stored_is_issued():
            raise InvoiceImmutable(f"Invoice {self.number} is {self.status}; it cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        if self._stored_is_issued():
            raise InvoiceImmutable(f"Invoice {self.number} is {self.status}; it cannot be deleted.")
        return super().delete(*args, **kwargs)

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    def _stored_is_issued(self) -> bool:
        if self.pk is None:
            return False
        return Invoice.objects.filter(pk=self.pk).exclude(status=self.Status.DRAFT).exists()


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage"
        ADJUSTMENT = "adjustment"  # usage of an already finalized period, received after its close

    class TokenKind(models.TextChoices):
        INPUT = "input"  # uncached input: input - cached_input - cache_write
        OUTPUT = "output"
        CACHED_INPUT = "cached_input"
        CACHE_WRITE = "cache_write"  # 5-minute writes: cache_write - cache_write_1h
        CACHE_WRITE_1H = "cache_write_1h"
        REASONING = "reasoning"  # part of the output; "output" is then output - reasoning

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.USAGE)
    usage_period = models.CharField(max_length=7)  # "YYYY-MM" the usage occurred in (tenant-local)
    model = models.CharField(max_length=200)
    token_kind = models.CharField(max_length=16, choices=TokenKind.choices)
    price = models.ForeignKey("billing.Price", null=True, on_delete=models.PROTECT, related_name="+")
    price_effective_from = models.DateTimeField(null=True)
    long_context = models.BooleanField(default=False)  # priced at the context tier's rates
    service_tier = models.CharField(max_length=16, default="default")  # the requests' billing.models.ServiceTier
    description = models.CharField(max_length=300)
    requests = models.BigIntegerField(default=0)  # events contributing to this line
    quantity = models.BigIntegerField()  # tokens
    unit_price_per_mtok = models.DecimalField(**PRICE_FIELD)  # currency units per 1M tokens
    amount_unrounded = models.DecimalField(**EXACT_FIELD)  # quantity x unit price / 1M, exact
    amount = models.DecimalField(**AMOUNT_FIELD)  # rounded once to the currency's minor unit
    # Resale: the same tokens at the cost price the line's price was derived from (in the
    # invoice's currency), exact and rounded once like `amount`; null without a cost price.
    cost_basis_unrounded = models.DecimalField(**EXACT_FIELD, null=True, blank=True)
    cost_basis = models.DecimalField(**AMOUNT_FIELD, null=True, blank=True)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_unique_position"),
            models.CheckConstraint(condition=models.Q(quantity__gte=0), name="invoice_line_quantity_non_negative"),
        ]

    def __str__(self) -> str:
        return self.description

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._invoice_is_issued():
            raise InvoiceImmutable("Lines of an issued invoice cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        if self._invoice_is_issued():
            raise InvoiceImmutable("Lines of an issued invoice cannot be deleted.")
        return super().delete(*args, **kwargs)

    @property
    def unit_price_per_ktok(self) -> Decimal:
        return self.unit_price_per_mtok / 1000

    def _invoice_is_issued(self) -> bool:
        return Invoice.objects.filter(pk=self.invoice_id).exclude(status=Invoice.Status.DRAFT).exists()


class CreditNote(models.Model):
    """A full or partial credit against an issued invoice. Issued once, never changed."""

    number = models.CharField(max_length=32, unique=True)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**AMOUNT_FIELD)  # currency units, rounded to the minor unit, > 0
    reason = models.TextField()
    issued_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="credit_note_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and CreditNote.objects.filter(pk=self.pk).exists():
            raise InvoiceImmutable(f"Credit note {self.number} is issued; it cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise InvoiceImmutable(f"Credit note {self.number} is issued; it cannot be deleted.")
