"""The balance backend interface: admission (check or hold), the mirror of ledger moves, drift.

Two implementations, chosen by settings.BALANCE_BACKEND (see billing.services.balances):
- db_backend: PostgreSQL alone; a hold is a conditional UPDATE of the wallet row, which also
  serialises one tenant's admissions so the quota read after it sees every earlier hold.
- redis_backend: Lua scripts on per-tenant keys decide; PostgreSQL records (and stays the truth).

Both keep the same ledger: placing a hold appends a `hold` entry and moves the wallet by
-estimate in the same transaction, so sum(ledger) == Wallet.balance == the admissible balance.
"""

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db import connection
from rest_framework import status
from rest_framework.exceptions import APIException

from billing import selectors
from billing.models import Hold, Quota
from billing.money import to_micros
from billing.selectors import CellUsage
from billing.services.balances.limits import LimitState, RateLimit
from billing.services.quota_counters import quota_cells_reserve
from billing.windows import Cell, cells_for
from infra.db import hot_cursor

INSUFFICIENT_BALANCE = "insufficient_balance"
QUOTA_EXCEEDED = "quota_exceeded"
RATE_LIMITED = "rate_limited"
TOKENS, MONEY = Quota.Metric.TOKENS.value, Quota.Metric.MONEY.value

# pg_advisory_xact_lock(LOCK_CLASS, tenant_id): shared by every transaction that changes a
# tenant's money, quota usage or holds AND mirrors it into Redis; exclusive while seeding or
# reconciling that tenant's keys, which therefore see PostgreSQL and Redis in step.
LOCK_CLASS = 0x62616C  # "bal"


class BalanceUnavailable(APIException):
    """The balance store cannot answer (Redis down or failing): 503, the caller may retry.

    The message goes to API clients: never an exception's text (it names hosts and ports);
    the raiser logs that instead.
    """

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self, message: str = "The balance store is unavailable; try again.") -> None:
        self.message = message
        super().__init__(detail={"code": "balance_unavailable", "message": message})


class HoldConflict(APIException):
    """The request_id's hold exists but cannot be returned (closed, or still being placed)."""

    status_code = status.HTTP_409_CONFLICT

    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(detail={"code": code, "message": message})


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    quota_id: int
    cell_index: int  # into Admission.cells: tenant day/month/lifetime, then key day/month/lifetime
    metric: str  # TOKENS | MONEY
    limit: int  # tokens, or ledger micro-units
    enforce: bool  # hard quotas refuse; soft ones are only reported


@dataclass(frozen=True)
class Admission:
    """One request to admit: its estimate and the quotas that apply, already resolved."""

    tenant_id: int
    api_key_id: int
    tz_name: str
    currency: str
    model: str
    estimate_micros: int  # (estimated input + max output tokens) at the model's price, rounded up
    estimate_tokens: int
    checks: tuple[QuotaCheck, ...]
    now: dt.datetime
    hold_ttl: dt.timedelta
    request_id: str | None = None
    limits: tuple[RateLimit, ...] = ()  # requests, tokens and parallel slots (limits.py)

    def limit_names(self) -> list[str]:
        return [limit.name(self.tenant_id, self.api_key_id) for limit in self.limits]

    @property
    def cells(self) -> list[Cell]:
        return cells_for(self.now, self.tz_name, self.api_key_id)

    @property
    def expires_at(self) -> dt.datetime:
        return self.now + self.hold_ttl


