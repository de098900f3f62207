from django.core.management.base import BaseCommand, CommandParser

from accounts import services


class Command(BaseCommand):
    help = "Issue a platform service token (for gateways acting for any tenant's key); printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="gateway", help="A label for the token (default: gateway).")

    def handle(self, *args, **options) -> None:
        token, secret = services.service_token_create(name=options["name"], actor_label="cli")
        self.stdout.write(f"Service token {token.pk} ({token.name}):")
        self.stdout.write(secret)
        self.stderr.write("Store it now: it is not shown again.")
