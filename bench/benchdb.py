"""Database set-up shared by the benchmarks: each one works in a database of its own."""

import os
import urllib.parse


def database_urls(name: str) -> tuple[str, str]:
    """(maintenance URL, bench URL) on the PostgreSQL server that DATABASE_URL names."""
    base = os.environ.get("DATABASE_URL", "")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise SystemExit(f"DATABASE_URL must name a PostgreSQL server (got {base!r}); try `make bench`.")
    return parts._replace(path="/postgres").geturl(), parts._replace(path=f"/{name}").geturl()


def conninfo(url: str) -> str:
    """A URL psycopg accepts (Django's postgres:// alias spelled postgresql://)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def database_exists(maintenance_url: str, name: str) -> bool:
    import psycopg  # noqa: PLC0415 - only the benches need it at import time

    with psycopg.connect(conninfo(maintenance_url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def recreate_database(maintenance_url: str, name: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(conninfo(maintenance_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_secondary_indexes(cursor) -> list[str]:
    """Drop the usage table's indexes and unique constraints but the primary key; return the
    statements that put them back (bulk loading then sorting once beats millions of random
    index inserts)."""
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname, pg_get_constraintdef(c.oid)
        FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = 'metering_usageevent'::regclass AND NOT i.indisprimary
        """
    )
    rebuild = []
    for index_name, index_def, constraint, constraint_def in cursor.fetchall():
        if constraint:
            cursor.execute(f'ALTER TABLE metering_usageevent DROP CONSTRAINT "{constraint}"')
            rebuild.append(f'ALTER TABLE metering_usageevent ADD CONSTRAINT "{constraint}" {constraint_def}')
        else:
            cursor.execute(f"DROP INDEX {index_name}")
            # A partitioned table's index is defined `ON ONLY` the parent: re-created so, it would
            # stay invalid and the partitions would have none. Without ONLY it builds on each.
            rebuild.append(index_def.replace(" ON ONLY ", " ON ", 1))
    return rebuild
