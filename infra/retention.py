"""Deleting old rows of a retention policy without one long transaction (docs/operations.md "Retention").

Each batch is its own short transaction over the primary keys it picked, so a prune of millions
of rows never holds locks for long and a prune stopped halfway simply continues next time.
"""

from typing import Any

from django.db import transaction
from django.db.models import Model, QuerySet


def delete_in_batches(rows: "QuerySet[Any]", *, batch: int = 5_000) -> int:
    """Delete every row of `rows` in batches of `batch` primary keys; return how many went."""
    model: type[Model] = rows.model
    deleted = 0
    while True:
        with transaction.atomic():
            keys = list(rows.order_by("pk").values_list("pk", flat=True)[:batch])
            if not keys:
                return deleted
            deleted += model._default_manager.filter(pk__in=keys).delete()[1].get(model._meta.label, 0)
