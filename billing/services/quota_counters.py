"""Settled usage per quota cell (QuotaCounter), kept by the ingest transaction, one upsert a batch."""

from django.db import connection

from billing.models import QuotaCounter
from billing.windows import Cell

_TABLE = QuotaCounter._meta.db_table
_UPSERT_HEAD = f"INSERT INTO {_TABLE} (tenant_id, api_key_ref, period, period_start, tokens, micros) VALUES "  # noqa: S608
_UPSERT_TAIL = (
    " ON CONFLICT (tenant_id, api_key_ref, period, period_start) DO UPDATE SET "
    f"tokens = {_TABLE}.tokens + EXCLUDED.tokens, micros = {_TABLE}.micros + EXCLUDED.micros"
)


def quota_counters_add(*, tenant_id: int, deltas: dict[Cell, tuple[int, int]]) -> None:
    """Add (tokens, micros) to each cell's settled usage: one upsert statement.

    Rows go in a fixed order so that two batches of one tenant lock them in the same order.
    """
    rows = sorted((cell.api_key_ref, cell.period, cell.start, t, m) for cell, (t, m) in deltas.items() if t or m)
    if not rows:
        return
    params: list = []
    for ref, period, start, tokens, micros in rows:
        params += [tenant_id, ref, period, start, tokens, micros]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_HEAD + values + _UPSERT_TAIL, params)
