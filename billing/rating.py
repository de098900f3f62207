"""Rating: the cost of one request's tokens under one price version. Pure and exact.

The rules (docs/billing-rules.md has worked examples):
- input_tokens counts every prompt token; cached_input_tokens (cache reads) and
  cache_write_tokens are parts of it, so uncached input = input - cached - cache_write.
- A missing cache-read or cache-write rate means the input rate.
- When a context tier is set and input_tokens > tier_threshold, the whole request is priced
  at the tier's rates; a tier rate left empty falls back to the same kind's base rate.
"""

import decimal
from dataclasses import dataclass, field
from decimal import Decimal

from billing.money import COST_PLACES, COST_QUANTUM

# Enough digits that tokens (<= 1e12) x rate (<= 1e12, 12 places) never rounds.
_EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Overflow, decimal.InvalidOperation])
_PER_MILLION = Decimal(1_000_000)
# A per-1M-token rate with at most this many decimal places, as an integer of 10^-12 units,
# times a token count, is the cost as an integer of 10^-18 units (COST_PLACES): exact.
_UNIT_PLACES = COST_PLACES - 6


def _as_units(rate: Decimal) -> int | None:
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate.as_tuple().exponent < -_UNIT_PLACES:
        return None
    return int(rate.scaleb(_UNIT_PLACES, context=_EXACT))


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-1M-token rates, already resolved (no None) for one tier."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    # The same rates as integers of 10^-12 (input, cached_input, cache_write, output), when all
    # fit: rating then multiplies integers, several times faster than Decimal and as exact.
    units: tuple[int, int, int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        units = tuple(_as_units(r) for r in (self.input, self.cached_input, self.cache_write, self.output))
        if None not in units:
            object.__setattr__(self, "units", units)


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """What rating needs of a Price row, detached from the ORM (cheap to build and compare)."""

    price_id: int | None
    base: Rates
    tier_threshold: int | None
    tier: Rates | None

    def rates_for(self, input_tokens: int) -> Rates:
        if self.tier is not None and self.tier_threshold is not None and input_tokens > self.tier_threshold:
            return self.tier
        return self.base


def terms_from_price(price) -> PriceTerms:
    base_input = price.input_per_mtok
    base = Rates(
        input=base_input,
        output=price.output_per_mtok,
        cached_input=price.cached_input_per_mtok if price.cached_input_per_mtok is not None else base_input,
        cache_write=price.cache_write_per_mtok if price.cache_write_per_mtok is not None else base_input,
    )
    tier = None
    if price.tier_threshold is not None:
        tier_input = price.tier_input_per_mtok if price.tier_input_per_mtok is not None else base.input

        def pick(tier_rate: Decimal | None, base_rate: Decimal | None, fallback: Decimal) -> Decimal:
            if tier_rate is not None:
                return tier_rate
            return base_rate if base_rate is not None else fallback

        tier = Rates(
            input=tier_input,
            output=price.tier_output_per_mtok if price.tier_output_per_mtok is not None else base.output,
            cached_input=pick(price.tier_cached_input_per_mtok, price.cached_input_per_mtok, tier_input),
            cache_write=pick(price.tier_cache_write_per_mtok, price.cache_write_per_mtok, tier_input),
        )
    return PriceTerms(price_id=price.pk, base=base, tier_threshold=price.tier_threshold, tier=tier)


def rate(
    terms: PriceTerms,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """The unrounded cost in currency units (18 decimal places, exact)."""
    uncached = input_tokens - cached_input_tokens - cache_write_tokens
    if uncached < 0:
        raise ValueError("cached_input_tokens + cache_write_tokens exceed input_tokens")
    r = terms.rates_for(input_tokens)
    ctx = _EXACT
    units = r.units
    if units is not None:
        in_units = (
            uncached * units[0]
            + cached_input_tokens * units[1]
            + cache_write_tokens * units[2]
            + output_tokens * units[3]
        )
        return Decimal(in_units).scaleb(-COST_PLACES, context=ctx)
    total = ctx.add(
        ctx.add(ctx.multiply(uncached, r.input), ctx.multiply(cached_input_tokens, r.cached_input)),
        ctx.add(ctx.multiply(cache_write_tokens, r.cache_write), ctx.multiply(output_tokens, r.output)),
    )
    return ctx.divide(total, _PER_MILLION).quantize(COST_QUANTUM, context=ctx)
