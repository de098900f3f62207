"""Rating: the cost of one request's tokens under one price version. Pure and exact.

The rules (docs/billing-rules.md has worked examples):
- input_tokens counts every prompt token; cached_input_tokens (cache reads) and
  cache_write_tokens are parts of it, so uncached input = input - cached - cache_write.
- cache_write_1h_tokens (1-hour cache writes) are part of cache_write_tokens, and
  reasoning_tokens are part of output_tokens, as in LiteLLM's usage objects.
- A missing cache-read or cache-write rate means the input rate; a missing 1-hour write rate
  means the cache-write rate; a missing reasoning rate means the output rate.
- When a context tier is set and input_tokens > tier_threshold, the whole request is priced
  at the tier's rates; a tier rate left empty falls back to the same kind's base rate.

This module is the one home of those rules. Ingest and re-rating call `rate` and
`tier_applies` (and store the tier choice on the event); invoices call `quantities`,
`tier_rates`, `kind_rate` and `line_amount` on usage summed per price and tier. Nothing else
splits tokens into kinds, picks a tier or multiplies by a rate, in Python or in SQL.
"""

import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from billing.money import COST_PLACES, quantize_cost

if TYPE_CHECKING:
    from billing.models import Price


# Enough digits that tokens (<= 1e12) x rate (<= 1e12, 12 places) never rounds.
_EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Overflow, decimal.InvalidOperation])
_PER_MILLION = Decimal(1_000_000)
# A per-1M-token rate with at most this many decimal places, as an integer of 10^-12 units,
# times a token count, is the cost as an integer of 10^-18 units (COST_PLACES): exact.
_UNIT_PLACES = COST_PLACES - 6
# An integer of 10^-18 units as a Decimal: a bound method called positionally, the cheapest
# exact conversion (ingest does it twice per event with resale: the price and the cost basis).
_SCALEB = _EXACT.scaleb
_TO_COST = -COST_PLACES

# Token kinds, in the order invoices list them (the values are InvoiceLine.TokenKind's).
INPUT = "input"  # uncached input: input_tokens - cached_input_tokens - cache_write_tokens
CACHED_INPUT = "cached_input"
CACHE_WRITE = "cache_write"  # 5-minute writes: cache_write_tokens - cache_write_1h_tokens
CACHE_WRITE_1H = "cache_write_1h"
OUTPUT = "output"  # output_tokens - reasoning_tokens
REASONING = "reasoning"
TOKEN_KINDS = (INPUT, CACHED_INPUT, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT, REASONING)


