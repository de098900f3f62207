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
from billing.models import PRICE_FIELD, Price, PricePlan, ServiceTier
from billing.money import ROUNDING
from billing.selectors import is_glob
from billing.services.pricing import PRICED_FROM_BEGINNING, default_effective_from
from billing.services.resale import sell_plans_derive

CATALOG_SOURCE = "litellm catalog"  # Price.source of imported versions
TOKEN_MODES = frozenset({"chat", "completion", "responses"})
SPEC_ENTRY = "sample_spec"  # the catalog's self-description, not a model

# LiteLLM's rate keys (currency per token) -> Price fields (per 1M). Each key may carry a
# service-tier suffix (`_priority`, `_flex`; `_batches` for the Batch API) and, for the four
# kinds and the 1-hour write, a context tier (`_above_<N>k_tokens`, before the suffix).
_BASE_KEYS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cached_input_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_per_mtok",
    "output_cost_per_reasoning_token": "reasoning_per_mtok",
}
_TIER_FIELDS = {
    "input_cost_per_token": "tier_input_per_mtok",
    "output_cost_per_token": "tier_output_per_mtok",
    "cache_read_input_token_cost": "tier_cached_input_per_mtok",
    "cache_creation_input_token_cost": "tier_cache_write_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "tier_cache_write_1h_per_mtok",
}
_INPUT, _OUTPUT, _READ, _WRITE, _WRITE_1H, _REASONING = _BASE_KEYS
_SUFFIXES = {ServiceTier.PRIORITY: "_priority", ServiceTier.FLEX: "_flex", ServiceTier.BATCH: "_batches"}
# `input_cost_per_token_above_200k_tokens[_priority]`; LiteLLM also reads a bare count (`_above_128_tokens`).
_TIER_KEY = re.compile(
    r"^(%s)_above_(\d+)(k?)_tokens(_priority|_flex|_batches)?$"  # noqa: UP031
    % "|".join(sorted(_TIER_FIELDS, key=len, reverse=True))
)
_SERVICE_KEY = re.compile(r"^(%s)(_priority|_flex|_batches)$" % "|".join(_BASE_KEYS))  # noqa: UP031
# Keys read to decide what to import, though they hold no rate.
_CONTROL_KEYS = frozenset({"max_input_tokens", "max_output_tokens", "litellm_provider", "mode", "alias_of"})
# Providers whose context tier starts AT the threshold (LiteLLM: _INCLUSIVE_THRESHOLD_PROVIDERS);
# stored as threshold - 1, the same thing for whole token counts.
_INCLUSIVE_PROVIDERS = frozenset({"xai"})
_COMPARED_FIELDS = (
    *_BASE_KEYS.values(),
    *_TIER_FIELDS.values(),
    "tier_threshold",
    "max_input_tokens",
    "max_output_tokens",
)

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
    "unsupported_tier": "context tiers we cannot store (several thresholds)",
    "unsupported_pricing": "priced by a tiered_pricing table or off-peak hours, which we do not model",
    "broken_alias": "alias_of names no entry, or another alias",
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
    # Rows of priority, flex and batch prices among the versions created (beside the default rows).
    service_tier_rows: int = 0
    # A service tier of a model left out (its requests pay the default tier's rates): reason -> "model [tier]".
    skipped_tiers: dict[str, list[str]] = field(default_factory=dict)
    # Rate-like catalog keys of the models read that no price field takes: key -> models.
    unread_keys: dict[str, int] = field(default_factory=dict)
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
        if self.service_tier_rows:
            text += f"; {self.service_tier_rows} service-tier rows (priority, flex, batch) with them"
        if self.skipped_tiers:
            tiers = ", ".join(f"{reason} {len(names)}" for reason, names in sorted(self.skipped_tiers.items()))
            text += f"; service tiers left at the default price: {tiers}"
        if self.rounded:
            text += f"; {len(self.rounded)} rates rounded to {_PLACES} places per 1M"
        if self.unread_keys:
            text += f"; {len(self.unread_keys)} catalog keys not understood (see below)"
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
    if entry.get("tiered_pricing") is not None or entry.get("off_peak_pricing") is not None:
        raise _Skip("unsupported_pricing")


