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
