"""Prices, wallets, the ledger and quotas in the Django admin.

Edits of price plans, prices (new versions only) and quotas are audited
(accounts.admin_audit). Wallets, ledger entries, holds and quota counters are
read-only: money moves only through the ledger's services (the wallet top-up action posts an
audited ledger credit). Resale history (exchange rates, markups, what a price was derived from,
a plan's cost plan) is read-only here too: the commands set_exchange_rate, set_cost_plan,
set_markup and derive_prices validate, version and audit it.
"""

from decimal import Decimal
from typing import cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.admin_audit import AuditedModelAdmin, ReadOnlyAdmin
from billing.models import (
    ExchangeRate,
    Hold,
    LedgerEntry,
    Markup,
    Price,
    PricePlan,
    Quota,
    QuotaCounter,
    Wallet,
)
from billing.services.topups import topup_amount, wallet_topup


@admin.register(PricePlan)
class PricePlanAdmin(AuditedModelAdmin):
    list_display = ["name", "slug", "currency", "cost_plan", "allow_unpriced_models", "created_at"]
    search_fields = ["name", "slug"]
    readonly_fields = ["cost_plan"]  # manage.py set_cost_plan (validated, audited)


@admin.register(Price)
class PriceAdmin(AuditedModelAdmin):
    """Prices are versioned: add a new version with a later effective_from, never edit one."""

    list_display = [
        "plan", "tenant", "model_pattern", "effective_from", "input_per_mtok", "output_per_mtok",
        "cached_input_per_mtok", "cache_write_per_mtok", "tier_threshold", "markup", "exchange_rate", "cost_price",
    ]  # fmt: skip
    list_filter = ["plan"]
    search_fields = ["model_pattern"]
    readonly_fields = ["cost_price", "markup", "exchange_rate"]  # set by derivation only

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(ExchangeRate)
class ExchangeRateAdmin(ReadOnlyAdmin):
    """Versions of operator-set rates: `manage.py set_exchange_rate` adds one (audited)."""

    list_display = ["base", "quote", "rate", "effective_from", "created_by", "note", "created_at"]
    list_filter = ["base", "quote"]


@admin.register(Markup)
class MarkupAdmin(ReadOnlyAdmin):
    """Versions of a sell plan's markups and fixed prices: `manage.py set_markup` adds one (audited)."""

    list_display = ["plan", "model_pattern", "multiplier", "fixed_rates", "effective_from", "created_by"]
    list_filter = ["plan"]
    search_fields = ["model_pattern"]


class TopupForm(forms.Form):
    amount = forms.CharField(help_text="In the wallet's currency, e.g. 10.00 (at most 6 decimal places).")
    reference = forms.CharField(
        max_length=150, help_text="The payment or transfer id: the same reference is never credited twice."
    )

    def clean_amount(self) -> Decimal:
        return topup_amount(self.cleaned_data["amount"])


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    """Balances are moved only through the ledger: the top-up action posts an audited credit."""

    list_display = ["tenant", "balance", "currency", "updated_at"]
    search_fields = ["tenant__slug", "tenant__name"]
    actions = ["topup"]

    def has_topup_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser or request.user.has_perm("billing.add_ledgerentry"))

    @admin.action(description="Top up the selected wallets", permissions=["topup"])
    def topup(self, request: HttpRequest, queryset: QuerySet[Wallet]) -> HttpResponse | None:
        form = TopupForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            reference = form.cleaned_data["reference"].strip()
            many = queryset.count() > 1
            for wallet in queryset.select_related("tenant", "tenant__price_plan"):
                # One reference per wallet when several are credited at once.
                ref = f"{reference}:{wallet.tenant.slug}" if many else reference
                try:
                    entry, created = wallet_topup(
                        tenant=wallet.tenant,
                        amount=form.cleaned_data["amount"],
                        reference=ref,
                        actor=cast(User, request.user),  # the admin serves signed-in staff only
                    )
                except ValidationError as exc:
                    self.message_user(request, f"{wallet.tenant.slug}: {' '.join(exc.messages)}", messages.ERROR)
                    continue
                if created:
                    self.message_user(request, f"{wallet.tenant.slug}: credited {entry.amount} {wallet.currency}.")
                else:
                    self.message_user(
                        request, f"{wallet.tenant.slug}: reference {ref!r} was already credited.", messages.WARNING
                    )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Top up wallets",
            "form": form,
            "wallets": list(queryset.select_related("tenant")),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "billing/admin/wallet_topup.html", context)


@admin.register(QuotaCounter)
class QuotaCounterAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "api_key_ref", "period", "period_start", "tokens", "micros"]
    list_filter = ["period"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "kind", "amount", "idempotency_key", "reference", "actor_label"]
    list_filter = ["kind", "tenant"]
    search_fields = ["idempotency_key", "reference"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "tenant", "request_id", "model", "amount", "status", "expires_at", "settled_amount", "overage",
    ]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["request_id"]


@admin.register(Quota)
class QuotaAdmin(AuditedModelAdmin):
    list_display = ["tenant", "api_key", "metric", "window", "limit", "enforcement"]
    list_filter = ["metric", "window", "enforcement"]