def resolve_alias(catalog: Mapping[str, Any], name: str) -> Any:
    """The entry `name` stands for: an `{"alias_of": target}` entry is its target's (one hop)."""
    entry = catalog[name]
    if isinstance(entry, Mapping) and "alias_of" in entry:
        target = catalog.get(entry["alias_of"]) if isinstance(entry["alias_of"], str) else None
        if not isinstance(target, Mapping) or "alias_of" in target:
            raise _Skip("broken_alias")
        return target
    return entry


@dataclass
class _Keys:
    """A catalog entry's rate keys, sorted: base[(kind, suffix)] and tiers[(suffix, threshold)][kind]."""

    base: dict[tuple[str, str], str] = field(default_factory=dict)
    tiers: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)


def _keys_of(entry: Mapping[str, Any]) -> _Keys:
    keys = _Keys()
    for key, value in entry.items():
        if value is None:
            continue
        if key in _BASE_KEYS:
            keys.base[(key, "")] = key
            continue
        match = _SERVICE_KEY.match(key)
        if match is not None:
            keys.base[(match.group(1), match.group(2))] = key
            continue
        match = _TIER_KEY.match(key)
        if match is not None:
            kind, count, k, suffix = match.groups()
            threshold = int(count) * (1000 if k else 1)
            keys.tiers.setdefault((suffix or "", threshold), {})[kind] = key
            continue
        if ("cost" in key or "price" in key or "pricing" in key) and key not in _CONTROL_KEYS:
            keys.unread.append(key)
    return keys


class _Reader:
    """Turns one entry's keys into per-1M Decimals, collecting rounded values."""

    def __init__(self, model: str, entry: Mapping[str, Any]) -> None:
        self.model, self.entry, self.rounded = model, entry, list[RoundedRate]()

    def rate(self, key: str | None) -> Decimal | None:
        return None if key is None else _per_mtok(self.model, key, self.entry[key], self.rounded)

    def half(self, per_mtok: Decimal) -> Decimal:
        """Half a rate (LiteLLM's batch output without a batch price), kept to 12 places."""
        exact = per_mtok / 2
        stored = exact.quantize(_QUANTUM, context=_CTX)
        if stored != exact:
            key = "output_cost_per_token / 2 (batch)"
            self.rounded.append(RoundedRate(self.model, key, str(exact), stored))
        return stored


def _limit(entry: Mapping[str, Any], key: str) -> int | None:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 2**63:
        return None
    return int(value) if value == int(value) else None


def _one_threshold(thresholds: set[int]) -> int | None:
    if len(thresholds) > 1:
        raise _Skip("unsupported_tier")
    return next(iter(thresholds), None)


def _default_row(read: _Reader, keys: _Keys) -> dict[str, Any]:
    fields: dict[str, Any] = {name: read.rate(keys.base.get((kind, ""))) for kind, name in _BASE_KEYS.items()}
    threshold = _one_threshold({n for (suffix, n) in keys.tiers if suffix == ""})
    tier = keys.tiers.get(("", threshold), {}) if threshold is not None else {}
    fields["tier_threshold"] = threshold
    for kind, name in _TIER_FIELDS.items():
        fields[name] = read.rate(tier.get(kind))
    return fields


