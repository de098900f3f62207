"""Read replica routing (DATABASE_REPLICA_URL, infra/db_routing.py) on a real streaming replica.

`streaming_replica` makes a private PostgreSQL 15 primary (initdb, loopback port) and a hot
standby of it (`pg_basebackup -R`, a second `postgres` on another port), both run as the
`postgres` OS user when the suite runs as root (the server refuses root), and copies the test
database's schema onto the primary. The portal then runs in a process of its own
(replica_probe.py) with DATABASE_URL on the primary and DATABASE_REPLICA_URL on the standby.
Without the PostgreSQL server binaries the test skips, saying so.
"""

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

from infra.db_routing import REPLICA, PrimaryReplicaRouter, replica_iter, replica_reads
from metering.models import UsageEvent
from tests.billing.test_redis_cluster import settings_error

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "tokenbill"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostgres:
    """A primary and its streaming standby in a temporary folder; stopped and removed after."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tokenbill-replica-"))
        self.primary_port, self.replica_port = _free_port(), _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def run(self, *command: str, timeout: float = 60) -> str:
        argv = [str(PG_BIN / command[0]), *command[1:]]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        return done.stdout

    def url(self, port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{DATABASE}"

    def _options(self, port: int) -> str:
        return f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c fsync=off"

    def start(self, schema_from: dict) -> None:
        primary, standby = self.root / "primary", self.root / "standby"
        self.run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.run("pg_ctl", "-D", str(primary), "-o", self._options(self.primary_port), "-l", str(self.root / "p.log"),
                 "-w", "start")  # fmt: skip
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                 "-D", str(standby), "-R", "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
        self.run("pg_ctl", "-D", str(standby), "-o", self._options(self.replica_port), "-l", str(self.root / "s.log"),
                 "-w", "start")  # fmt: skip
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres", DATABASE)
        dump = subprocess.run(
            [str(PG_BIN / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", "-h", schema_from["host"],
             "-p", str(schema_from["port"]), "-U", schema_from["user"], schema_from["dbname"]],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        subprocess.run(
            [str(PG_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.primary_port),
             "-U", "postgres", "-d", DATABASE],
            input=dump.stdout, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._replica_has_schema():
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not replay the schema in 30 s")
            time.sleep(0.05)

    def _replica_has_schema(self) -> bool:
        done = subprocess.run(
            [str(PG_BIN / "psql"), "-Atq", "-h", "127.0.0.1", "-p", str(self.replica_port), "-U", "postgres",
             "-d", DATABASE, "-c", "SELECT to_regclass('metering_usageevent') IS NOT NULL"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.stdout.strip() == "t"

    def stop(self) -> None:
        for folder in ("standby", "primary"):
            if (self.root / folder / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.run("pg_ctl", "-D", str(self.root / folder), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _missing() -> str | None:
    needed = ["initdb", "pg_ctl", "pg_basebackup", "pg_dump", "psql", "createdb", "postgres"]
    absent = [name for name in needed if not (PG_BIN / name).exists()]
    if absent:
        return f"PostgreSQL server binaries not found in {PG_BIN} ({', '.join(absent)}); set PG_BIN"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres OS user to run the private servers as"
    return None


@pytest.fixture
def streaming_replica(django_db_setup, django_db_blocker) -> Iterator[PrivatePostgres]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with django_db_blocker.unblock():
        config = connections[DEFAULT_DB_ALIAS].settings_dict
        schema_from = {
            "host": config["HOST"] or "127.0.0.1",
            "port": config["PORT"] or 5432,
            "user": config["USER"] or "postgres",
            "dbname": config["NAME"],
        }
    servers = PrivatePostgres()
    try:
        servers.start(schema_from)
        yield servers
    finally:
        servers.stop()


@pytest.mark.django_db  # the suite's test database is set up: its schema is copied to the primary
def test_dashboards_and_reports_read_the_replica_money_and_writes_stay_on_the_primary(streaming_replica):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_CLUSTER", "BALANCE_BACKEND", "CELERY_BROKER_URL")}
    env |= {
        "DATABASE_URL": streaming_replica.url(streaming_replica.primary_port),
        "DATABASE_REPLICA_URL": streaming_replica.url(streaming_replica.replica_port),
        "REDIS_URL": "",  # the database balance backend: this test is about PostgreSQL
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("replica_probe.py"))],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(done.stderr.strip().splitlines()[-1])  # the statement counts and replay times (pytest -s)

    # Reports and dashboards read the replica...
    assert seen["report_queries_on_replica"] > 0
    assert seen["dashboard_status"] == 200
    assert seen["dashboard_queries_on_replica"] > 0
    # ... so with replay paused they lag: the second event is not in them yet,
    assert seen["report_before"] == 1
    assert seen["report_while_paused"] == 1
    assert seen["csv_rows_while_paused"] == 1
    assert seen["count_on_replica"] == 1
    # while ingest (key lookup included), the balance and the event itself are the primary's.
    assert seen["ingest_queries_on_replica"] == 0
    assert seen["primary_events"] == 2
    assert Decimal(seen["balance_while_paused"]) == Decimal("10.00") - 2 * Decimal("0.0075")
    assert seen["event_detail_while_paused"] == 200
    # Writes never go to the replica; a transaction reads the primary (its own writes).
    assert seen["write_alias_inside_replica_reads"] == DEFAULT_DB_ALIAS
    assert seen["read_alias_inside_replica_reads"] == REPLICA
    assert seen["read_alias_inside_a_transaction"] == DEFAULT_DB_ALIAS
    assert seen["count_inside_a_transaction"] == 2
    # Replay resumed: the report catches up.
    assert seen["report_after"] == 2
    assert seen["catch_up_seconds"] < 20
    # The operators' page says how far behind the replica is.
    assert "s behind" in seen["ops_page_while_paused"]
    assert "streaming, replay up to date" in seen["ops_page_after"]


# --- The router on its own (the suite's database; no replica configured here) ---------------


def test_without_a_replica_every_read_stays_on_the_primary(settings):
    assert not settings.DATABASE_REPLICA_URL
    with replica_reads():
        assert PrimaryReplicaRouter().db_for_read(UsageEvent) is None
        assert router.db_for_read(UsageEvent) == DEFAULT_DB_ALIAS


@pytest.mark.django_db(transaction=True)  # no test-wide transaction: the router sees the one it opens
def test_router_rules(settings):
    settings.DATABASE_REPLICA_URL = "postgres://replica.invalid/tokenbill"  # the router only names it
    rules = PrimaryReplicaRouter()
    assert rules.db_for_read(UsageEvent) is None  # not asked for: the primary
    with replica_reads():
        assert rules.db_for_read(UsageEvent) == REPLICA
        assert rules.db_for_write(UsageEvent) == DEFAULT_DB_ALIAS
        with transaction.atomic():
            assert rules.db_for_read(UsageEvent) is None
    assert rules.db_for_read(UsageEvent) is None  # the context ended
    assert rules.allow_migrate(REPLICA, "metering") is False
    assert rules.allow_migrate(DEFAULT_DB_ALIAS, "metering") is True


def test_a_streamed_body_keeps_reading_the_replica_after_its_view_returned(settings):
    settings.DATABASE_REPLICA_URL = "postgres://replica.invalid/tokenbill"  # the router only names it
    rules = PrimaryReplicaRouter()

    def body():
        for _ in range(3):
            yield rules.db_for_read(UsageEvent)

    assert list(body()) == [None, None, None]
    assert list(replica_iter(body())) == [REPLICA, REPLICA, REPLICA]


def test_a_replica_needs_postgresql_on_both_sides():
    replica = "postgres://postgres@10.0.0.2:5432/tokenbill"
    assert "SQLite has no replicas" in settings_error(DATABASE_REPLICA_URL=replica)  # DATABASE_URL is SQLite there
    assert "SQLite has no replicas" in settings_error(
        DATABASE_URL="postgres://postgres@10.0.0.1:5432/tokenbill", DATABASE_REPLICA_URL="sqlite:///copy.db"
    )
    loaded = settings_error(DATABASE_URL="postgres://postgres@10.0.0.1:5432/tokenbill", DATABASE_REPLICA_URL=replica)
    assert loaded.startswith("loaded:"), loaded
