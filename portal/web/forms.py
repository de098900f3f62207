"""Browser forms: parse and validate input; services do the work."""

from decimal import Decimal

from django import forms
from django.utils.translation import gettext_lazy as _

from billing.models import Quota
from portal.accounts.models import ApiKey

SCOPE_CHOICES = [
    (ApiKey.Scope.INGEST, _("ingest: post usage")),
    (ApiKey.Scope.READ, _("read: query usage and balance")),
]
METRIC_CHOICES = [(Quota.Metric.TOKENS, _("tokens")), (Quota.Metric.MONEY, _("money"))]
WINDOW_CHOICES = [
    (Quota.Window.DAY, _("per day")),
    (Quota.Window.MONTH, _("per month")),
    (Quota.Window.LIFETIME, _("lifetime")),
]
ENFORCEMENT_CHOICES = [
    (Quota.Enforcement.HARD, _("hard: refuse with 402")),
    (Quota.Enforcement.SOFT, _("soft: alert only")),
]


class UsageFilterForm(forms.Form):
    """The usage explorer's filter; the date range is read separately (see ranges.py)."""

    key = forms.TypedChoiceField(label=_("API key"), required=False, coerce=int, empty_value=None)
    # Free text with suggestions: a model used minutes ago may not be in the rollups yet.
    model = forms.CharField(
        label=_("Model"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"list": "known-models", "placeholder": _("All models")}),
    )

    def __init__(self, *args, keys: list[ApiKey], models: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["key"].choices = [("", _("All keys"))] + [(k.pk, k.name or k.prefix) for k in keys]
        self.known_models = models


class QuotaForm(forms.Form):
    metric = forms.ChoiceField(label=_("Limit on"), choices=METRIC_CHOICES)
    window = forms.ChoiceField(label=_("Window"), choices=WINDOW_CHOICES, initial=Quota.Window.MONTH)
    limit = forms.DecimalField(label=_("Limit"), min_value=Decimal(0), max_digits=18, decimal_places=6)
    enforcement = forms.ChoiceField(label=_("Enforcement"), choices=ENFORCEMENT_CHOICES)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"),
        choices=SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.INGEST, ApiKey.Scope.READ],
    )
    # An optional quota for this key, set in the same step.
    quota_limit = forms.DecimalField(
        label=_("Quota (optional)"), required=False, min_value=Decimal(0), max_digits=18, decimal_places=6
    )
    quota_metric = forms.ChoiceField(label=_("Limit on"), choices=METRIC_CHOICES, required=False)
    quota_window = forms.ChoiceField(
        label=_("Window"), choices=WINDOW_CHOICES, required=False, initial=Quota.Window.MONTH
    )
    quota_enforcement = forms.ChoiceField(label=_("Enforcement"), choices=ENFORCEMENT_CHOICES, required=False)


class TopupForm(forms.Form):
    tenant = forms.ChoiceField(label=_("Tenant"))
    amount = forms.DecimalField(label=_("Amount"), min_value=Decimal("0.01"), max_digits=18, decimal_places=6)
    reference = forms.CharField(
        label=_("Reference"),
        max_length=200,
        help_text=_("Payment or transfer reference. A second top-up with the same reference changes nothing."),
    )

    def __init__(self, *args, tenants, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [(t.slug, f"{t.name} ({t.currency})") for t in tenants]


class CatalogImportForm(forms.Form):
    plan = forms.TypedChoiceField(label=_("Price plan"), coerce=int)
    catalog = forms.FileField(
        label=_("Catalog file (JSON)"),
        required=False,
        help_text=_("LiteLLM's model_prices_and_context_window.json format. Empty: the catalog bundled with LiteLLM."),
    )

    def __init__(self, *args, plans, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["plan"].choices = [(p.pk, f"{p.name} ({p.slug}, {p.currency})") for p in plans]
