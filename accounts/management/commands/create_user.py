from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from accounts.cli import tenant_or_error, validation_as_command_error
from accounts.models import Membership


class Command(BaseCommand):
    help = "Create a portal user (and optionally a membership); prints a generated password once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--tenant", help="Tenant slug to join.")
        parser.add_argument("--role", choices=Membership.Role.values, default=Membership.Role.VIEWER)
        parser.add_argument(
            "--staff",
            action="store_true",
            help="An operator: the ops pages, and the admin with the operators group's permissions.",
        )
        parser.add_argument("--superuser", action="store_true", help="Every permission in the admin (implies --staff).")
        parser.add_argument(
            "--password", help="Default: a generated one, printed once. Must pass the password validators."
        )

    def handle(self, *args, **options) -> None:
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] else None
        if options["role"] != Membership.Role.VIEWER and tenant is None:
            raise CommandError("--role needs --tenant.")
        with validation_as_command_error():
            user, generated = services.user_create(
                email=options["email"],
                password=options["password"],
                is_staff=options["staff"],
                is_superuser=options["superuser"],
                tenant=tenant,
                role=options["role"],
                actor_label="cli",
            )
        kind = " (superuser)" if user.is_superuser else " (staff, operators group)" if user.is_staff else ""
        self.stdout.write(f"User {user.get_username()} created{kind}.")
        if generated:
            self.stdout.write(f"Password: {generated}")
