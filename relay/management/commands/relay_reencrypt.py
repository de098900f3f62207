"""Re-encrypt the upstreams' API keys under the first RELAY_ENCRYPTION_KEYS key (rotation)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from relay.crypto import SecretUnreadable
from relay.services.upstreams import upstreams_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt every upstream API key with the first key of RELAY_ENCRYPTION_KEYS (after adding a new key)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            changed = upstreams_reencrypt()
        except SecretUnreadable as exc:
            raise CommandError(f"{exc}; keep the old key in RELAY_ENCRYPTION_KEYS until this succeeds.") from None
        self.stdout.write(f"{changed} upstream key(s) re-encrypted")
