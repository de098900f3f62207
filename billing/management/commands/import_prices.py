"""import_prices: load LiteLLM's price catalog into a price plan as new price versions."""

import datetime as dt
import importlib.util
import json
import re
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import transaction

from billing.models import PricePlan
from billing.services.catalog import SKIP_REASONS, CatalogImportResult, prices_import_litellm
from billing.services.pricing import plan_get_or_create

BUNDLED = "bundled"
BUNDLED_FILE = "model_prices_and_context_window_backup.json"
MAX_BYTES = 64 * 1024 * 1024  # the whole catalog is a few MB
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def bundled_catalog_path() -> Path:
    """The catalog file inside the installed litellm package, found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise CommandError("'bundled' needs the litellm package, which is not installed.")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise CommandError(f"The installed litellm package has no {BUNDLED_FILE} (looked at {path}).")
    return path


class Command(BaseCommand):
    help = (
        "Load prices from LiteLLM's catalog (model_prices_and_context_window.json format) into a price "
        "plan as new price versions. Old versions are kept; models whose newest version has the same "
        "rates are left alone, so importing the same catalog twice adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "source",
            metavar="FILE_OR_URL",
            help=f"a JSON file, an http(s) URL, or '{BUNDLED}' (the catalog inside the installed litellm package)",
        )
        parser.add_argument(
            "--plan", default="default", help="price plan slug, created if missing (default: %(default)s)"
        )
        parser.add_argument(
            "--currency",
            default="USD",
            help="currency of the catalog's prices, also used for a new plan; LiteLLM's is USD (default: %(default)s)",
        )
        parser.add_argument(
            "--effective-from",
            metavar="ISO",
            help=(
                "when the new versions take effect: ISO 8601 with an offset, e.g. 2026-01-01T00:00:00Z "
                "(default: a model's first version from 2000-01-01T00:00:00Z, so earlier usage is priced; "
                "a changed price from now)"
            ),
        )
        parser.add_argument(
            "--model", action="append", dest="models", metavar="NAME", help="import only this model (repeatable)"
        )
        parser.add_argument(
            "--include-free",
            action="store_true",
            help="also import models whose input and output both cost 0 (by default they stay unpriced)",
        )
        parser.add_argument(
            "--timeout", type=float, default=30.0, help="seconds to wait for a URL (default: %(default)s)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["plan"].strip()
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"--plan {slug!r} is not a valid slug (letters, digits, - and _).") from None
        currency = options["currency"].strip().upper()
        if not _CURRENCY.match(currency):
            raise CommandError(f"--currency {options['currency']!r} is not a 3-letter ISO 4217 code.")
        effective_from = parse_effective_from(options["effective_from"])
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be positive.")

        source = options["source"].strip()
        text, where = _read(source, timeout=options["timeout"])
        catalog = _parse(text, where)

        existing = PricePlan.objects.filter(slug=slug).first()
        if existing is not None and existing.currency.upper() != currency:
            raise CommandError(
                f"Plan {slug!r} is priced in {existing.currency}, but the catalog is in {currency} "
                f"(--currency); prices are not converted."
            )
        try:
            with transaction.atomic():
                plan = existing or plan_get_or_create(
                    slug=slug, name=slug, currency=currency, actor_label="import_prices"
                )
                result = prices_import_litellm(
                    plan=plan,
                    catalog=catalog,
                    effective_from=effective_from,
                    actor_label="import_prices",
                    models=options["models"],
                    currency=currency,
                    source=where,
                    include_free=options["include_free"],
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None

        self._report(result, where=where, verbosity=options["verbosity"])

    def _report(self, result: CatalogImportResult, *, where: str, verbosity: int) -> None:
        if verbosity >= 2:
            for reason, names in sorted(result.skipped_models.items()):
                self.stdout.write(f"skipped, {SKIP_REASONS.get(reason, reason)}: {', '.join(sorted(names))}")
        if verbosity >= 1:
            for rounded in result.rounded:
                self.stdout.write(
                    f"rounded {rounded.model} {rounded.key}={rounded.catalog_value} "
                    f"to {rounded.stored_per_mtok} per 1M tokens"
                )
        self.stdout.write(self.style.SUCCESS(f"Imported {where} into {result.summary()}"))
        self.stdout.write(
            f"priced {result.created + result.unchanged} models ({result.created} new versions, "
            f"{result.unchanged} unchanged), skipped {result.skipped_total}"
        )
        for reason, count in result.skipped.items():
            self.stdout.write(f"  skipped {count}: {SKIP_REASONS.get(reason, reason)}")
        for reason, names in sorted(result.skipped_tiers.items()):
            self.stdout.write(f"  service tier at the default price ({reason}): {len(names)}")
            if verbosity >= 2:
                self.stdout.write(f"    {', '.join(sorted(names))}")
        if result.unread_keys:
            self.stdout.write("catalog keys not understood (not imported), by models carrying them:")
            for key, count in sorted(result.unread_keys.items(), key=lambda item: (-item[1], item[0])):
                self.stdout.write(f"  {key}: {count}")


def parse_effective_from(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--effective-from {value!r} is not an ISO 8601 date-time (e.g. 2026-01-01T00:00:00Z)."
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise CommandError(f"--effective-from {value!r} needs a UTC offset (e.g. 2026-01-01T00:00:00Z).")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # an offset at the ends of the calendar has no UTC time
        raise CommandError(f"--effective-from {value!r} is out of range.") from None


def _read(source: str, *, timeout: float) -> tuple[str, str]:
    """The catalog's text and a description of where it came from."""
    if not source:
        raise CommandError("FILE_OR_URL is empty.")
    if source == BUNDLED:
        path = bundled_catalog_path()
        return _read_file(path), f"bundled catalog {path}"
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in {"http", "https"}:
        return _fetch(source, timeout=timeout), source
    if scheme:
        raise CommandError(f"Unsupported URL scheme {scheme!r}: give a local file or an http(s) URL.")
    return _read_file(Path(source)), source


def _read_file(path: Path) -> str:
    if not path.exists():
        raise CommandError(f"No such file: {path}")
    if not path.is_file():
        raise CommandError(f"Not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
    return _decode(data, str(path))


def _fetch(url: str, *, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "tokenbill-import-prices"})  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http or https only)
            data = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise CommandError(f"Could not fetch {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise CommandError(f"Could not fetch {url}: {exc.reason}") from None
    except TimeoutError:
        raise CommandError(f"Could not fetch {url}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise CommandError(f"Could not fetch {url}: {exc}") from None
    if len(data) > MAX_BYTES:
        raise CommandError(f"{url} is larger than {MAX_BYTES // (1024 * 1024)} MiB; is it really the catalog?")
    return _decode(data, url)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CommandError(f"{where} is not UTF-8 text.") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid price")


def _parse(text: str, where: str) -> dict[str, Any]:
    # Decimals straight from the JSON text: no float step between the catalog and a price.
    try:
        catalog = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except ValueError as exc:
        raise CommandError(f"{where} is not valid JSON: {exc}.") from None
    if not isinstance(catalog, dict):
        raise CommandError(
            f"{where} is not a price catalog: expected a JSON object of model name -> prices, "
            f"got {type(catalog).__name__}."
        )
    return catalog
