from django.core.management.base import BaseCommand, CommandParser, no_translations

from accounts import services
from accounts.cli import (
    KEY_OPTIONS,
    LIMIT_OPTIONS,
    add_control_arguments,
    comma_list,
    control_values,
    controls_summary,
    tenant_or_error,
    validation_as_command_error,
)


class Command(BaseCommand):
    help = (
        "Issue an API key for a tenant and print it once (only its hash is stored). Limits, an expiry "
        "and allowed models and networks are optional; set_limits changes them later."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--name", default="", help="A label for the key.")
        parser.add_argument("--scopes", default="ingest,read", help="Comma-separated: ingest, read (default both).")
        add_control_arguments(parser, fields={**LIMIT_OPTIONS, **KEY_OPTIONS}, clearable=False)

    @no_translations  # operators read English, whatever language a caller had active
    def handle(self, *args, **options) -> None:
        tenant = tenant_or_error(options["tenant"])
        with validation_as_command_error(name_fields=False):
            controls = control_values(options, {**LIMIT_OPTIONS, **KEY_OPTIONS})
            key, secret = services.api_key_create(
                tenant=tenant, name=options["name"], scopes=comma_list(options["scopes"]), actor_label="cli", **controls
            )
        self.stdout.write(f"API key {key.pk} for {tenant.slug} (scopes: {', '.join(key.scopes)}):")
        self.stdout.write(secret)
        if controls:
            self.stdout.write("\n".join(["Limits and restrictions:", *controls_summary(key)]))
        self.stderr.write("Store it now: it is not shown again.")
