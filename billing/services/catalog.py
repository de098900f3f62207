"""Importing LiteLLM's public price catalog (`model_prices_and_context_window.json`).

Each token-priced chat model of the catalog becomes a new Price version in a plan; old
versions are never touched, and a model whose newest plan-wide version already has the same
rates is left alone, so re-importing the same catalog creates nothing.

Mapping (catalog: currency per token -> Price: currency per 1M tokens, x 10^6, exact):

    input_cost_per_token                       -> input_per_mtok
    output_cost_per_token                      -> output_per_mtok
    cache_read_input_token_cost                -> cached_input_per_mtok  (absent: the input rate)
    cache_creation_input_token_cost            -> cache_write_per_mtok   (absent: the input rate)
    <each of the four>_above_<N>k_tokens       -> tier_<same>_per_mtok, tier_threshold = N * 1000

A float from the catalog is converted as Decimal(str(value)): its shortest repr, which is the
text the catalog file holds (so 3e-06 is exactly 3 per 1M, never 2.99999999999999992...).
Prices keep 12 decimal places per 1M (1e-18 per token). A catalog value with more digits than
that (only float noise such as 2.9999900000000002e-06 has) is rounded ROUND_HALF_EVEN to 12
places and reported in `CatalogImportResult.rounded`, never dropped silently: the difference
is below 5e-13 currency units per million tokens. (The rounded values are reported for the
versions an import creates.)

Only token-priced chat models are imported (mode chat, completion or responses, with both
input and output per-token costs). Everything else is skipped and counted by reason; see
SKIP_REASONS.
"""

import datetime as dt
import decimal
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from billing.models import PRICE_FIELD, Price, PricePlan
from billing.money import ROUNDING
from billing.selectors import is_glob
from billing.services.pricing import PRICED_FROM_BEGINNING, default_effective_from
from billing.services.resale import sell_plans_derive

CATALOG_SOURCE = "litellm catalog"  # Price.source of imported versions
TOKEN_MODES = frozenset({"chat", "completion", "responses"})
SPEC_ENTRY = "sample_spec"  # the catalog's self-description, not a model

_BASE_KEYS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cached_input_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
}
_TIER_FIELDS = {
    "input_cost_per_token": "tier_input_per_mtok",
    "output_cost_per_token": "tier_output_per_mtok",
    "cache_read_input_token_cost": "tier_cached_input_per_mtok",
    "cache_creation_input_token_cost": "tier_cache_write_per_mtok",
}
# `input_cost_per_token_above_200k_tokens`; LiteLLM also reads a bare count (`_above_128_tokens`).
# Anchored, so service-tier variants (`..._tokens_priority`) and the 1-hour cache-write tier
# (`cache_creation_input_token_cost_above_1hr...`) are not tier keys here.
_TIER_KEY = re.compile(r"^(%s)_above_(\d+)(k?)_tokens$" % "|".join(_TIER_FIELDS))  # noqa: UP031
_COMPARED_FIELDS = (*_BASE_KEYS.values(), *_TIER_FIELDS.values(), "tier_threshold")

_PLACES = PRICE_FIELD["decimal_places"]
_QUANTUM = Decimal(1).scaleb(-_PLACES)
_LIMIT = Decimal(10) ** (PRICE_FIELD["max_digits"] - _PLACES)  # first per-1M value that does not fit
_CTX = decimal.Context(prec=80, rounding=ROUNDING, traps=[decimal.InvalidOperation, decimal.Overflow])
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Overflow, decimal.Inexact])
_MODEL_NAME_MAX: int = Price._meta.get_field("model_pattern").max_length or 0  # a CharField: always set

NOT_IN_CATALOG = "not_in_catalog"
SKIP_REASONS = {
    SPEC_ENTRY: "the catalog's sample_spec entry (documentation, not a model)",
    "not_an_object": "entry is not a JSON object",
    "not_a_chat_model": "mode is not chat, completion or responses",
    "no_token_price": "no input_cost_per_token or output_cost_per_token (priced per second, image, ...)",
    "zero_price": "input and output both cost 0 (left unpriced so its usage is flagged, not billed at 0)",
    "invalid_rate": "a rate is not a finite non-negative number that fits 12 places per 1M",
    "unsupported_tier": "context tiers we cannot store (several thresholds, or tier rates without a tier input rate)",
    "unusable_name": "model name is empty, too long or contains glob characters (* ? [)",
    "version_conflict": "the plan already has a different version of this model at the same effective_from",
    NOT_IN_CATALOG: "asked for by name but not in the catalog",
}


@dataclass(frozen=True, slots=True)
class RoundedRate:
    """A catalog rate with more precision than a price keeps, and what was stored."""

    model: str
    key: str
    catalog_value: str
    stored_per_mtok: Decimal


