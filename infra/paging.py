"""Keyset pages, newest first: no OFFSET and no COUNT, however many rows there are.

A page is ordered descending on a key whose last field is unique (("id",), or ("occurred_at",
"id")); the cursor is the key of the last row shown, and the next page starts strictly after
it. One extra row is read to know whether a next page exists. Imports no app, so every layer
(the audit log, the ledger, the usage explorer) pages the same way.
"""

from typing import Any

from django.db.models import Q, QuerySet


def keyset_page(
    rows: QuerySet, *, key: tuple[str, ...], after: tuple[Any, ...] | None, limit: int
) -> tuple[list[Any], tuple[Any, ...] | None]:
    """At most `limit` rows after the cursor `after` (None: the first page), and the cursor of
    the next page (None on the last page). Rows are model instances or dicts (`.values()`)."""
    if after is not None:
        rows = rows.filter(_before(key, after))
    page = list(rows.order_by(*(f"-{name}" for name in key))[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    last = page[-1]
    return page, tuple(last[name] if isinstance(last, dict) else getattr(last, name) for name in key)


def _before(key: tuple[str, ...], values: tuple[Any, ...]) -> Q:
    """Rows whose key sorts below `values`: (a, b) < (x, y) is a < x, or a = x and b < y."""
    condition = Q()
    for index, name in enumerate(key):
        equal = dict(zip(key[:index], values[:index], strict=True))
        condition |= Q(**equal, **{f"{name}__lt": values[index]})
    return condition
