"""Balances on the database alone (the embedded default, or BALANCE_BACKEND=db).

A hold is `UPDATE wallet SET balance = balance - x WHERE balance - x >= 0` (wallet_move with a
floor). The UPDATE takes the wallet row lock, so one tenant's holds run one at a time from
there to commit: the quota read that follows sees every hold committed before it, and no two
holds can both spend the same money. A check (no hold) reads without locking.
"""

from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing import selectors
from billing.money import from_micros, to_micros
from billing.services.balances.base import (
    INSUFFICIENT_BALANCE,
    RATE_LIMITED,
    Admission,
    BalanceBackend,
    Decision,
    Drift,
    MirrorDelta,
    Persist,
    decide,
    existing_hold,
    hold_commit_mode,
    pg_states,
    reserve_cells,
)
from billing.services.balances.db_limits import db_buckets_correct, db_limits_take, rate_state_commit_mode
from billing.services.wallets import wallet_move


class DatabaseBackend(BalanceBackend):
    name = "db"

    def lock(self, tenant_id: int) -> None:
        return None  # the wallet row lock serialises what needs serialising

    def mirror(self, tenant_id: int, delta: MirrorDelta) -> None:
        # Nothing cached; only settlement's token-bucket corrections have rows to move (a
        # freed parallel slot is the hold row itself, closed by the caller).
        if delta.buckets:
            db_buckets_correct(delta.buckets, timezone.now())

    def check(self, admission: Admission) -> Decision:
        balance = selectors.wallet_balance_micros(tenant_id=admission.tenant_id)
        decision = decide(admission, balance, pg_states(admission))
        if not decision.allowed or not admission.limits:
            return decision
        with transaction.atomic():
            # This transaction writes rate-limit buckets only, never money: its COMMIT need not
            # wait for the WAL flush (a crash may forget the last moments of rate, which only
            # forgives), and one tenant's checks no longer queue behind each flush.
            rate_state_commit_mode()
            return self._limited(decision, db_limits_take(admission, admission.now))

    def reserve(self, admission: Admission, persist: Persist) -> Decision:
        estimate = from_micros(admission.estimate_micros)
        with transaction.atomic():
            hold_commit_mode()
            after = wallet_move(
                tenant_id=admission.tenant_id, currency=admission.currency, delta=-estimate, floor=Decimal(0)
            )
            if after is None:
                balance = selectors.wallet_balance_micros(tenant_id=admission.tenant_id)
                return Decision(False, INSUFFICIENT_BALANCE, balance, pg_states(admission))
            # From here to commit this tenant's other holds wait on the wallet row.
            decision = decide(admission, to_micros(after) + admission.estimate_micros, pg_states(admission))
            if decision.allowed and admission.limits:
                decision = self._limited(decision, db_limits_take(admission, admission.now))
            if not decision.allowed:
                transaction.set_rollback(True)
                return decision
            info = persist(admission)
            if info is not None:
                reserve_cells(admission)
                return decision.with_hold(admission, info, to_micros(after))
            transaction.set_rollback(True)  # the request_id already has a hold
        return existing_hold(admission)

    def _limited(self, decision: Decision, states: list[Any]) -> Decision:
        refused = next((i for i, state in enumerate(states) if state.retry_after_ms), None)
        if refused is None:
            return replace(decision, limits=states)
        return replace(decision, allowed=False, reason=RATE_LIMITED, failed=refused, limits=states)

    def drift(self, *, tenant_id: int, tz_name: str, fix: bool) -> list[Drift]:
        return []  # no cache to drift
