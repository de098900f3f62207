from django.core.management.base import BaseCommand, CommandParser

from portal.accounts import services
from portal.accounts.cli import comma_list, tenant_or_error, validation_as_command_error


class Command(BaseCommand):
    help = "Issue an API key for a tenant and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--name", default="", help="A label for the key.")
        parser.add_argument("--scopes", default="ingest,read", help="Comma-separated: ingest, read (default both).")

    def handle(self, *args, **options) -> None:
        tenant = tenant_or_error(options["tenant"])
        with validation_as_command_error():
            key, secret = services.api_key_create(
                tenant=tenant, name=options["name"], scopes=comma_list(options["scopes"]), actor_label="cli"
            )
        self.stdout.write(f"API key {key.pk} for {tenant.slug} (scopes: {', '.join(key.scopes)}):")
        self.stdout.write(secret)
        self.stderr.write("Store it now: it is not shown again.")
