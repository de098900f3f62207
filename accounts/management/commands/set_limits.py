from django.core.management.base import BaseCommand, CommandError, CommandParser, no_translations

from accounts import services
from accounts.cli import (
    KEY_OPTIONS,
    LIMIT_OPTIONS,
    add_control_arguments,
    control_values,
    controls_summary,
    tenant_or_error,
    validation_as_command_error,
)
from accounts.models import ApiKey, Tenant


def key_or_error(tenant: Tenant, value: str) -> ApiKey:
    """The tenant's key by id, or by prefix (`abcd…`, or as printed: `tbk_abcd…_…`)."""
    value = value.strip()
    keys = ApiKey.objects.select_related("tenant").filter(tenant=tenant)
    if value.isdigit() and len(value) <= 18:
        key = keys.filter(pk=int(value)).first()
    else:
        prefix = value.removeprefix("tbk_").split("_", 1)[0]
        key = keys.filter(prefix=prefix).first() if prefix else None
    if key is None:
        raise CommandError(f"No API key {value!r} in tenant {tenant.slug}: give its id or its prefix.")
    return key


class Command(BaseCommand):
    help = (
        "Set a tenant's rate limits, or with --key one key's limits, expiry and allowed models and "
        "networks; prints the resulting settings. Options left out stay as they are; 'none' clears "
        "one. With no option it only prints the settings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--key", help="The key's id or prefix. Without it, the tenant's own limits are set.")
        add_control_arguments(parser, fields={**LIMIT_OPTIONS, **KEY_OPTIONS}, clearable=True)

    @no_translations  # operators read English, whatever language a caller had active
    def handle(self, *args, **options) -> None:
        tenant = tenant_or_error(options["tenant"])
        key = key_or_error(tenant, options["key"]) if options["key"] else None
        if key is None:
            given = [option for dest, (option, *_) in KEY_OPTIONS.items() if options.get(dest) is not None]
            if given:
                raise CommandError(f"{', '.join(given)} only apply to a key: add --key ID_OR_PREFIX.")
        with validation_as_command_error(name_fields=False):
            if key is not None:
                values = control_values(options, {**LIMIT_OPTIONS, **KEY_OPTIONS})
                changed = bool(values) and services.api_key_set_controls(
                    api_key=key, actor_label="cli", **{**self._key_controls(key), **values}
                )
            else:
                values = control_values(options, LIMIT_OPTIONS)
                current = {dest: getattr(tenant, dest) for dest in LIMIT_OPTIONS}
                changed = bool(values) and services.tenant_set_limits(
                    tenant=tenant, actor_label="cli", **{**current, **values}
                )
        row = key if key is not None else tenant
        label = f"API key {key.pk} ({key.name or key.prefix}) of {tenant.slug}" if key else f"Tenant {tenant.slug}"
        state = "changed" if changed else "unchanged" if values else "as set"
        self.stdout.write(f"{label}, {state}:")
        self.stdout.write("\n".join(controls_summary(row)))

    @staticmethod
    def _key_controls(key: ApiKey) -> dict:
        return {dest: getattr(key, dest) for dest in (*LIMIT_OPTIONS, *KEY_OPTIONS)}
