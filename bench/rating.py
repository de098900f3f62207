"""Rating throughput: events priced per second, in process (no database, no HTTP).

Prices a synthetic stream against a price with a cache rate and a context tier, the way ingest
does per event, and prints events/s. By default each event is rated twice, as ingest does for
a resold price (billing.rating.rate_with_basis: the price and the cost price it was derived
from); `--single` rates the price alone (billing.rating.rate). Floor 100k/s (500k/s with dual
rating), goal 1M/s (DESIGN.md section 9). Run: `.venv/bin/python bench/rating.py [--events N]`.
"""

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from billing.rating import rate, rate_with_basis, terms_from_price


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per pass (default 200,000)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the best is reported (default 3)")
    parser.add_argument("--single", action="store_true", help="rate the price only, without the cost basis")
    args = parser.parse_args()
    if args.events < 1 or args.passes < 1:
        parser.error("--events and --passes must be positive")

    rates = {
        "input_per_mtok": Decimal("2.5"),
        "output_per_mtok": Decimal("10"),
        "cached_input_per_mtok": Decimal("1.25"),
        "cache_write_per_mtok": None,
        "tier_threshold": 200_000,
        "tier_input_per_mtok": Decimal("5"),
        "tier_output_per_mtok": Decimal("15"),
        "tier_cached_input_per_mtok": None,
        "tier_cache_write_per_mtok": None,
    }
    # A CNY sell price 1.3x over the USD cost price at 7.3 CNY per USD (the cost in CNY: x7.3).
    factor = {"cost": Decimal("7.3"), "sell": Decimal("9.49")}
    cost_terms, terms = (
        terms_from_price(
            SimpleNamespace(pk=pk, **{k: v * factor[side] if isinstance(v, Decimal) else v for k, v in rates.items()})
        )
        for pk, side in ((1, "cost"), (2, "sell"))
    )
    if not args.single:
        terms = terms_from_price(
            SimpleNamespace(pk=2, **{k: v * factor["sell"] if isinstance(v, Decimal) else v for k, v in rates.items()}),
            cost=cost_terms,
        )
    rng = random.Random(20261123)
    events = [(n, rng.randint(1, 4_000), n // 3) for n in (rng.randint(1, 300_000) for _ in range(args.events))]
    best = 0.0
    for n in range(args.passes):
        started = time.perf_counter()
        total = Decimal(0)
        if args.single:
            for input_tokens, output_tokens, cached in events:
                total += rate(terms, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached)
        else:
            for input_tokens, output_tokens, cached in events:
                cost, _basis = rate_with_basis(
                    terms, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached
                )
                total += cost
        elapsed = time.perf_counter() - started
        best = max(best, len(events) / elapsed)
        print(f"pass {n + 1}: {len(events) / elapsed:,.0f} events/s (sum of costs {total})")
    floor = 100_000 if args.single else 500_000
    verdict = "goal met" if best >= 1_000_000 else "floor met" if best >= floor else "floor NOT met"
    mode = "single" if args.single else "dual (price and cost basis)"
    print(
        f"rating, {mode}: {best:,.0f} events/s in process, best of {args.passes} -> {verdict} "
        f"(floor {floor // 1000}k/s, goal 1M/s)"
    )


if __name__ == "__main__":
    main()
