from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.accounts import services
from portal.accounts.cli import tenant_or_error, validation_as_command_error
from portal.accounts.models import Membership


class Command(BaseCommand):
    help = "Create a portal user (and optionally a membership); prints a generated password once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--tenant", help="Tenant slug to join.")
        parser.add_argument("--role", choices=Membership.Role.values, default=Membership.Role.VIEWER)
        parser.add_argument("--staff", action="store_true", help="An operator (staff and superuser).")
        parser.add_argument("--password", help="Default: a generated one, printed once.")

    def handle(self, *args, **options) -> None:
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] else None
        if options["role"] != Membership.Role.VIEWER and tenant is None:
            raise CommandError("--role needs --tenant.")
        with validation_as_command_error():
            user, generated = services.user_create(
                email=options["email"],
                password=options["password"],
                is_staff=options["staff"],
                tenant=tenant,
                role=options["role"],
                actor_label="cli",
            )
        self.stdout.write(f"User {user.get_username()} created.")
        if generated:
            self.stdout.write(f"Password: {generated}")