@dataclass
class CatalogImportResult:
    plan_slug: str
    currency: str
    effective_from: dt.datetime
    created_models: list[str] = field(default_factory=list)
    unchanged_models: list[str] = field(default_factory=list)
    skipped_models: dict[str, list[str]] = field(default_factory=dict)  # reason -> model names
    rounded: list[RoundedRate] = field(default_factory=list)
    # New models whose first version applies from PRICED_FROM_BEGINNING (no date was given).
    from_beginning_models: list[str] = field(default_factory=list)
    # Resale: the sell plans over this plan re-derived after the import, and those that could not be.
    derived: list[str] = field(default_factory=list)
    derive_failures: dict[str, str] = field(default_factory=dict)

    @property
    def created(self) -> int:
        return len(self.created_models)

    @property
    def unchanged(self) -> int:
        return len(self.unchanged_models)

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped entries per reason (keys of SKIP_REASONS), largest first."""
        counts = {reason: len(names) for reason, names in self.skipped_models.items()}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def skipped_total(self) -> int:
        return sum(len(names) for names in self.skipped_models.values())

    @property
    def total(self) -> int:
        return self.created + self.unchanged + self.skipped_total

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.skipped.items())
        text = (
            f"plan {self.plan_slug} ({self.currency}), effective {self.effective_from.isoformat()}: "
            f"{self.created} new price versions, {self.unchanged} unchanged, {self.skipped_total} skipped"
        )
        if reasons:
            text += f" ({reasons})"
        if self.from_beginning_models:
            text += (
                f"; {len(self.from_beginning_models)} first versions effective from "
                f"{PRICED_FROM_BEGINNING.isoformat()} (usage stamped before today is priced too)"
            )
        if self.rounded:
            text += f"; {len(self.rounded)} rates rounded to {_PLACES} places per 1M"
        for line in self.derived:
            text += f"; derived {line}"
        for slug, reason in self.derive_failures.items():
            text += f"; sell plan {slug} NOT derived: {reason}"
        return text


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _per_mtok(model: str, key: str, value: Any, rounded: list[RoundedRate]) -> Decimal:
    """A per-token catalog value as the per-1M Decimal a Price stores (see module doc)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _Skip("invalid_rate")
    try:
        per_token = value if isinstance(value, Decimal) else Decimal(str(value).strip())
        if not per_token.is_finite() or per_token < 0:
            raise _Skip("invalid_rate")
        per_million = _EXACT.multiply(per_token, Decimal(1_000_000))
        if per_million >= _LIMIT:
            raise _Skip("invalid_rate")
        stored = per_million.quantize(_QUANTUM, context=_CTX)
    except decimal.DecimalException:
        raise _Skip("invalid_rate") from None
    if stored != per_million:
        rounded.append(RoundedRate(model=model, key=key, catalog_value=str(value), stored_per_mtok=stored))
    return stored


def _rate_or_none(entry: Mapping[str, Any], model: str, key: str, rounded: list[RoundedRate]) -> Decimal | None:
    value = entry.get(key)
    return None if value is None else _per_mtok(model, key, value, rounded)


def _check_importable(model: str, entry: Any) -> None:
    """Raise _Skip with the reason a catalog entry is not a usable token price."""
    if model == SPEC_ENTRY:
        raise _Skip(SPEC_ENTRY)
    if not isinstance(entry, Mapping):
        raise _Skip("not_an_object")
    if entry.get("mode") not in TOKEN_MODES:
        raise _Skip("not_a_chat_model")
    if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
        raise _Skip("no_token_price")
    if not model.strip() or model != model.strip() or len(model) > _MODEL_NAME_MAX or is_glob(model):
        raise _Skip("unusable_name")


def _tier_fields(model: str, entry: Mapping[str, Any], rounded: list[RoundedRate]) -> dict[str, Any]:
    """The context tier's Price fields (all None without a tier), or _Skip("unsupported_tier").

    LiteLLM switches to a tier only through its input rate (`input_cost_per_token_above_<N>k_tokens`);
    the other kinds follow that threshold.
    """
    tiers: dict[int, dict[str, str]] = {}
    for key, value in entry.items():
        match = _TIER_KEY.match(key)
        if match is None or value is None:
            continue
        kind, count, k = match.groups()
        threshold = int(count) * (1000 if k else 1)
        tiers.setdefault(threshold, {})[kind] = key
    if not tiers:
        return {"tier_threshold": None, **dict.fromkeys(_TIER_FIELDS.values())}
    if len(tiers) > 1:
        raise _Skip("unsupported_tier")
    ((threshold, keys),) = tiers.items()
    if "input_cost_per_token" not in keys:
        raise _Skip("unsupported_tier")
    fields: dict[str, Any] = {"tier_threshold": threshold}
    for kind, name in _TIER_FIELDS.items():
        fields[name] = _per_mtok(model, keys[kind], entry[keys[kind]], rounded) if kind in keys else None
    return fields


def _price_fields(model: str, entry: Any, *, include_free: bool) -> tuple[dict[str, Any], list[RoundedRate]]:
    """The Price fields for one catalog entry, or _Skip with the reason it is not imported."""
    _check_importable(model, entry)
    rounded: list[RoundedRate] = []
    fields: dict[str, Any] = {name: _rate_or_none(entry, model, key, rounded) for key, name in _BASE_KEYS.items()}
    if not include_free and fields["input_per_mtok"] == 0 and fields["output_per_mtok"] == 0:
        raise _Skip("zero_price")
    fields.update(_tier_fields(model, entry, rounded))
    return fields, rounded


