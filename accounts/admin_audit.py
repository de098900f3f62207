"""Django admin edits are audited like portal edits, or impossible.

Two bases for every ModelAdmin of the project:

- `AuditedModelAdmin`: each add, change and delete made through the admin (its forms, its
  inlines, the list's editable columns, the delete action) writes an AuditLog row in the same
  transaction: who (the staff user), what (`<model>.admin_create|admin_update|admin_delete`,
  the row, its tenant) and the before/after values of the fields that changed. The diff is
  taken between the row as the database held it (locked) and the row as saved, over every
  editable field of the model (many-to-many included), so a field added to the model later
  is audited without a change here. Values whose field name says secret, password or hash are
  recorded as changed, never with their value (`secret_hash` of keys and service tokens), and
  so are secret-looking keys inside JSON values (a webhook's "secret", a robot's "token").
  A save that changes nothing writes nothing.
- `ReadOnlyAdmin`: for append-only records and derived data (ledger entries, usage events,
  invoices, wallets whose balance moves only through the ledger): visible, never added,
  changed or deleted by hand; a POST to their change form answers 403.
"""

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from accounts.models import Tenant
from accounts.services import audit_record

REDACTED = "(redacted)"
# A model field whose name says it holds a secret: its change is recorded, its value never.
_SECRET_FIELD = re.compile(r"secret|password|hash", re.IGNORECASE)
# A key inside a JSON value (a channel's config) that holds a secret: "secret", "access_token".
_SECRET_KEY = re.compile(r"(?:^|_)(?:secret|password|passwd|token|hash|key|credentials?)$", re.IGNORECASE)


def audit_name(model: type[models.Model]) -> str:
    """The action prefix for a model, as the services name theirs: ApiKey -> "api_key"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


def _plain(value: Any) -> Any:
    """A JSON-storable copy (Decimal and datetimes as strings), secrets inside JSON redacted."""
    value = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return _redact_nested(value) if isinstance(value, dict | list) else value


def _redact_nested(value: Any) -> Any:
    """Secret-looking keys of JSON objects redacted; URLs keep scheme, host and path only (a
    robot's webhook URL carries its access token in the query string)."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else _redact_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_nested(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}" + ("?" + REDACTED if parts.query else "")
    return value


def _audited_fields(model: type[models.Model]) -> list[models.Field]:
    """Every editable concrete and many-to-many field: not the key, not what the database or
    Django keeps by itself (auto_now timestamps, a plan's trigger-kept version)."""
    return [f for f in [*model._meta.concrete_fields, *model._meta.many_to_many] if f.editable and not f.primary_key]


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The row's audited fields as JSON values (foreign keys as ids, many-to-many as sorted ids)."""
    values: dict[str, Any] = {}
    for field in _audited_fields(type(obj)):
        if field.many_to_many:
            values[field.name] = sorted(o.pk for o in getattr(obj, field.name).all()) if obj.pk else []
        else:
            values[field.name] = _plain(field.value_from_object(obj))
    return values


def _stored(model: type[models.Model], pk: Any) -> dict[str, Any] | None:
    """The row as the database holds it, locked until the admin's transaction ends."""
    row = model._default_manager.select_for_update().filter(pk=pk).first()
    return snapshot(row) if row is not None else None


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{"before": {...}, "after": {...}} of the fields whose values differ (secrets redacted).

    None stands for "no row": a creation lists every set field under "after", a deletion every
    field under "before".
    """
    old, new = before or {}, after or {}
    names = [n for n in new if n not in old or old[n] != new[n]] + [n for n in old if n not in new]
    if before is None:
        names = [n for n in names if new.get(n) not in (None, "", [], {})]

    def shown(values: dict[str, Any], name: str) -> Any:
        return REDACTED if _SECRET_FIELD.search(name) else values.get(name)

    return {
        "before": {n: shown(old, n) for n in names if before is not None},
        "after": {n: shown(new, n) for n in names if after is not None},
    }


def _tenant_of(obj: models.Model, *, deleting: bool) -> Tenant | None:
    if isinstance(obj, Tenant):
        # A tenant being deleted cannot be its own audit row's tenant (the row would protect it).
        return None if deleting else obj
    tenant_id = getattr(obj, "tenant_id", None)
    return Tenant.objects.filter(pk=tenant_id).first() if tenant_id is not None else None


def _record(request, obj: models.Model, before: dict | None, after: dict | None) -> None:
    """One AuditLog row for a create (no before), update or delete (no after); none if no change."""
    changes = diff(before, after)
    if before is not None and after is not None and not changes["after"]:
        return
    verb = "create" if before is None else "delete" if after is None else "update"
    audit_record(
        action=f"{audit_name(type(obj))}.admin_{verb}",
        target=obj,
        actor=request.user,
        tenant=_tenant_of(obj, deleting=after is None),
        changes=changes,
    )


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose every write leaves an AuditLog row (see the module's docstring)."""

    def save_model(self, request, obj, form, change) -> None:
        with transaction.atomic():
            # The form has already copied its values onto `obj`: read the old ones from the table.
            form._audit_before = _stored(type(obj), obj.pk) if change and obj.pk is not None else None
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        # Many-to-many values and inlines are saved here, after save_model: the row is whole now.
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            obj = form.instance
            _record(request, obj, getattr(form, "_audit_before", None), _stored(type(obj), obj.pk))

    def save_formset(self, request, form, formset, change) -> None:
        """Inline rows (a tenant's memberships): each added, changed or deleted row is audited."""
        model = formset.model
        with transaction.atomic():
            pks = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
            before = {row.pk: snapshot(row) for row in model._default_manager.select_for_update().filter(pk__in=pks)}
            for deleted in formset.deleted_forms:  # recorded first: deleting clears the pk
                if deleted.instance.pk in before:
                    _record(request, deleted.instance, before[deleted.instance.pk], None)
            super().save_formset(request, form, formset, change)
            for obj in formset.new_objects:
                _record(request, obj, None, _stored(model, obj.pk))
            for obj, _names in formset.changed_objects:
                _record(request, obj, before.get(obj.pk, {}), _stored(model, obj.pk))

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            _record(request, obj, _stored(type(obj), obj.pk) or {}, None)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            for obj in queryset.select_for_update():
                _record(request, obj, snapshot(obj), None)
            super().delete_queryset(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Append-only records: visible, never added, edited or deleted by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
