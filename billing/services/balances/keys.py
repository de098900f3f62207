"""Redis key names. Each carries the tenant's hash tag, so one tenant's keys share a cluster slot."""

import datetime as dt

from billing.windows import DAY, LIFETIME, MONTH, TENANT_SCOPE, Cell

_PERIOD_CODE = {DAY: "d", MONTH: "m", LIFETIME: "l"}
_CODE_PERIOD = {code: period for period, code in _PERIOD_CODE.items()}


def balance_key(tenant_id: int) -> str:
    return f"bal:{{{tenant_id}}}"


def hold_key(tenant_id: int, request_id: str) -> str:
    return f"hold:{{{tenant_id}}}:{request_id}"


def cell_index_key(tenant_id: int) -> str:
    """A set of the tenant's seeded quota cell keys (what the reconciler walks; no SCAN)."""
    return f"qk:{{{tenant_id}}}"


def cell_key(tenant_id: int, cell: Cell) -> str:
    scope = "t" if cell.api_key_ref == TENANT_SCOPE else f"k{cell.api_key_ref}"
    start = "-" if cell.period == LIFETIME else cell.start.isoformat()
    return f"q:{{{tenant_id}}}:{scope}:{_PERIOD_CODE[cell.period]}:{start}"


def parse_cell_key(key: str) -> Cell | None:
    """The cell a key names, or None for anything else."""
    try:
        _, scope, code, start = key.rsplit(":", 3)
        ref = TENANT_SCOPE if scope == "t" else int(scope.removeprefix("k"))
        period = _CODE_PERIOD[code]
        day = dt.date(1970, 1, 1) if period == LIFETIME else dt.date.fromisoformat(start)
    except (ValueError, KeyError):
        return None
    return Cell(ref, period, day)
