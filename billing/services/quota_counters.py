"""Quota cells (QuotaCounter): settled usage and open-hold reservations, one upsert per change.

Ingest adds a batch's usage and takes back the reservations of the holds it settles; placing
a hold adds its reservation; releasing one takes it back. Each in the transaction that makes
the change, so a cell always equals what the events and the open holds say.
"""

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
from django.db import connection

from billing.models import QuotaCounter
from billing.windows import Cell, cells_for

_TABLE = QuotaCounter._meta.db_table
_COLUMNS = "tenant_id, api_key_ref, period, period_start, tokens, micros, held_tokens, held_micros"
_UPSERT_HEAD = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES "  # noqa: S608
_UPSERT_TAIL = " ON CONFLICT (tenant_id, api_key_ref, period, period_start) DO UPDATE SET " + ", ".join(
    f"{column} = {_TABLE}.{column} + EXCLUDED.{column}" for column in ("tokens", "micros", "held_tokens", "held_micros")
)

Deltas = dict[Cell, tuple[int, int, int, int]]  # tokens, micros, held tokens, held micros


def quota_counters_add(*, tenant_id: int, deltas: Mapping[Cell, tuple[int, ...]]) -> None:
    """Add the deltas to each cell: one upsert statement.

    A delta is (tokens, micros[, held tokens, held micros]): settled usage alone may omit the
    held part. Rows go in a fixed order so that two transactions of one tenant lock them in the
    same order.
    """
    rows = quota_rows(deltas)
    if not rows:
        return
    params: list[Any] = []
    for row in rows:
        params += [tenant_id, *row]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_HEAD + values + _UPSERT_TAIL, params)


_CELL_SUMS = ("tokens", "micros", "held_tokens", "held_micros")
_CELL_FIELDS = ("api_key_ref", "period", "period_start", *_CELL_SUMS)


def cells_upsert_cte(*, when: str) -> str:
    """`q AS (...)` for a one-statement money move: adds the deltas of the JSON array
    `%(cells)s` (quota_cells_json) to the cells of tenant `%(tenant)s`, when `when` holds (a
    condition on the statement's wallet CTE, so the wallet row is locked first)."""
    return (
        f"q AS (INSERT INTO {_TABLE} AS q (tenant_id, api_key_ref, period, period_start, {', '.join(_CELL_SUMS)}) "  # noqa: S608
        "SELECT %(tenant)s, r.* FROM json_to_recordset(%(cells)s::json) AS r(api_key_ref bigint, period varchar, "
        f"period_start date, tokens bigint, micros bigint, held_tokens bigint, held_micros bigint) WHERE {when} "
        "ON CONFLICT (tenant_id, api_key_ref, period, period_start) DO UPDATE SET "
        + ", ".join(f"{column} = q.{column} + EXCLUDED.{column}" for column in _CELL_SUMS)
        + ")"
    )


def quota_cells_json(rows: list[tuple[Any, ...]]) -> str:
    """quota_rows' rows as the JSON array that cells_upsert_cte reads."""
    return orjson.dumps([dict(zip(_CELL_FIELDS, row, strict=True)) for row in rows]).decode()


def quota_rows(deltas: Mapping[Cell, tuple[int, ...]]) -> list[tuple[Any, ...]]:
    """(api_key_ref, period, start, tokens, micros, held tokens, held micros) per changed cell, in lock order."""
    return sorted(
        (cell.api_key_ref, cell.period, cell.start, *d, *(0,) * (4 - len(d))) for cell, d in deltas.items() if any(d)
    )


def reservation_deltas(
    deltas: Deltas, *, moment: dt.datetime, tz_name: str, api_key_id: int, tokens: int, micros: int, sign: int
) -> None:
    """Add (sign=+1) or take back (-1) a hold's reservation in the six cells of its created_at."""
    for cell in cells_for(moment, tz_name, api_key_id):
        t, m, ht, hm = deltas.get(cell, (0, 0, 0, 0))
        deltas[cell] = (t, m, ht + sign * tokens, hm + sign * micros)


def quota_cells_reserve(
    *, tenant_id: int, moment: dt.datetime, tz_name: str, api_key_id: int, tokens: int, micros: int
) -> None:
    """Add a new hold's reservation to the six cells of its created_at: one upsert."""
    deltas: Deltas = {}
    reservation_deltas(
        deltas, moment=moment, tz_name=tz_name, api_key_id=api_key_id, tokens=tokens, micros=micros, sign=+1
    )
    quota_counters_add(tenant_id=tenant_id, deltas=deltas)