@dataclass(frozen=True, slots=True)
class HoldInfo:
    id: int
    request_id: str
    amount_micros: int
    expires_at: dt.datetime
    created: bool  # False: an earlier call with this request_id placed it


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str | None  # INSUFFICIENT_BALANCE | QUOTA_EXCEEDED
    balance: int  # micro-units; after this request's hold when one was placed
    states: list[CellUsage]  # one per Admission.checks entry, including this request's hold
    failed: int | None = None  # index into Admission.checks (or .limits, when rate limited) that refused
    hold: HoldInfo | None = None
    limits: list[LimitState] = field(default_factory=list)  # one per Admission.limits entry

    @property
    def retry_after_ms(self) -> int:
        return max((state.retry_after_ms for state in self.limits), default=0)

    def with_hold(self, admission: Admission, info: HoldInfo, balance_after: int) -> "Decision":
        tokens, micros = admission.estimate_tokens, admission.estimate_micros
        states = [
            replace(s, held_tokens=s.held_tokens + tokens, held_micros=s.held_micros + micros) for s in self.states
        ]
        return replace(self, balance=balance_after, states=states, hold=info)


@dataclass
class MirrorDelta:
    """What one transaction changed, for the hot counters: balance, cells, closed holds."""

    balance: int = 0  # micro-units
    cells: dict[Cell, tuple[int, int, int, int]] = field(default_factory=dict)  # d tokens, micros, held t, held m
    release: list[str] = field(default_factory=list)  # request_ids whose hold keys are dropped
    # Rate limits (limits.py): token deltas for token buckets, and (slot set, request_id) of
    # parallel slots that settled holds free.
    buckets: dict[str, int] = field(default_factory=dict)
    slots: list[tuple[str, str]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return (
            not self.balance
            and not self.release
            and not any(self.buckets.values())
            and not self.slots
            and not any(any(d) for d in self.cells.values())
        )

    def negated(self) -> "MirrorDelta":
        """The counter moves that undo this one (closed holds and their slots are not reopened)."""
        return MirrorDelta(
            balance=-self.balance,
            cells={cell: (-d[0], -d[1], -d[2], -d[3]) for cell, d in self.cells.items()},
            release=[],
            buckets={name: -delta for name, delta in self.buckets.items()},
        )

    def add(self, cell: Cell, tokens: int = 0, micros: int = 0, held_tokens: int = 0, held_micros: int = 0) -> None:
        t, m, ht, hm = self.cells.get(cell, (0, 0, 0, 0))
        self.cells[cell] = (t + tokens, m + micros, ht + held_tokens, hm + held_micros)


@dataclass(frozen=True)
class Drift:
    tenant_id: int
    key: str
    cached: str
    expected: str
    fixed: bool


# persist(admission) -> HoldInfo, or None when the request_id already has a hold row.
Persist = Callable[[Admission], HoldInfo | None]
# persist_many(admissions of one tenant) -> their HoldInfo in order, or None: record them one by one.
PersistMany = Callable[[list[Admission]], list[HoldInfo] | None]


class BalanceBackend(ABC):
    name: str

    @abstractmethod
    def lock(self, tenant_id: int) -> None:
        """Call inside the transaction, before changing a tenant's wallet, holds or quota usage."""

    def lock_statement(self, tenant_id: int) -> tuple[str, list[Any]] | None:
        """`lock` as a SELECT for a caller's own statement to run first (a CTE), or None: no lock.

        Saves a statement on hot paths; the caller must make the lock run before its writes.
        """
        return None

    @abstractmethod
    def mirror(self, tenant_id: int, delta: MirrorDelta) -> None:
        """Call after those changes, in the same transaction: mirrors them into the hot counters."""

    @abstractmethod
    def check(self, admission: Admission) -> Decision:
        """Would the request be admitted now? Reserves nothing."""

    @abstractmethod
    def reserve(self, admission: Admission, persist: Persist) -> Decision:
        """Admit and hold the estimate, or refuse. Idempotent per request_id."""

    def reserve_many(self, admissions: list[Admission], persist: Persist, persist_many: PersistMany) -> list[Decision]:
        """`reserve` for each of many requests of one tenant, in order (a later one sees the
        earlier ones' holds). A backend may admit and record them together (a group commit)."""
        return [self.reserve(admission, persist) for admission in admissions]

    @abstractmethod
    def drift(self, *, tenant_id: int, tz_name: str, fix: bool) -> list[Drift]:
        """Compare the hot counters with PostgreSQL (under the tenant's lock); fix with SET."""


def lock_tenant_statement(tenant_id: int) -> tuple[str, list[Any]]:
    """The SELECT that takes the tenant's balance lock in shared mode, and its parameters."""
    assert 0 < tenant_id < 2**31
    return "SELECT pg_advisory_xact_lock_shared(%s::int4, %s::int4)", [LOCK_CLASS, tenant_id]


def lock_tenant(tenant_id: int, *, exclusive: bool = False) -> None:
    """Take the tenant's balance lock until the transaction ends (PostgreSQL advisory lock)."""
    if connection.vendor != "postgresql":
        return  # the Redis backend requires PostgreSQL (settings); the database one needs no lock
    assert connection.in_atomic_block, "the balance lock lives as long as a transaction"
    assert 0 < tenant_id < 2**31
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with hot_cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s::int4, %s::int4)", [LOCK_CLASS, tenant_id])


