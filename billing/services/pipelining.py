"""Pipelined statements: several round trips' worth of SQL for one wait (PostgreSQL).

Inside `pipelined()`, psycopg sends each statement without waiting for its answer and
collects the answers when a result is read (or the block ends). Statements that need no
result before the next one is written (a lock, then an insert that returns rows) then cost
one round trip instead of one each; errors still surface, at the read. A no-op elsewhere.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def pipelined() -> Iterator[None]:
    if connection.vendor != "postgresql":
        yield
        return
    connection.ensure_connection()
    with connection.connection.pipeline():
        yield