def _same_rates(price: Price, fields: Mapping[str, Any]) -> bool:
    return all(getattr(price, name) == fields[name] for name in _COMPARED_FIELDS)


def _check_plan(plan: PricePlan, *, currency: str) -> None:
    if currency.upper() != plan.currency.upper():
        raise ValidationError(
            f"Plan {plan.slug!r} is priced in {plan.currency} but the catalog is in {currency.upper()}; "
            "prices are not converted (a plan in another currency derives its prices from this one)."
        )
    if plan.cost_plan_id is not None:
        raise ValidationError(
            f"Plan {plan.slug!r} is a sell plan derived from another plan: import into its cost plan, "
            "whose new prices are derived into it."
        )


@transaction.atomic
def prices_import_litellm(
    *,
    plan: PricePlan,
    catalog: Mapping[str, Any],
    effective_from: dt.datetime | None = None,
    actor_label: str = "",
    models: Iterable[str] | None = None,
    currency: str = "USD",
    source: str = "",
    include_free: bool = False,
) -> CatalogImportResult:
    """Add a price version to `plan` for every token-priced chat model of `catalog` that changed.

    `catalog` is the parsed JSON (model name -> entry); `models` limits the import to those
    names; `currency` is the catalog's currency (LiteLLM's is USD) and must be the plan's;
    `source` says where the catalog came from, for the audit log. Models whose input and output
    both cost 0 are skipped unless `include_free`: a price of 0 would bill their usage at nothing
    without anyone noticing, while an unpriced model's usage is flagged to operators.
    """
    if not isinstance(catalog, Mapping):
        raise ValidationError("The catalog must be a JSON object mapping model names to entries.")
    _check_plan(plan, currency=currency)
    dated = effective_from is not None  # without a date: first versions from the beginning, others now
    effective_from = effective_from or timezone.now()
    if timezone.is_naive(effective_from):
        raise ValidationError("effective_from must be timezone-aware.")

    # Serialize imports into one plan: the version checks below must not race another import.
    PricePlan.objects.select_for_update().filter(pk=plan.pk).first()

    result = CatalogImportResult(plan_slug=plan.slug, currency=plan.currency, effective_from=effective_from)
    wanted = list(catalog) if models is None else list(dict.fromkeys(models))
    parsed: dict[str, dict[str, Any]] = {}
    rounded_by_model: dict[str, list[RoundedRate]] = {}
    for name in wanted:
        if name not in catalog:
            result.skipped_models.setdefault(NOT_IN_CATALOG, []).append(name)
            continue
        try:
            fields, rounded = _price_fields(name, catalog[name], include_free=include_free)
        except _Skip as skip:
            result.skipped_models.setdefault(skip.reason, []).append(name)
            continue
        parsed[name] = fields
        rounded_by_model[name] = rounded

    newest: dict[str, Price] = {}
    taken: set[tuple[str, dt.datetime]] = set()  # (model, effective_from) of existing versions
    existing = Price.objects.filter(plan=plan, tenant__isnull=True, model_pattern__in=list(parsed)).order_by(
        "model_pattern", "-effective_from"
    )
    for price in existing:
        newest.setdefault(price.model_pattern, price)
        taken.add((price.model_pattern, price.effective_from))

    to_create: list[Price] = []
    for name, fields in parsed.items():
        current = newest.get(name)
        starts = effective_from if dated else default_effective_from(first=current is None, now=effective_from)
        if current is not None and _same_rates(current, fields):
            result.unchanged_models.append(name)
        elif (name, starts) in taken:
            result.skipped_models.setdefault("version_conflict", []).append(name)
        else:
            to_create.append(
                Price(plan=plan, model_pattern=name, effective_from=starts, source=CATALOG_SOURCE, **fields)
            )
            result.created_models.append(name)
            if starts != effective_from:
                result.from_beginning_models.append(name)
            result.rounded.extend(rounded_by_model[name])
    Price.objects.bulk_create(to_create, batch_size=500)
    if to_create:
        # New cost versions: the sell plans over this plan get new derived versions from the same
        # moment (billing/services/resale.py); what they rated before keeps its price.
        derived, result.derive_failures = sell_plans_derive(
            cost_plan=plan, effective_from=effective_from if dated else None, actor_label=actor_label or "import"
        )
        result.derived = [one.summary() for one in derived]

    audit_record(
        action="price.import",
        target=plan,
        actor_label=actor_label,
        changes={
            "source": source or CATALOG_SOURCE,
            "effective_from": effective_from.isoformat(),
            "from_beginning_models": result.from_beginning_models,
            "created": result.created,
            "unchanged": result.unchanged,
            "skipped": result.skipped,
            "created_models": result.created_models,
            "rounded": [
                {
                    "model": r.model,
                    "key": r.key,
                    "catalog_value": r.catalog_value,
                    "stored_per_mtok": str(r.stored_per_mtok),
                }
                for r in result.rounded
            ],
        },
    )
    return result
