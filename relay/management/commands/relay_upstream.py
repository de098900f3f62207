"""Add, change, list or disable the relay's upstreams (docs/relay.md)."""

import json
import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay.models import Upstream
from relay.services.upstreams import upstream_save


class Command(BaseCommand):
    help = (
        "Create or update an upstream: relay_upstream set NAME --base-url URL --models JSON "
        "[--api-key-env VAR] [--priority N] [--weight N] [--disable|--enable]; or relay_upstream list."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["set", "list"])
        parser.add_argument("name", nargs="?", help="the upstream's name (a slug)")
        parser.add_argument("--base-url", help="OpenAI-compatible base URL, with /v1 (e.g. https://api.openai.com/v1)")
        parser.add_argument("--models", help='JSON object {"model or glob": "upstream model or empty"}')
        parser.add_argument(
            "--api-key-env", help="name of an environment variable holding the upstream's API key (kept off argv)"
        )
        parser.add_argument("--priority", type=int)
        parser.add_argument("--weight", type=int)
        parser.add_argument("--first-byte-timeout-ms", type=int)
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--enable", action="store_true")
        state.add_argument("--disable", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:  # noqa: C901 - one branch per option
        if options["action"] == "list":
            for row in Upstream.objects.order_by("priority", "name"):
                state = "enabled" if row.enabled else "disabled"
                self.stdout.write(
                    f"{row.name}\t{row.base_url}\tpriority={row.priority}\tweight={row.weight}\t{state}\t"
                    f"{json.dumps(row.model_map)}"
                )
            return
        name = options["name"]
        if not name:
            raise CommandError("set needs the upstream's NAME.")
        fields: dict[str, Any] = {}
        for option in ("priority", "weight", "first_byte_timeout_ms"):
            if options[option] is not None:
                if options[option] < 1:
                    raise CommandError(f"--{option.replace('_', '-')} must be at least 1.")
                fields[option] = options[option]
        if options["enable"] or options["disable"]:
            fields["enabled"] = bool(options["enable"])
        model_map = None
        if options["models"] is not None:
            try:
                model_map = json.loads(options["models"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--models is not valid JSON: {exc}") from None
        api_key = None
        if options["api_key_env"]:
            api_key = os.environ.get(options["api_key_env"])
            if api_key is None:
                raise CommandError(f"--api-key-env: the variable {options['api_key_env']} is not set.")
        try:
            upstream = upstream_save(
                name=name, base_url=options["base_url"], api_key=api_key, model_map=model_map, **fields
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        self.stdout.write(f"upstream {upstream.name} saved")