def _service_row(read: _Reader, keys: _Keys, suffix: str, default: dict[str, Any]) -> dict[str, Any]:
    """Priority or flex: LiteLLM reads `<key><suffix>` and, when it is missing, `<key>` (its
    get_cost_per_unit fallback), for the base rates and the context tier's; the 1-hour write of
    the context tier is the exception (`_first_present_key`: the suffixed tier key or the flat one)."""
    fields: dict[str, Any] = {}
    for kind, name in _BASE_KEYS.items():
        own = keys.base.get((kind, suffix))
        fields[name] = read.rate(own) if own is not None else default[name]
    if keys.base.get((_REASONING, suffix)) is None and keys.base.get((_OUTPUT, suffix)) is not None:
        fields["reasoning_per_mtok"] = None  # the tier's own output price covers its reasoning
    threshold = _one_threshold({n for (sfx, n) in keys.tiers if sfx in ("", suffix)})
    fields["tier_threshold"] = threshold
    own_tier = keys.tiers.get((suffix, threshold), {}) if threshold is not None else {}
    std_tier = keys.tiers.get(("", threshold), {}) if threshold is not None else {}
    for kind, name in _TIER_FIELDS.items():
        key = own_tier.get(kind) or (std_tier.get(kind) if kind != _WRITE_1H else None)
        fields[name] = read.rate(key)
    return fields


def _batch_row(read: _Reader, keys: _Keys, default: dict[str, Any]) -> dict[str, Any]:
    """The Batch API (LiteLLM's batch_cost_calculator): each kind's `_batches` rate (and its own
    `_above_<N>k_tokens_batches` tier); a missing output rate is half the standard one; a missing
    cache read is the standard read (its context tier included); a missing write is the batch input."""
    sfx = _SUFFIXES[ServiceTier.BATCH]
    own = {kind: keys.base.get((kind, sfx)) for kind in _BASE_KEYS}
    fields: dict[str, Any] = {
        "input_per_mtok": read.rate(own[_INPUT]),
        "output_per_mtok": read.rate(own[_OUTPUT]) if own[_OUTPUT] else read.half(default["output_per_mtok"]),
        "cached_input_per_mtok": read.rate(own[_READ]) if own[_READ] else default["cached_input_per_mtok"],
        "cache_write_per_mtok": read.rate(own[_WRITE]),
        "cache_write_1h_per_mtok": read.rate(own[_WRITE_1H]),
        "reasoning_per_mtok": None,  # the batch path prices reasoning as output
    }
    std_read_tiers = {n for (suffix, n), kinds in keys.tiers.items() if suffix == "" and _READ in kinds}
    thresholds = {n for (suffix, n) in keys.tiers if suffix == sfx}
    if own[_READ] is None:
        thresholds |= std_read_tiers
    threshold = _one_threshold(thresholds)
    fields["tier_threshold"] = threshold
    tier = keys.tiers.get((sfx, threshold), {}) if threshold is not None else {}
    for kind, name in _TIER_FIELDS.items():
        fields[name] = read.rate(tier.get(kind))
    if threshold is not None and own[_READ] is None and tier.get(_READ) is None:
        fields["tier_cached_input_per_mtok"] = read.rate(keys.tiers.get(("", threshold), {}).get(_READ))
    return fields


def _price_rows(
    model: str, entry: Any, *, include_free: bool, skipped_tiers: dict[str, list[str]]
) -> tuple[dict[str, dict[str, Any]], list[RoundedRate], list[str]]:
    """{service tier: Price fields} for one catalog entry, the rates rounded and the keys not
    read; or _Skip with the reason it is not imported. A service tier whose rows cannot be stored
    is left out (its requests then pay the default tier's rates) and listed in `skipped_tiers`."""
    _check_importable(model, entry)
    keys = _keys_of(entry)
    read = _Reader(model, entry)
    rows = {ServiceTier.DEFAULT.value: _default_row(read, keys)}
    default = rows[ServiceTier.DEFAULT.value]
    if not include_free and default["input_per_mtok"] == 0 and default["output_per_mtok"] == 0:
        raise _Skip("zero_price")
    present = {suffix for (_, suffix) in keys.base} | {suffix for (suffix, _) in keys.tiers}
    for tier, suffix in _SUFFIXES.items():
        if suffix not in present:
            continue
        if tier == ServiceTier.BATCH and keys.base.get((_INPUT, suffix)) is None:
            skipped_tiers.setdefault("batch_without_input", []).append(model)
            continue
        try:
            rows[tier.value] = (
                _batch_row(read, keys, default)
                if tier == ServiceTier.BATCH
                else _service_row(read, keys, suffix, default)
            )
        except _Skip as skip:
            if tier == ServiceTier.DEFAULT:
                raise
            skipped_tiers.setdefault(skip.reason, []).append(f"{model} [{tier.value}]")
    inclusive = entry.get("litellm_provider") in _INCLUSIVE_PROVIDERS
    limits = {
        "max_input_tokens": _limit(entry, "max_input_tokens"),
        "max_output_tokens": _limit(entry, "max_output_tokens"),
    }
    for fields in rows.values():
        if inclusive and fields["tier_threshold"]:
            fields["tier_threshold"] -= 1
        fields.update(limits)
    return rows, read.rounded, keys.unread


