"""Balances in Redis (BALANCE_BACKEND=redis): Lua scripts decide, PostgreSQL records.

Per tenant t: `bal:{t}` (micro-units, == Wallet.balance), `hold:{t}:<request_id>` (idempotency
of a hold), quota cells `q:{t}:...` (hash t, m, ht, hm) and `qk:{t}` (the set of cell keys).

The protocol that keeps Redis == PostgreSQL exactly, including across FLUSHDB, eviction or a
restart (docs/scaling.md, "Balances in Redis"):
1. Every transaction that changes a tenant's wallet, holds or quota usage takes the tenant's
   advisory lock in SHARED mode first, makes its PostgreSQL changes, and mirrors them into the
   keys before it commits; the mirror leaves absent keys absent (never INCR a cold key).
2. Seeding takes the same lock in EXCLUSIVE mode, so it waits for every such transaction in
   flight, then reads PostgreSQL and writes absent keys with SET. A key is therefore either
   seeded before a change (and the change's mirror lands on it) or after the change committed
   (and the seed read includes it) - never both, never neither.
3. A hold runs its script under the shared lock, then records the hold in PostgreSQL in the
   same transaction; if recording fails, it undoes the reservation before the lock is released.
What remains inexact is a transaction that fails to commit after its mirror ran (a lost
connection at COMMIT): the reconciler finds and fixes that with SET under the exclusive lock.
"""

import contextlib
import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from django.db import transaction
from redis.commands.core import Script

from billing import selectors
from billing.money import from_micros
from billing.selectors import CellUsage
from billing.services.balances import keys
from billing.services.balances.base import (
    INSUFFICIENT_BALANCE,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    TOKENS,
    Admission,
    BalanceBackend,
    BalanceUnavailable,
    Decision,
    Drift,
    MirrorDelta,
    Persist,
    PersistMany,
    existing_hold,
    hold_commit_mode,
    lock_tenant,
    lock_tenant_statement,
    reserve_cells,
)
from billing.services.balances.limits import PARALLEL, REQUESTS, LimitState
from billing.services.balances.limits import TOKENS as TOKEN_LIMIT
from billing.services.wallets import wallet_move
from billing.windows import LIFETIME, Cell, window_period
from infra.redis_client import REDIS_FAILURES, RedisClient, connect

logger = logging.getLogger(__name__)

_LUA = Path(__file__).with_name("lua")
_ATTEMPTS = 3  # cold -> seed -> retry; more means Redis is being flushed continuously
# A cell key outlives its window by this much (a hold placed at 23:59 settles after midnight).
_CELL_GRACE = dt.timedelta(days=2)
# A hold key outlives its hold by this much, so the release always finds it.
_HOLD_KEY_GRACE = dt.timedelta(hours=1)
_VERDICTS = {"ok": None, "funds": INSUFFICIENT_BALANCE, "quota": QUOTA_EXCEEDED, "rate": RATE_LIMITED}
_SCRIPTS = ("authorize", "apply", "seed")
_LIMIT_CODES = {REQUESTS: "r", TOKEN_LIMIT: "t", PARALLEL: "p"}


