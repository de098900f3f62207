"""Browser forms: parse and validate input; services do the work."""

from decimal import Decimal

from django import forms
from django.utils.translation import gettext_lazy as _

from billing.models import Quota
from portal.accounts.models import ApiKey
from portal.web.dashboard import quota_label

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


class ApiKeyUpdateForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"),
        choices=SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.INGEST, ApiKey.Scope.READ],
    )


class ApiKeyCreateForm(ApiKeyUpdateForm):
    # An optional quota for this key, set in the same step.
    quota_limit = forms.DecimalField(
        label=_("Quota (optional)"), required=False, min_value=Decimal(0), max_digits=18, decimal_places=6
    )
    quota_metric = forms.ChoiceField(label=_("Limit on"), choices=METRIC_CHOICES, required=False)
    quota_window = forms.ChoiceField(
        label=_("Window"), choices=WINDOW_CHOICES, required=False, initial=Quota.Window.MONTH
    )
    quota_enforcement = forms.ChoiceField(label=_("Enforcement"), choices=ENFORCEMENT_CHOICES, required=False)


class CreditNoteForm(forms.Form):
    invoice = forms.CharField(label=_("Invoice number"), max_length=32, help_text=_("e.g. INV-2026-000042"))
    amount = forms.CharField(
        label=_("Amount"),
        max_length=32,
        required=False,
        help_text=_("In the invoice's currency. Empty: everything not yet credited."),
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, help_text=_("Printed on the credit note."))


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


# --- Alerts --------------------------------------------------------------------------------

CHANNEL_KIND_CHOICES = [
    ("email", _("Email")),
    ("dingtalk", _("DingTalk robot")),
    ("wecom", _("WeCom robot")),
    ("feishu", _("Feishu / Lark bot")),
    ("slack", _("Slack incoming webhook")),
    ("webhook", _("Webhook")),
]
RULE_KIND_CHOICES = [
    ("quota", _("Quota used (% of a quota)")),
    ("balance", _("Low balance")),
    ("spend", _("Spend budget")),
    ("forecast", _("Forecast: runs out within N days")),
    ("spike", _("Spend spike")),
]
RULE_WINDOW_CHOICES = [("day", _("per day")), ("month", _("per month"))]
THRESHOLD_UNIT_CHOICES = [("percent", _("% of the limit")), ("absolute", _("absolute amount"))]


class ChannelForm(forms.Form):
    """One form for every channel kind; `config()` builds what the kind's transport validates."""

    kind = forms.ChoiceField(label=_("Kind"), choices=CHANNEL_KIND_CHOICES)
    name = forms.CharField(label=_("Name"), max_length=100)
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    recipients = forms.CharField(
        label=_("Recipients"), required=False, help_text=_("Email addresses, separated by commas.")
    )
    webhook_url = forms.URLField(label=_("Robot webhook URL"), required=False, max_length=500, assume_scheme="https")
    keyword = forms.CharField(label=_("Keyword (optional)"), required=False, max_length=50)
    url = forms.URLField(label=_("Webhook URL"), required=False, max_length=500, assume_scheme="https")
    secret = forms.CharField(
        label=_("Signing secret"),
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Leave empty to keep the current secret."),
    )

    def config(self, current: dict | None = None) -> dict:
        data, current = self.cleaned_data, current or {}
        secret = data.get("secret") or current.get("secret", "")
        if data["kind"] == "email":
            return {"recipients": data.get("recipients", "")}
        if data["kind"] in ("dingtalk", "feishu"):
            return {"webhook_url": data.get("webhook_url", ""), "secret": secret, "keyword": data.get("keyword", "")}
        if data["kind"] == "wecom":
            return {"webhook_url": data.get("webhook_url", "")}  # the key in the URL is its only credential
        if data["kind"] == "slack":
            return {"url": data.get("url", "")}  # incoming webhooks are not signed
        return {"url": data.get("url", ""), "secret": secret}


def quota_choice_label(quota: Quota, key_names: dict[int, str]) -> str:
    limit = f"{quota.limit.normalize():,f}"
    unit = _("tokens") if quota.metric == Quota.Metric.TOKENS else quota.tenant.currency
    return f"{quota_label(quota, key_names)} \N{EM DASH} {limit} {unit}"


class AlertRuleForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    kind = forms.ChoiceField(label=_("Alert when"), choices=RULE_KIND_CHOICES)
    quota = forms.TypedChoiceField(label=_("Quota"), required=False, coerce=int, empty_value=None)
    api_key = forms.TypedChoiceField(label=_("API key"), required=False, coerce=int, empty_value=None)
    window = forms.ChoiceField(label=_("Window"), choices=RULE_WINDOW_CHOICES, initial="month")
    amount = forms.DecimalField(
        label=_("Amount"),
        required=False,
        min_value=Decimal(0),
        max_digits=18,
        decimal_places=6,
        help_text=_("The spend budget, or the balance that counts as 100 %."),
    )
    threshold_unit = forms.ChoiceField(label=_("Thresholds in"), choices=THRESHOLD_UNIT_CHOICES)
    thresholds = forms.CharField(label=_("Thresholds"), initial="80, 100", max_length=200)
    forecast_days = forms.IntegerField(label=_("Forecast days"), min_value=1, max_value=365, initial=7)
    spike_factor = forms.DecimalField(
        label=_("Spike factor"), min_value=Decimal("1.01"), max_digits=8, decimal_places=2, initial=Decimal(3)
    )
    channels = forms.TypedMultipleChoiceField(
        label=_("Notify"), coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, quotas, keys, channels, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        labels = {k.pk: k.name or k.prefix for k in keys}
        self.fields["quota"].choices = [("", "\N{EN DASH}")] + [(q.pk, quota_choice_label(q, labels)) for q in quotas]
        self.fields["api_key"].choices = [("", _("All keys"))] + [(k.pk, k.name or k.prefix) for k in keys]
        self.fields["channels"].choices = [(c.pk, f"{c.name} ({c.kind})") for c in channels]

    def clean_thresholds(self) -> list[str]:
        parts = [part.strip().rstrip("%").strip() for part in self.cleaned_data["thresholds"].split(",")]
        return [part for part in parts if part]
