"""Rating throughput: events priced per second, in process (no database, no HTTP).

Prices a synthetic stream against a price with a cache rate and a context tier, the way ingest
does per event, and prints events/s. By default every event carries a random service tier
(default, priority, flex, batch) whose price row is picked as the price book picks it
(billing.selectors.prices.version_terms: the tier's row, else the version's default row; flex
has none here), and each event is rated twice, as ingest does for a resold price
(billing.rating.rate_with_basis: the price and the cost price it was derived from). `--no-tiers`
puts every event on the default row; `--single` rates the price alone (billing.rating.rate).
Floor 500k/s, goal 1M/s with service tiers and dual rating on (DESIGN.md section 9).
Run: `.venv/bin/python bench/rating.py [--events N] [--no-tiers] [--single]`.
"""

import argparse
import datetime as dt
import os
import random
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("DATABASE_URL", "sqlite://:memory:")
django.setup()

from billing.rating import PriceTerms, rate, rate_with_basis, terms_from_price  # noqa: E402
from billing.selectors.prices import version_terms  # noqa: E402

# A CNY sell price 1.3x over the USD cost price at 7.3 CNY per USD (the cost in CNY: x7.3).
COST_FACTOR, SELL_FACTOR = Decimal("7.3"), Decimal("9.49")
# Each tier's rates relative to the default row's (flex has no row: it pays the default's).
TIER_SCALES = {"default": Decimal(1), "priority": Decimal(2), "batch": Decimal("0.5")}


def _price(pk: int, scale: Decimal) -> SimpleNamespace:
    return SimpleNamespace(
        pk=pk,
        input_per_mtok=Decimal("2.5") * scale,
        output_per_mtok=Decimal("10") * scale,
        cached_input_per_mtok=Decimal("1.25") * scale,
        cache_write_per_mtok=None,
        cache_write_1h_per_mtok=None,
        reasoning_per_mtok=None,
        tier_threshold=200_000,
        tier_input_per_mtok=Decimal("5") * scale,
        tier_output_per_mtok=Decimal("15") * scale,
        tier_cached_input_per_mtok=None,
        tier_cache_write_per_mtok=None,
        tier_cache_write_1h_per_mtok=None,
        max_input_tokens=1_000_000,
        max_output_tokens=None,
    )


def _row(pk: int, scale: Decimal, *, dual: bool) -> PriceTerms:
    cost = terms_from_price(_price(pk + 100, scale * COST_FACTOR)) if dual else None
    return terms_from_price(_price(pk, scale * SELL_FACTOR), cost=cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per pass (default 200,000)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the best is reported (default 3)")
    parser.add_argument("--no-tiers", action="store_true", help="every event on the default tier, no row lookup")
    parser.add_argument("--single", action="store_true", help="rate the price only, without the cost basis")
    args = parser.parse_args()
    if args.events < 1 or args.passes < 1:
        parser.error("--events and --passes must be positive")

    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = since + dt.timedelta(days=1)
    # One version's rows, as the price book holds them.
    rows = [
        (since, {tier: _row(n, scale, dual=not args.single) for n, (tier, scale) in enumerate(TIER_SCALES.items())})
    ]
    tiers = ["default"] if args.no_tiers else ["default", "priority", "flex", "batch"]
    rng = random.Random(20261123)
    events = [
        (n, rng.randint(1, 4_000), n // 3, rng.choice(tiers))
        for n in (rng.randint(1, 300_000) for _ in range(args.events))
    ]
    best = 0.0
    for n in range(args.passes):
        started = time.perf_counter()
        total = Decimal(0)
        for input_tokens, output_tokens, cached, tier in events:
            terms = version_terms(rows, at, tier)
            assert terms is not None
            if args.single:
                total += rate(terms, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached)
            else:
                cost, _basis = rate_with_basis(
                    terms, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached
                )
                total += cost
        elapsed = time.perf_counter() - started
        best = max(best, len(events) / elapsed)
        print(f"pass {n + 1}: {len(events) / elapsed:,.0f} events/s (sum of costs {total})")
    verdict = "goal met" if best >= 1_000_000 else "floor met" if best >= 500_000 else "floor NOT met"
    mode = ("default tier only" if args.no_tiers else "service tiers on") + (", single" if args.single else ", dual")
    print(
        f"rating ({mode}): {best:,.0f} events/s in process, best of {args.passes} -> {verdict} "
        "(floor 500k/s, goal 1M/s)"
    )


if __name__ == "__main__":
    main()
