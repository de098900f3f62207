"""The admin's change forms for tenants and keys: their limits and controls are judged by
accounts.key_controls, exactly as in the portal and the commands, and stored in the same
normal form (networks normalised, duplicates dropped)."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts import key_controls
from accounts.models import ApiKey, Tenant


class _ControlsAdminForm(forms.ModelForm):
    def _check(self, field: str, check, *args, **kwargs) -> None:
        """Replace the field's cleaned value with the checked one, or attach the check's error."""
        if field not in self.cleaned_data:  # not on the form, or already refused
            return
        try:
            self.cleaned_data[field] = check(self.cleaned_data[field], *args, **kwargs)
        except ValidationError as error:
            self.add_error(field, error.messages)

    def clean(self) -> dict:
        cleaned = super().clean()
        for field in key_controls.LIMIT_FIELDS:
            self._check(field, lambda value, field=field: key_controls.clean_limit(field, value))
        return cleaned


class TenantAdminForm(_ControlsAdminForm):
    class Meta:
        model = Tenant
        fields = "__all__"  # noqa: DJ007 - the admin's own fields and readonly_fields choose


class ApiKeyAdminForm(_ControlsAdminForm):
    class Meta:
        model = ApiKey
        fields = "__all__"  # noqa: DJ007 - the admin's own fields and readonly_fields choose

    def clean(self) -> dict:
        cleaned = super().clean()
        # self.instance still holds the stored row here: the key's current expiry may stay.
        self._check("expires_at", key_controls.clean_expires_at, now=timezone.now(), current=self.instance.expires_at)
        # An emptied JSON box reads as null: no list, every model or address.
        self._check("allowed_models", lambda value: key_controls.clean_models(value if value is not None else []))
        self._check("allowed_networks", lambda value: key_controls.clean_networks(value if value is not None else []))
        return cleaned
