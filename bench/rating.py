"""Rating throughput: events priced per second, in process (no database, no HTTP).

Prices a synthetic stream with billing.rating.rate against a price with a cache rate and a
context tier, the way ingest does per event, and prints events/s. With service tiers on (the
default), each event carries a random tier (default, priority, flex, batch) and its price row is
picked as the price book picks it (billing.selectors.prices.version_terms: the tier's row, else
the version's default row; flex has none here). Floor 500k/s, goal 1M/s.
Run: `.venv/bin/python bench/rating.py [--events N] [--no-tiers]`.
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

from billing.rating import rate, terms_from_price  # noqa: E402
from billing.selectors.prices import version_terms  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per pass (default 200,000)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the best is reported (default 3)")
    parser.add_argument("--no-tiers", action="store_true", help="every event on the default tier, no row lookup")
    args = parser.parse_args()
    if args.events < 1 or args.passes < 1:
        parser.error("--events and --passes must be positive")

    def price(pk: int, scale: Decimal) -> SimpleNamespace:
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

    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # One version's rows, as the price book holds them: default, priority, batch (no flex row).
    rows = [
        (
            since,
            {
                "default": terms_from_price(price(1, Decimal(1))),
                "priority": terms_from_price(price(2, Decimal(2))),
                "batch": terms_from_price(price(3, Decimal("0.5"))),
            },
        )
    ]
    at = since + dt.timedelta(days=1)
    tiers = ["default"] if args.no_tiers else ["default", "priority", "flex", "batch"]
    rng = random.Random(20261123)
    events = [
        (n, rng.randint(1, 4_000), n // 3, rng.choice(tiers))
        for n in (rng.randint(1, 300_000) for _ in range(args.events))
    ]
    default_terms = rows[0][1]["default"]
    best = 0.0
    for n in range(args.passes):
        started = time.perf_counter()
        total = Decimal(0)
        for input_tokens, output_tokens, cached, tier in events:
            terms = default_terms if args.no_tiers else version_terms(rows, at, tier)
            assert terms is not None
            total += rate(terms, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached)
        elapsed = time.perf_counter() - started
        best = max(best, len(events) / elapsed)
        print(f"pass {n + 1}: {len(events) / elapsed:,.0f} events/s (sum of costs {total})")
    verdict = "goal met" if best >= 1_000_000 else "floor met" if best >= 500_000 else "floor NOT met"
    mode = "default tier only" if args.no_tiers else "service tiers on"
    print(
        f"rating ({mode}): {best:,.0f} events/s in process, best of {args.passes} -> {verdict} "
        "(floor 500k/s, goal 1M/s)"
    )


if __name__ == "__main__":
    main()
