"""Operators manage upstreams in the admin; the API key is write-only (stored encrypted)."""

import time
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from relay.models import TenantRelaySettings, Upstream
from relay.services import routing
from relay.services.upstreams import clean_base_url, clean_model_map, upstream_save


class UpstreamForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False, widget=forms.PasswordInput, help_text="Leave empty to keep the stored key."
    )

    class Meta:
        model = Upstream
        fields = [
            "name", "base_url", "model_map", "priority", "weight", "connect_timeout_ms", "first_byte_timeout_ms",
            "total_timeout_ms", "enabled", "cost_plan",
        ]  # fmt: skip

    def clean_base_url(self) -> str:
        return clean_base_url(self.cleaned_data["base_url"])

    def clean_model_map(self) -> dict[str, str]:
        try:
            return clean_model_map(self.cleaned_data["model_map"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["model_map"]) from None


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    form = UpstreamForm
    list_display = ["name", "base_url", "priority", "weight", "enabled", "circuit", "calls_ok", "calls_failed"]
    list_filter = ["enabled"]

    @admin.display(description="circuit (this process)")
    def circuit(self, obj: Upstream) -> str:
        return routing.breakers.get(obj.name).state(time.monotonic())

    @admin.display(description="ok (this process)")
    def calls_ok(self, obj: Upstream) -> int:
        return routing.breakers.get(obj.name).successes

    @admin.display(description="failed (this process)")
    def calls_failed(self, obj: Upstream) -> int:
        return routing.breakers.get(obj.name).errors

    def save_model(self, request: Any, obj: Upstream, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {k: v for k, v in data.items() if k not in ("name", "base_url", "model_map", "api_key")}
        saved = upstream_save(
            name=obj.name,
            base_url=data["base_url"],
            model_map=data["model_map"],
            api_key=data["api_key"] or None,
            **fields,
        )
        obj.pk = saved.pk


@admin.register(TenantRelaySettings)
class TenantRelaySettingsAdmin(admin.ModelAdmin):
    list_display = ["tenant", "store_content"]
