"""Browser forms: parse and validate input; services do the work."""

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import key_controls
from accounts.models import ApiKey
from billing.models import Quota
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


class TenantDateTimeField(forms.DateTimeField):
    """A date and time read and shown in the tenant's zone (`zone`, set by the form); the
    stored value is aware. A time that the zone skips or repeats (daylight saving) is refused."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S")
    zone: dt.tzinfo = dt.UTC

    def to_python(self, value):
        with timezone.override(self.zone):
            return super().to_python(value)

    def prepare_value(self, value):
        with timezone.override(self.zone):
            return super().prepare_value(value)


def _checked(check: Callable, *args, **kwargs):
    """Run a accounts.key_controls check as a form field's clean step."""
    try:
        return check(*args, **kwargs)
    except ValidationError as error:
        raise ValidationError(error.messages) from None


def _lines(text: str) -> list[str]:
    """One entry per line, trimmed; blank lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _limit_field(field: str, label: str) -> forms.CharField:
    # Text, not an IntegerField: key_controls is the one judge of what a limit may be.
    widget = forms.NumberInput(attrs={"min": 1, "max": key_controls.LIMIT_MAX[field], "placeholder": _("no limit")})
    return forms.CharField(label=label, required=False, max_length=20, widget=widget)


class LimitsForm(forms.Form):
    """A tenant's per-minute limits, over all of its keys together. Empty: no limit."""

    rpm_limit = _limit_field("rpm_limit", _("Requests per minute"))
    tpm_limit = _limit_field("tpm_limit", _("Tokens per minute"))
    max_parallel_requests = _limit_field("max_parallel_requests", _("Parallel requests"))

    def clean_rpm_limit(self) -> int | None:
        return _checked(key_controls.clean_limit, "rpm_limit", self.cleaned_data["rpm_limit"])

    def clean_tpm_limit(self) -> int | None:
        return _checked(key_controls.clean_limit, "tpm_limit", self.cleaned_data["tpm_limit"])

    def clean_max_parallel_requests(self) -> int | None:
        return _checked(key_controls.clean_limit, "max_parallel_requests", self.cleaned_data["max_parallel_requests"])


class KeyControlsForm(LimitsForm):
    """A key's limits, expiry and the models and networks it may be used for."""

    expires_at = TenantDateTimeField(label=_("Expires"), required=False)
    allowed_models = forms.CharField(
        label=_("Allowed models"),
        required=False,
        max_length=25_000,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "gpt-4o\ngpt-4o-mini*"}),
        help_text=_("One per line; * ? [ ] are wildcards. Empty: every model."),
    )
    allowed_networks = forms.CharField(
        label=_("Allowed networks"),
        required=False,
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "10.0.0.0/8\n2001:db8::/32"}),
        help_text=_("Addresses or CIDR networks the key may be used from, one per line. Empty: anywhere."),
    )

    def __init__(self, *args, zone: dt.tzinfo, current_expires_at: dt.datetime | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].zone = zone
        self.fields["expires_at"].help_text = _("In the tenant's time zone (%(zone)s). Empty: never.") % {"zone": zone}
        self.current_expires_at = current_expires_at

    @classmethod
    def initial_for(cls, key: ApiKey) -> dict:
        return {
            "expires_at": key.expires_at,
            "allowed_models": "\n".join(key.allowed_models),
            "allowed_networks": "\n".join(key.allowed_networks),
            **{field: getattr(key, field) for field in key_controls.LIMIT_FIELDS},
        }

    def clean_expires_at(self) -> dt.datetime | None:
        return _checked(
            key_controls.clean_expires_at,
            self.cleaned_data["expires_at"],
            now=timezone.now(),
            current=self.current_expires_at,
        )

    def clean_allowed_models(self) -> list[str]:
        return _checked(key_controls.clean_models, _lines(self.cleaned_data["allowed_models"]))

    def clean_allowed_networks(self) -> list[str]:
        return _checked(key_controls.clean_networks, _lines(self.cleaned_data["allowed_networks"]))


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