def _same_rates(prices: list[Price], rows: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a plan's version (its rows of every tier) has exactly these rates."""
    if {price.service_tier for price in prices} != set(rows) or len(prices) != len(rows):
        return False
    return all(getattr(price, name) == rows[price.service_tier][name] for price in prices for name in _COMPARED_FIELDS)


def _parse_catalog(
    catalog: Mapping[str, Any], wanted: list[str], *, include_free: bool, result: CatalogImportResult
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, list[RoundedRate]]]:
    """{model: {service tier: Price fields}} of the wanted entries, and their rounded rates;
    skipped entries, left-out tiers and unread keys are counted on `result`."""
    parsed: dict[str, dict[str, dict[str, Any]]] = {}
    rounded_by_model: dict[str, list[RoundedRate]] = {}
    for name in wanted:
        if name not in catalog:
            result.skipped_models.setdefault(NOT_IN_CATALOG, []).append(name)
            continue
        try:
            rows, rounded, unread = _price_rows(
                name, resolve_alias(catalog, name), include_free=include_free, skipped_tiers=result.skipped_tiers
            )
        except _Skip as skip:
            result.skipped_models.setdefault(skip.reason, []).append(name)
            continue
        parsed[name] = rows
        rounded_by_model[name] = rounded
        for key in unread:
            result.unread_keys[key] = result.unread_keys.get(key, 0) + 1

    return parsed, rounded_by_model


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
    parsed, rounded_by_model = _parse_catalog(catalog, wanted, include_free=include_free, result=result)
    newest: dict[str, list[Price]] = {}
    taken: set[tuple[str, dt.datetime]] = set()  # (model, effective_from) of existing versions
    existing = Price.objects.filter(plan=plan, tenant__isnull=True, model_pattern__in=list(parsed)).order_by(
        "model_pattern", "-effective_from"
    )
    for price in existing:
        version = newest.setdefault(price.model_pattern, [price])
        if price.effective_from == version[0].effective_from and price is not version[0]:
            version.append(price)
        taken.add((price.model_pattern, price.effective_from))

    to_create: list[Price] = []
    for name, rows in parsed.items():
        current = newest.get(name)
        starts = effective_from if dated else default_effective_from(first=current is None, now=effective_from)
        if current is not None and _same_rates(current, rows):
            result.unchanged_models.append(name)
        elif (name, starts) in taken:
            result.skipped_models.setdefault("version_conflict", []).append(name)
        else:
            to_create.extend(
                Price(
                    plan=plan,
                    model_pattern=name,
                    effective_from=starts,
                    service_tier=tier,
                    source=CATALOG_SOURCE,
                    **fields,
                )
                for tier, fields in rows.items()
            )
            result.created_models.append(name)
            result.service_tier_rows += len(rows) - 1
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
            "service_tier_rows": result.service_tier_rows,
            "skipped_service_tiers": result.skipped_tiers,
            "unread_keys": result.unread_keys,
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
