"""Database helpers for the hot paths (ingest, authorize): fewer round trips, less parsing.

A single-event ingest is a handful of short statements, so what each statement costs besides
its work (a round trip, client-side quoting, the server parsing and planning it) is most of
the request. Both helpers are no-ops on SQLite (the embedded default).
"""

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model


@contextmanager
def pipelined_atomic() -> Iterator[None]:
    """`transaction.atomic()` in pipeline mode: the block's last writes travel with COMMIT.

    Statements whose results nobody reads are only sent; COMMIT collects their answers, so an
    error in one surfaces there, as the commit's failure (the transaction rolls back). Inside
    an outer transaction the block is a savepoint, whose release settles nothing: the block then
    waits for its answers before it ends, so errors surface inside it as usual.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            yield
        return
    if connection.in_atomic_block:
        # Errors the pipeline reports itself are psycopg's: wrap them as Django's, like a query's.
        with connection.wrap_database_errors, connection.connection.pipeline() as pipeline, transaction.atomic():
            yield
            pipeline.sync()
        return
    # A round trip saved is most of a single-event ingest's latency, and psycopg's pipeline
    # spends three on a Django transaction: it syncs on BEGIN, on COMMIT and whenever autocommit
    # is switched (atomic() switches it on entry and exit). So the psycopg connection stays in
    # autocommit while the block writes BEGIN and COMMIT as plain statements: BEGIN, the block's
    # statements and COMMIT then travel together and the pipeline's closing sync collects every
    # answer. atomic() still owns the block (savepoints, on_commit hooks, rollback on error);
    # its own commit finds the connection idle and sends nothing.
    with transaction.atomic(), connection.wrap_database_errors:
        raw = connection.connection
        raw.autocommit = True  # outside the pipeline: no round trip
        try:
            with raw.pipeline():
                raw.execute("BEGIN")
                yield
                raw.execute("ROLLBACK" if connection.needs_rollback else "COMMIT")
        finally:
            if not (raw.closed or raw.broken):  # a lost connection: atomic() closes it
                if raw.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.execute("ROLLBACK")  # the block or its COMMIT failed: end it here
                raw.autocommit = False  # as atomic() left it


M = TypeVar("M", bound=Model)


def hot_cursor() -> CursorWrapper:
    """A Django cursor that binds parameters on the server, for fixed hand-written statements.

    Parameters travel apart from the SQL (nothing to quote on the client), and psycopg prepares
    a statement once it has run DB_PREPARE_THRESHOLD times on a connection, after which the
    server skips parsing and planning it. Django's ORM keeps its client-side binding.
    """
    db = connections[DEFAULT_DB_ALIAS]  # one lookup: each `connection.x` is a thread-local one
    if db.vendor != "postgresql" or db.queries_logged:
        # Logging queries (DEBUG, tests that count them) wants the SQL with its values in it,
        # which only client-side binding produces.
        return db.cursor()
    db.ensure_connection()
    db.validate_thread_sharing()
    return db.make_cursor(psycopg.Cursor(db.connection))


def instance_from_row(model: type[M], fields: "Sequence[Field[Any, Any]]", values: Sequence[Any]) -> M:
    """A model instance from a hand-written query's row, converted as the ORM would convert it.

    The backend's converters matter: SQLite returns datetimes as naive strings and decimals as
    floats that only Django's converters turn into aware datetimes and Decimals.
    """
    db = connections[DEFAULT_DB_ALIAS]
    attnames, converters = _conversion(model, tuple(fields), db.vendor)
    if converters:
        values = list(values)
        for index, column, chain in converters:
            for converter in chain:
                values[index] = converter(values[index], column, db)
    return model.from_db(db.alias, attnames, values)


@functools.cache
def _conversion(model, fields: tuple, vendor: str) -> tuple[list[str], tuple]:
    """The fields' attnames and, for those that have any, (index, column, converters) on this backend."""
    db = connections[DEFAULT_DB_ALIAS]
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        chain = tuple(db.ops.get_db_converters(column) + field.get_db_converters(db))
        if chain:
            converters.append((index, column, chain))
    return [field.attname for field in fields], tuple(converters)
