"""Rating: the cost of one request's tokens under one price version. Pure and exact.

The rules (docs/billing-rules.md has worked examples):
- input_tokens counts every prompt token; cached_input_tokens (cache reads) and
  cache_write_tokens are parts of it, so uncached input = input - cached - cache_write.
- A missing cache-read or cache-write rate means the input rate.
- When a context tier is set and input_tokens > tier_threshold, the whole request is priced
  at the tier's rates; a tier rate left empty falls back to the same kind's base rate.
"""

import decimal
from dataclasses import dataclass
from decimal import Decimal

from billing.money import COST_QUANTUM

# Enough digits that tokens (<= 1e12) x rate (<= 1e12, 12 places) never rounds.
_EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Overflow, decimal.InvalidOperation])
_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-1M-token rates, already resolved (no None) for one tier."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal


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
    total = ctx.add(
        ctx.add(ctx.multiply(uncached, r.input), ctx.multiply(cached_input_tokens, r.cached_input)),
        ctx.add(ctx.multiply(cache_write_tokens, r.cache_write), ctx.multiply(output_tokens, r.output)),
    )
    return ctx.divide(total, _PER_MILLION).quantize(COST_QUANTUM, context=ctx)
