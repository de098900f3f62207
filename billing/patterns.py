"""Model patterns: an exact model name or a glob (`gpt-4o*`), and which one wins.

The one precedence rule, for prices (billing.selectors.prices.PriceBook) and resale markups
(billing.services.resale): an exact name beats a glob, and a longer glob beats a shorter one.
"""

import fnmatch
from collections.abc import Iterable

GLOB_CHARS = ("*", "?", "[")


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in GLOB_CHARS)


def best_pattern(name: str, patterns: Iterable[str]) -> str | None:
    """The pattern of `patterns` that governs `name`: itself if present, else the longest glob
    matching it (ties: the greater pattern, so the choice never depends on the order given)."""
    best: tuple[int, str] | None = None
    for pattern in patterns:
        if pattern == name:
            return pattern
        if is_glob(pattern) and fnmatch.fnmatchcase(name, pattern):
            candidate = (len(pattern), pattern)
            if best is None or candidate > best:
                best = candidate
    return best[1] if best is not None else None
