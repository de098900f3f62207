"""Reads of dashboards and reports on a PostgreSQL read replica (DATABASE_REPLICA_URL).

With a replica configured, the database alias "replica" names it and `PrimaryReplicaRouter`
(settings.DATABASE_ROUTERS) sends a read there only when the code asked for it: inside
`replica_reads()` (or a view decorated with `on_replica`, or a streamed body wrapped with
`replica_iter`). Everything else, and every write, stays on the primary ("default"):

- what feeds a write or a money decision: authorize and the balance API, ingest and its price
  books, holds, the reconciler, rollups, alert evaluation, invoicing, top-ups;
- who may do what: API key and service token lookups, sessions, memberships (a revoked key
  or a removed member loses access at once, not after the replica catches up);
- anything inside a transaction on the primary (it reads its own writes).

A replica lags the primary (streaming replication: usually milliseconds, seconds under load,
more while a long query on the replica holds replay back): a dashboard may miss the last
events, never shows what was not committed, and its next load catches up (docs/scaling.md).
Without DATABASE_REPLICA_URL the router is not installed and every read is on the primary.

This module imports no app, so every layer may use it (docs/architecture.md).
"""

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)


@contextmanager
def replica_reads() -> Iterator[None]:
    """Reads inside may go to the replica (when one is configured and no transaction is open)."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def on_replica(view: Callable[P, R]) -> Callable[P, R]:
    """A view whose reads may go to the replica. Put it inside the access check (the decorator
    that resolves the user's membership runs first, on the primary)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with replica_reads():
            return view(*args, **kwargs)

    return wrapper


def replica_iter(items: Iterable[T]) -> Iterator[T]:
    """A streamed body (CSV) is produced after its view returned: keep it on the replica."""
    iterator = iter(items)
    while True:
        with replica_reads():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def replica_configured() -> bool:
    return bool(getattr(settings, "DATABASE_REPLICA_URL", ""))


class PrimaryReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if not _replica_reads.get() or not replica_configured():
            return None  # the primary
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return None  # a transaction on the primary reads what it wrote
        return REPLICA

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS  # never the replica (it is read-only anyway)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the replica holds the primary's rows: the same database

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS  # the replica gets the schema by replication