def _as_units(rate: Decimal) -> int | None:
    if not isinstance(rate, Decimal) or not rate.is_finite():
        return None
    exponent = rate.as_tuple().exponent  # an int for a finite Decimal ('n', 'N', 'F' otherwise)
    if not isinstance(exponent, int) or exponent < -_UNIT_PLACES:
        return None
    return int(rate.scaleb(_UNIT_PLACES, context=_EXACT))


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-1M-token rates, already resolved (no None) for one tier."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal
    # The same rates as integers of 10^-12, in TOKEN_KINDS order, when all fit: rating then
    # multiplies integers, several times faster than Decimal and as exact.
    units: tuple[int, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        units = tuple(_as_units(kind_rate(self, kind)) for kind in TOKEN_KINDS)
        if None not in units:
            object.__setattr__(self, "units", units)


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """What rating needs of a Price row, detached from the ORM (cheap to build and compare)."""

    price_id: int | None
    base: Rates
    tier_threshold: int | None
    tier: Rates | None
    # The model's length limits on this price version (None: no limit known).
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    # Resale: the terms of the cost price this price was derived from, converted into this
    # price's currency; rating the same tokens with them gives the event's cost basis.
    cost: "PriceTerms | None" = None
    # (threshold, base units, tier units) when every rate is integral in 10^-12 units; the
    # threshold is None without a tier. Lets rating pick the tier and multiply in a few steps.
    units: tuple[int | None, tuple[int, ...], tuple[int, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        base_units = self.base.units
        tiered = self.tier is not None and self.tier_threshold is not None
        tier_units = self.tier.units if tiered and self.tier is not None else base_units
        if base_units is not None and tier_units is not None:
            object.__setattr__(self, "units", (self.tier_threshold if tiered else None, base_units, tier_units))

    def rates_for(self, input_tokens: int) -> Rates:
        return tier_rates(self, long_context=tier_applies(self, input_tokens=input_tokens))


def tier_applies(terms: PriceTerms, *, input_tokens: int) -> bool:
    """The tier choice: the whole request is at the tier's rates when input_tokens > threshold.

    Only input_tokens decides; exactly the threshold is still the base price. Ingest stores the
    answer on the event (UsageEvent.long_context), so later reads never re-derive it.
    """
    return terms.tier is not None and terms.tier_threshold is not None and input_tokens > terms.tier_threshold


def tier_rates(terms: PriceTerms, *, long_context: bool) -> Rates:
    """The rates of the tier chosen (a price without a tier has only its base rates)."""
    return terms.tier if long_context and terms.tier is not None else terms.base


def kind_rate(rates: Rates, token_kind: str) -> Decimal:
    """The per-1M rate of one token kind."""
    return {
        INPUT: rates.input,
        CACHED_INPUT: rates.cached_input,
        CACHE_WRITE: rates.cache_write,
        CACHE_WRITE_1H: rates.cache_write_1h,
        OUTPUT: rates.output,
        REASONING: rates.reasoning,
    }[token_kind]


def limits_exceeded(terms: PriceTerms, *, input_tokens: int, output_tokens: int) -> list[tuple[str, int, int]]:
    """(field, limit, requested) for each length limit of the price that the counts go over."""
    exceeded = []
    if terms.max_input_tokens is not None and input_tokens > terms.max_input_tokens:
        exceeded.append(("max_input_tokens", terms.max_input_tokens, input_tokens))
    if terms.max_output_tokens is not None and output_tokens > terms.max_output_tokens:
        exceeded.append(("max_output_tokens", terms.max_output_tokens, output_tokens))
    return exceeded


def uncached_input(*, input_tokens: int, cached_input_tokens: int, cache_write_tokens: int) -> int:
    """input_tokens counts every prompt token; the cache reads and writes are parts of it."""
    uncached = input_tokens - cached_input_tokens - cache_write_tokens
    if uncached < 0:
        raise ValueError("cached_input_tokens + cache_write_tokens exceed input_tokens")
    return uncached


def _parts(*, cache_write_tokens: int, cache_write_1h_tokens: int, output_tokens: int, reasoning_tokens: int) -> None:
    if cache_write_1h_tokens > cache_write_tokens:
        raise ValueError("cache_write_1h_tokens exceed cache_write_tokens")
    if reasoning_tokens > output_tokens:
        raise ValueError("reasoning_tokens exceed output_tokens")


def quantities(
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, int]:
    """Tokens by kind (OpenAI's convention, docs/billing-rules.md section 1), in TOKEN_KINDS order."""
    _parts(
        cache_write_tokens=cache_write_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    return {
        INPUT: uncached_input(
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, cache_write_tokens=cache_write_tokens
        ),
        CACHED_INPUT: cached_input_tokens,
        CACHE_WRITE: cache_write_tokens - cache_write_1h_tokens,
        CACHE_WRITE_1H: cache_write_1h_tokens,
        OUTPUT: output_tokens - reasoning_tokens,
        REASONING: reasoning_tokens,
    }


def line_amount(quantity: int, per_mtok: Decimal) -> Decimal:
    """quantity x rate / 1M, exact: 12 decimal places of rate + 6 = the 18 places of event costs."""
    return quantize_cost(_EXACT.divide(_EXACT.multiply(Decimal(quantity), per_mtok), _PER_MILLION))


def terms_from_price(price: "Price", *, cost: PriceTerms | None = None) -> PriceTerms:
    base_input = price.input_per_mtok
    base_write = price.cache_write_per_mtok if price.cache_write_per_mtok is not None else base_input
    base = Rates(
        input=base_input,
        output=price.output_per_mtok,
        cached_input=price.cached_input_per_mtok if price.cached_input_per_mtok is not None else base_input,
        cache_write=base_write,
        cache_write_1h=price.cache_write_1h_per_mtok if price.cache_write_1h_per_mtok is not None else base_write,
        reasoning=price.reasoning_per_mtok if price.reasoning_per_mtok is not None else price.output_per_mtok,
    )
    tier = None
    if price.tier_threshold is not None:
        tier_input = price.tier_input_per_mtok if price.tier_input_per_mtok is not None else base.input

        def pick(tier_rate: Decimal | None, base_rate: Decimal | None, fallback: Decimal) -> Decimal:
            if tier_rate is not None:
                return tier_rate
            return base_rate if base_rate is not None else fallback

        tier_output = price.tier_output_per_mtok if price.tier_output_per_mtok is not None else base.output
        tier_write = pick(price.tier_cache_write_per_mtok, price.cache_write_per_mtok, tier_input)
        tier = Rates(
            input=tier_input,
            output=tier_output,
            cached_input=pick(price.tier_cached_input_per_mtok, price.cached_input_per_mtok, tier_input),
            cache_write=tier_write,
            cache_write_1h=pick(price.tier_cache_write_1h_per_mtok, price.cache_write_1h_per_mtok, tier_write),
            # No tier column: a reasoning rate applies in both tiers; without one, the tier's output rate.
            reasoning=price.reasoning_per_mtok if price.reasoning_per_mtok is not None else tier_output,
        )
    return PriceTerms(
        price_id=price.pk,
        base=base,
        tier_threshold=price.tier_threshold,
        tier=tier,
        max_input_tokens=price.max_input_tokens,
        max_output_tokens=price.max_output_tokens,
        cost=cost,
    )


def _checked_uncached(  # noqa: PLR0917
    input_tokens: int, cached: int, cache_write: int, cache_write_1h: int, output: int, reasoning: int
) -> int:
    """uncached_input and _parts for rate and rate_with_basis, positional: once per ingested event."""
    uncached = input_tokens - cached - cache_write
    if uncached < 0:
        raise ValueError("cached_input_tokens + cache_write_tokens exceed input_tokens")
    if cache_write_1h or reasoning:
        _parts(cache_write_tokens=cache_write, cache_write_1h_tokens=cache_write_1h, output_tokens=output,
               reasoning_tokens=reasoning)  # fmt: skip
    return uncached


def rate(
    terms: PriceTerms,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Decimal:
    """The unrounded cost in currency units (18 decimal places, exact)."""
    uncached = _checked_uncached(
        input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens
    )
    return _cost(
        terms, input_tokens, uncached, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens,
        reasoning_tokens,
    )  # fmt: skip


def rate_with_basis(
    terms: PriceTerms,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> tuple[Decimal, Decimal | None]:
    """Dual rating: (the cost at the price, the cost basis at its cost price or None), exact.

    Each side picks its own context tier (a derived price copies its cost price's threshold, so
    they agree) and both are exact, so margin = cost - cost basis exactly.
    """
    uncached = _checked_uncached(
        input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens
    )
    cost = _cost(
        terms, input_tokens, uncached, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens,
        reasoning_tokens,
    )  # fmt: skip
    basis = terms.cost
    if basis is None:
        return cost, None
    return cost, _cost(
        basis, input_tokens, uncached, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens,
        reasoning_tokens,
    )  # fmt: skip


def _cost(  # noqa: PLR0917
    terms: PriceTerms,
    input_tokens: int,
    uncached: int,
    cached: int,
    cache_write: int,
    cache_write_1h: int,
    output: int,
    reasoning: int,
) -> Decimal:
    """Positional on purpose (the hot path of ingest): the tier choice of tier_applies, then
    quantity x rate per kind, in integers of 10^-18 when the rates allow it."""
    units = terms.units
    if units is not None:
        threshold, base, tier = units
        u = tier if threshold is not None and input_tokens > threshold else base
        in_units = uncached * u[0] + cached * u[1] + output * u[4]
        if cache_write:
            in_units += (cache_write - cache_write_1h) * u[2] + cache_write_1h * u[3]
        if reasoning:
            in_units += reasoning * (u[5] - u[4])
        return _SCALEB(in_units, _TO_COST)
    r = terms.rates_for(input_tokens)
    ctx = _EXACT
    total = ctx.add(
        ctx.add(ctx.multiply(uncached, r.input), ctx.multiply(cached, r.cached_input)),
        ctx.add(
            ctx.add(
                ctx.multiply(cache_write - cache_write_1h, r.cache_write),
                ctx.multiply(cache_write_1h, r.cache_write_1h),
            ),
            ctx.add(ctx.multiply(output - reasoning, r.output), ctx.multiply(reasoning, r.reasoning)),
        ),
    )
    return quantize_cost(ctx.divide(total, _PER_MILLION))