class RedisBackend(BalanceBackend):
    name = "redis"

    def __init__(self, *, url: str, timeout: float, cluster: bool = False) -> None:
        # One server or a Redis Cluster (REDIS_CLUSTER): every script and pipeline here touches
        # one tenant's keys, which share a slot (keys.py), so both run them unchanged.
        self._options: dict[str, Any] = {
            "cluster": cluster,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 30,
            "decode_responses": True,
        }
        self._url = url
        self._client: RedisClient | None = None
        self._scripts: dict[str, Script] = {}

    @property
    def client(self) -> RedisClient:
        """Connected on first use: a cluster client reads the slot map when it is made, and a
        store that is down then must answer 503 like one that fails later, not break the import."""
        if self._client is None:
            client = connect(self._url, **self._options)
            self._scripts = {name: client.register_script((_LUA / f"{name}.lua").read_text()) for name in _SCRIPTS}
            self._client = client
        return self._client

    def _connected_script(self, name: str) -> Script:
        self.client  # noqa: B018 - connects and registers the scripts
        return self._scripts[name]

    def _run(self, name: str, keys_: list[str], args: list[Any]) -> list[Any]:
        try:
            script = self._scripts[name] if self._client is not None else self._connected_script(name)
            # EVALSHA; on NOSCRIPT (a restarted or flushed server) redis-py loads it and retries
            reply: list[Any] = script(keys=keys_, args=args)  # every script here returns an array
            return reply
        except REDIS_FAILURES as exc:
            logger.warning("balance store (Redis) failed: %s: %s", type(exc).__name__, exc)
            raise BalanceUnavailable() from exc

    # --- mirror ---------------------------------------------------------------------------

    def lock(self, tenant_id: int) -> None:
        lock_tenant(tenant_id)

    def lock_statement(self, tenant_id: int) -> tuple[str, list[Any]] | None:
        return lock_tenant_statement(tenant_id)

    def mirror(self, tenant_id: int, delta: MirrorDelta) -> None:
        if delta.is_empty():
            return
        cells = [(cell, d) for cell, d in delta.cells.items() if any(d)]
        keys_ = [keys.balance_key(tenant_id)]
        keys_ += [keys.cell_key(tenant_id, cell) for cell, _ in cells]
        keys_ += [keys.hold_key(tenant_id, request_id) for request_id in delta.release]
        buckets = [(name, d) for name, d in delta.buckets.items() if d]
        keys_ += [name for name, _ in buckets]
        keys_ += [name for name, _ in delta.slots]
        args: list[Any] = [delta.balance, len(cells)]
        for _, d in cells:
            args.extend(d)
        args.append(len(delta.release))
        args.append(len(buckets))
        args.extend(d for _, d in buckets)
        args.append(len(delta.slots))
        args.extend(keys.hold_key(tenant_id, request_id) for _, request_id in delta.slots)
        self._run("apply", keys_, args)

    # --- admission ------------------------------------------------------------------------

    def _keys(self, admission: Admission) -> list[str]:
        t = admission.tenant_id
        hold = keys.hold_key(t, admission.request_id or "-")
        cells = (keys.cell_key(t, cell) for cell in admission.cells)
        return [keys.balance_key(t), hold, *cells, *admission.limit_names()]

    def _args(self, admission: Admission, mode: str) -> list[Any]:
        ttl_ms = int((admission.hold_ttl + _HOLD_KEY_GRACE).total_seconds() * 1000)
        args: list[Any] = [mode, admission.estimate_micros, admission.estimate_tokens, ttl_ms, len(admission.checks)]
        for check in admission.checks:
            metric = "t" if check.metric == TOKENS else "m"
            args.extend([check.cell_index + 1, metric, check.limit, 1 if check.enforce else 0])
        if admission.limits:
            args.append(len(admission.limits))
            for limit in admission.limits:
                args.extend([_LIMIT_CODES[limit.kind], limit.limit, limit.cost])
            args.append(int(admission.hold_ttl.total_seconds() * 1000))
        return args

    def _decision(self, admission: Admission, reply: list[Any]) -> Decision:
        verdict, balance, failed = reply[0], int(reply[1]), int(reply[2])
        values = [int(v) for v in reply[3:]]
        split = 4 * len(admission.checks)
        states = [CellUsage(*values[i : i + 4]) for i in range(0, split, 4)]
        rest = values[split:]
        limits = [
            LimitState(limit, rest[3 * i], rest[3 * i + 1], rest[3 * i + 2]) for i, limit in enumerate(admission.limits)
        ]
        reason = _VERDICTS[verdict]
        return Decision(reason is None, reason, balance, states, failed - 1 if failed else None, limits=limits)

    def check(self, admission: Admission) -> Decision:
        for _ in range(_ATTEMPTS):
            reply = self._run("authorize", self._keys(admission), self._args(admission, "check"))
            if reply[0] != "cold":
                return self._decision(admission, reply)
            self.seed(admission)
        raise BalanceUnavailable("The balance store keeps losing its keys; try again.")

    def reserve(self, admission: Admission, persist: Persist) -> Decision:
        for _ in range(_ATTEMPTS):
            with transaction.atomic():
                lock_tenant(admission.tenant_id)
                reply = self._run("authorize", self._keys(admission), self._args(admission, "hold"))
                if reply[0] not in ("cold", "exists"):
                    decision = self._decision(admission, reply)
                    if not decision.allowed:
                        return decision
                    recorded = self._record(admission, decision, persist)
                    if recorded is not None:
                        return recorded
            if reply[0] == "cold":
                self.seed(admission)
                continue
            return existing_hold(admission)  # "exists", or PostgreSQL already had the request_id
        raise BalanceUnavailable("The balance store keeps losing its keys; try again.")

    def reserve_many(self, admissions: list[Admission], persist: Persist, persist_many: PersistMany) -> list[Decision]:
        """Admit many holds of one tenant with one script call, record the admitted ones with
        one statement (`persist_many`) and one commit (four round trips, for one hold too).

        What the batch cannot settle alone (cold keys, a request_id already held, PostgreSQL
        refusing what Redis admitted) is admitted again one at a time by `reserve`, after the
        batch's transaction has ended."""
        tenant_id = admissions[0].tenant_id
        assert all(admission.tenant_id == tenant_id for admission in admissions), "one tenant per batch"
        decisions: list[Decision | None] = [None] * len(admissions)
        sizes: list[int] = []
        keys_: list[str] = []
        args: list[Any] = []
        for admission in admissions:
            admission_keys, admission_args = self._keys(admission), self._args(admission, "hold")
            sizes += [len(admission_keys), len(admission_args)]
            keys_ += admission_keys
            args += admission_args
        with transaction.atomic():
            lock_tenant(tenant_id)
            replies = self._run("authorize", keys_, ["many", len(admissions), *sizes, *args])
            admitted: list[tuple[int, Decision]] = []
            for index, (admission, reply) in enumerate(zip(admissions, replies, strict=True)):
                if reply[0] in ("cold", "exists"):
                    continue  # decided alone below
                decision = self._decision(admission, reply)
                if decision.allowed:
                    admitted.append((index, decision))
                else:
                    decisions[index] = decision
            if admitted:
                chosen = [admissions[index] for index, _ in admitted]
                undo = MirrorDelta()
                for admission in chosen:
                    self._undo_into(undo, admission)
                hold_commit_mode()
                try:
                    infos = persist_many(chosen)
                except BaseException:
                    with contextlib.suppress(BalanceUnavailable):
                        self.mirror(tenant_id, undo)
                    raise
                if infos is None:
                    # Redis and PostgreSQL disagree somewhere in the batch: undo it all, decide
                    # every request alone (refusals too: they saw the undone holds).
                    self.mirror(tenant_id, undo)
                    transaction.set_rollback(True)
                    decisions = [None] * len(admissions)
                else:
                    for (index, decision), info in zip(admitted, infos, strict=True):
                        decisions[index] = decision.with_hold(admissions[index], info, decision.balance)
        return [
            decision if decision is not None else self.reserve(admission, persist)
            for admission, decision in zip(admissions, decisions, strict=True)
        ]

    def _undo_into(self, undo: MirrorDelta, admission: Admission) -> None:
        """Add to `undo` the counter moves that take back one admitted hold's reservation."""
        undo.balance += admission.estimate_micros
        undo.release.append(admission.request_id or "-")
        for cell in admission.cells:
            undo.add(cell, held_tokens=-admission.estimate_tokens, held_micros=-admission.estimate_micros)
        for limit, name in zip(admission.limits, admission.limit_names(), strict=True):
            if limit.kind == PARALLEL:
                undo.slots.append((name, admission.request_id or "-"))
            else:
                undo.buckets[name] = undo.buckets.get(name, 0) - limit.cost

    def _record(self, admission: Admission, decision: Decision, persist: Persist) -> Decision | None:
        """Record the reserved hold in PostgreSQL (still under the shared lock), or undo it."""
        undo = MirrorDelta()
        self._undo_into(undo, admission)
        hold_commit_mode()
        try:
            # The hold's own rows first; the tenant's shared rows (wallet, then quota cells, the
            # order every writer uses) last, so they stay locked only until the commit.
            info = persist(admission)
            if info is None:
                self.mirror(admission.tenant_id, undo)
                transaction.set_rollback(True)
                return None
            after = wallet_move(
                tenant_id=admission.tenant_id,
                currency=admission.currency,
                delta=-from_micros(admission.estimate_micros),
                floor=Decimal(0),
            )
            if after is None:
                # PostgreSQL, the truth, refuses what Redis admitted: the cache was above it.
                self.mirror(admission.tenant_id, undo)
                balance = selectors.wallet_balance_micros(tenant_id=admission.tenant_id)
                transaction.set_rollback(True)  # the hold row and its entry go too
                logger.warning("balance cache above the ledger", extra={"tenant_id": admission.tenant_id})
                return Decision(False, INSUFFICIENT_BALANCE, balance, decision.states)
            reserve_cells(admission)
        except BaseException:
            with contextlib.suppress(BalanceUnavailable):
                self.mirror(admission.tenant_id, undo)
            raise
        return decision.with_hold(admission, info, decision.balance)

    # --- seeding and reconciling ------------------------------------------------------------

    def _cell_values(self, usage: CellUsage, cell: Cell, tz_name: str) -> list[int]:
        expire_at = 0
        if cell.period != LIFETIME:
            period = window_period(cell.period, cell.start, tz_name)
            assert period is not None
            expire_at = int((period.end + _CELL_GRACE).timestamp())
        return [usage.tokens, usage.micros, usage.held_tokens, usage.held_micros, expire_at]

    def _write(self, *, tenant_id: int, tz_name: str, cells: list[Cell], mode: str, balance: int | None) -> list[Any]:
        usage = selectors.quota_cells_usage(tenant_id=tenant_id, tz_name=tz_name, cells=cells)
        args: list[Any] = [mode, "" if balance is None else balance]
        for cell in cells:
            args.extend(self._cell_values(usage[cell], cell, tz_name))
        keys_ = [keys.balance_key(tenant_id), keys.cell_index_key(tenant_id)]
        keys_ += [keys.cell_key(tenant_id, cell) for cell in cells]
        return self._run("seed", keys_, args)

    def seed(self, admission: Admission) -> None:
        """Write the tenant's absent keys from PostgreSQL (SET, under the exclusive lock)."""
        cells = admission.cells
        wanted = sorted({check.cell_index for check in admission.checks})
        with transaction.atomic():
            lock_tenant(admission.tenant_id, exclusive=True)
            balance = selectors.wallet_balance_micros(tenant_id=admission.tenant_id)
            self._write(
                tenant_id=admission.tenant_id,
                tz_name=admission.tz_name,
                cells=[cells[i] for i in wanted],
                mode="nx",
                balance=balance,
            )
        logger.info("balance keys seeded", extra={"tenant_id": admission.tenant_id, "cells": len(wanted)})

    def drift(self, *, tenant_id: int, tz_name: str, fix: bool) -> list[Drift]:
        found: list[Drift] = []
        with transaction.atomic():
            lock_tenant(tenant_id, exclusive=True)
            try:
                index = keys.cell_index_key(tenant_id)
                # decode_responses=True: members are str, whatever the stubs allow
                members = sorted(cast("set[str]", self.client.smembers(index)))
                pipe = self.client.pipeline(transaction=False)
                pipe.get(keys.balance_key(tenant_id))
                for member in members:
                    pipe.exists(member)
                    pipe.hmget(member, "t", "m", "ht", "hm")
                replies = pipe.execute()
            except REDIS_FAILURES as exc:
                logger.warning("balance store (Redis) failed: %s: %s", type(exc).__name__, exc)
                raise BalanceUnavailable() from exc
            cached_balance, rest = replies[0], replies[1:]
            cached: dict[Cell, list[int]] = {}
            gone: list[str] = []
            for i, member in enumerate(members):
                cell = keys.parse_cell_key(member)
                if not rest[2 * i] or cell is None:
                    gone.append(member)
                    continue
                cached[cell] = [int(v or 0) for v in rest[2 * i + 1]]
            expected_balance = selectors.wallet_balance_micros(tenant_id=tenant_id)
            usage = selectors.quota_cells_usage(tenant_id=tenant_id, tz_name=tz_name, cells=list(cached))
            balance_off = cached_balance is not None and int(cached_balance) != expected_balance
            if balance_off:
                found.append(
                    Drift(tenant_id, keys.balance_key(tenant_id), str(cached_balance), str(expected_balance), fix)
                )
            off_cells = []
            for cell, values in cached.items():
                want = usage[cell]
                expected = [want.tokens, want.micros, want.held_tokens, want.held_micros]
                if values != expected:
                    off_cells.append(cell)
                    key = keys.cell_key(tenant_id, cell)
                    found.append(Drift(tenant_id, key, _show(values), _show(expected), fix))
            if fix and (balance_off or off_cells):
                self._write(
                    tenant_id=tenant_id,
                    tz_name=tz_name,
                    cells=off_cells,
                    mode="set",
                    balance=expected_balance if balance_off else None,
                )
            if gone:
                with contextlib.suppress(*REDIS_FAILURES):
                    self.client.srem(index, *gone)
        return found


def _show(values: list[int]) -> str:
    return "t={} m={} ht={} hm={}".format(*values)