def hold_commit_mode() -> None:
    """With HOLD_SYNCHRONOUS_COMMIT off, this hold's COMMIT does not wait for the WAL flush.

    The wallet row stays locked until COMMIT returns, so the flush bounds one tenant's holds per
    second; without it a PostgreSQL crash can lose the last moments of holds (whole transactions,
    in order), and only under-reserve for requests then in flight (docs/scaling.md).
    """
    if not settings.HOLD_SYNCHRONOUS_COMMIT and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('synchronous_commit', 'off', true)")


def decide(admission: Admission, balance: int, states: list[CellUsage]) -> Decision:
    """The admission rule both backends apply (the Lua script mirrors it)."""
    if balance < admission.estimate_micros:
        return Decision(False, INSUFFICIENT_BALANCE, balance, states)
    for index, (check, state) in enumerate(zip(admission.checks, states, strict=True)):
        if not check.enforce:
            continue
        if check.metric == TOKENS:
            used, wanted = state.tokens + state.held_tokens, admission.estimate_tokens
        else:
            used, wanted = state.micros + state.held_micros, admission.estimate_micros
        if used + wanted > check.limit:
            return Decision(False, QUOTA_EXCEEDED, balance, states, failed=index)
    return Decision(True, None, balance, states)


def reserve_cells(admission: Admission) -> None:
    quota_cells_reserve(
        tenant_id=admission.tenant_id,
        moment=admission.now,
        tz_name=admission.tz_name,
        api_key_id=admission.api_key_id,
        tokens=admission.estimate_tokens,
        micros=admission.estimate_micros,
    )


def pg_states(admission: Admission) -> list[CellUsage]:
    if not admission.checks:
        return []
    cells = admission.cells
    usage = selectors.quota_cells_usage(
        tenant_id=admission.tenant_id, tz_name=admission.tz_name, cells=[cells[c.cell_index] for c in admission.checks]
    )
    return [usage[cells[c.cell_index]] for c in admission.checks]


def existing_hold(admission: Admission) -> Decision:
    """The answer to a repeated hold for the same request_id: the hold it already has."""
    assert admission.request_id is not None
    hold = selectors.hold_by_request(tenant_id=admission.tenant_id, request_id=admission.request_id)
    if hold is None:
        raise HoldConflict("hold_pending", "A hold for this request_id is being placed by another call; retry.")
    if hold.status != Hold.Status.OPEN:
        raise HoldConflict(
            "request_id_used", f"request_id {admission.request_id!r} already had a hold, now {hold.status}."
        )
    info = HoldInfo(hold.pk, hold.request_id, to_micros(hold.amount), hold.expires_at, created=False)
    balance = selectors.wallet_balance_micros(tenant_id=admission.tenant_id)
    return Decision(True, None, balance, pg_states(admission), hold=info)
