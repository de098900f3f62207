"""Invoices in the admin: read-only. Changes go through the services (close, pay, void, credit)."""

from typing import cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from accounts.admin_audit import ReadOnlyAdmin
from invoicing import services
from invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSequence


def _staff(request: HttpRequest) -> User:
    return cast(User, request.user)  # the admin serves signed-in staff only, never AnonymousUser


class InvoiceLineInline(admin.TabularInline):  # type: ignore[type-arg]  # generic only in the stubs, not at runtime
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = (
        "position",
        "kind",
        "usage_period",
        "model",
        "token_kind",
        "quantity",
        "unit_price_per_mtok",
        "amount",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "tenant", "period", "status", "currency", "subtotal", "amount_due", "finalized_at"]
    list_filter = ["status", "period"]
    search_fields = ["number", "tenant__slug", "tenant_name"]
    inlines = [InvoiceLineInline]
    actions = ["finalize_drafts", "mark_paid"]

    @admin.action(description="Finalize the selected drafts (numbers them)")
    def finalize_drafts(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        for invoice in queryset.filter(status=Invoice.Status.DRAFT).order_by("tenant_id", "period"):
            try:
                services.invoice_finalize(invoice=invoice, actor=_staff(request))
            except services.InvoiceError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)

    @admin.action(description="Mark the selected finalized invoices paid")
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        for invoice in queryset.filter(status=Invoice.Status.FINALIZED):
            services.invoice_mark_paid(invoice=invoice, actor=_staff(request))


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["number", "invoice", "tenant", "amount", "currency", "issued_at", "actor_label"]
    search_fields = ["number", "invoice__number", "tenant__slug"]


@admin.register(NumberSequence)
class NumberSequenceAdmin(ReadOnlyAdmin):
    list_display = ["kind", "year", "last_value"]
