"""Real services the fault tests start, break and restart themselves.

- `private_redis`: a redis-server of the test's own on a free loopback port, killed with
  SIGKILL and restarted (empty) on the same port; never the shared Redis on 6379.
- `balance_redis`: the same, once as one server and once as a whole three-master Redis Cluster.
- `pg`: a second PostgreSQL connection to the test database that holds locks, waits until a
  named backend (application_name) is blocked on them and terminates that one backend, always
  filtered on `datname = current_database()`; never any other database.
- `celery_worker`: real `celery -A portal worker --pool=solo` processes (tests/faults/worker.py)
  on a private Redis broker, SIGKILLed by the test; every one is killed at teardown.

Every process and server started here is stopped by its fixture; every wait has a timeout.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery
from django.db import connection, connections

from infra.redis_client import RedisClient, connect
from tests.faults.receiver import ScriptedReceiver
from tests.redis_cluster import RedisClusterProcesses, cluster_missing_reason

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = "redis-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str | Callable[[], str] = ""
) -> object:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds, saying `what`
    (or what `what()` says then: a worker's log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {(what() if callable(what) else what) or predicate}")
        time.sleep(interval)


# --- Redis --------------------------------------------------------------------------------


class RedisProcess:
    """One private redis-server: no persistence, so a restart comes back empty."""

    cluster = False

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            wait_for(lambda: self._pings(client), timeout=10, what=f"redis-server on {self.port}")
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; connections are reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.kill()


class ClusterStore:
    """A private three-master Redis Cluster with RedisProcess's interface: `kill` SIGKILLs every
    node, `start` brings them back empty on the same ports (each keeps its slots: nodes.conf)."""

    cluster = True

    def __init__(self, folder: Path) -> None:
        self.nodes = RedisClusterProcesses(folder)

    def url(self, db: int = 0) -> str:
        assert db == 0, "a Redis Cluster has database 0 only"
        return self.nodes.url

    def start(self) -> None:
        self.nodes.start()

    def kill(self) -> None:
        self.nodes.kill()

    def client(self, db: int = 0) -> RedisClient:
        return connect(self.url(db), cluster=True, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


@pytest.fixture(params=["redis", "redis-cluster"])
def balance_redis(request, tmp_path) -> Iterator[RedisProcess | ClusterStore]:
    """The balance store the fault tests kill: one server (RedisProcess) or a whole Redis Cluster."""
    if request.param == "redis-cluster":
        reason = cluster_missing_reason()
        if reason:
            pytest.skip(reason)
        store: RedisProcess | ClusterStore = ClusterStore(tmp_path / "cluster")
    else:
        store = RedisProcess()
    store.start()
    try:
        yield store
    finally:
        store.kill()


# --- PostgreSQL -----------------------------------------------------------------------------


def conninfo(alias: str = "default") -> dict:
    """psycopg connection arguments for the test database (its test NAME, once created)."""
    config = connections[alias].settings_dict
    args = {"dbname": config["NAME"], "user": config["USER"], "host": config["HOST"] or "127.0.0.1"}
    if config.get("PORT"):
        args["port"] = config["PORT"]
    if config.get("PASSWORD"):
        args["password"] = config["PASSWORD"]
    return args


def database_url() -> str:
    """DATABASE_URL of the test database, for worker subprocesses."""
    info = conninfo()
    auth = info["user"] + (f":{info['password']}" if "password" in info else "")
    return f"postgres://{auth}@{info['host']}:{info.get('port', 5432)}/{info['dbname']}"


def name_this_connection(name: str) -> None:
    """Give the calling thread's Django connection an application_name the test can find."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [name])


class Postgres:
    """The test's own control connection (autocommit) to the test database."""

    def __init__(self) -> None:
        self.conn = psycopg.connect(**conninfo(), autocommit=True, application_name="faults-control")
        self.holder: psycopg.Connection | None = None

    def blocked_pid(self, name: str) -> int | None:
        row = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
            " AND wait_event_type = 'Lock'",
            [name],
        ).fetchone()
        return row[0] if row else None

    def blocked_on(self, query_like: str) -> int | None:
        """A backend of the test database (not this test's own) waiting on a lock in a query
        that matches `query_like` (a worker process's, whose connection the test cannot name)."""
        row = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query ILIKE %s AND application_name NOT LIKE 'faults-%%'",
            [query_like],
        ).fetchone()
        return row[0] if row else None

    def wait_blocked(self, name: str, *, timeout: float = 30) -> int:
        """The pid of backend `name` once it waits on a lock (one the test holds)."""
        return int(wait_for(lambda: self.blocked_pid(name), timeout=timeout, what=f"backend {name} blocked"))

    def terminate(self, pid: int) -> None:
        """End exactly this backend of the test database (never another database's)."""
        row = self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND datname = current_database()",
            [pid],
        ).fetchone()
        assert row is not None and row[0], f"backend {pid} is not one of the test database's"

    @contextlib.contextmanager
    def holding(self, sql: str, params: list | None = None) -> Iterator[psycopg.Connection]:
        """Run `sql` (a lock: FOR UPDATE, an advisory lock) in an open transaction of another
        connection, held until the block ends."""
        holder = psycopg.connect(**conninfo(), application_name="faults-holder")
        try:
            holder.execute(sql, params or [])
            yield holder
        finally:
            holder.rollback()
            holder.close()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def pg(transactional_db) -> Iterator[Postgres]:
    control = Postgres()
    try:
        yield control
    finally:
        control.close()


def run_in_thread(target: Callable[[], object], *, name: str) -> tuple[threading.Thread, dict]:
    """Run `target` in a thread whose Django connection is named `name`: {"result" or "error"}."""
    outcome: dict = {}

    def body() -> None:
        try:
            name_this_connection(name)
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread, outcome


# --- Celery workers ---------------------------------------------------------------------------


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no warm or cold shutdown, nothing acked."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def children(self) -> list[int]:
        """Pids of the worker's pool processes (prefork), from /proc."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


class Workers:
    """Starts `celery -A portal worker --pool=solo` processes on a broker; kills them all at the end."""

    def __init__(self, tmp_path: Path, broker_url: str, env: dict[str, str]) -> None:
        self.tmp_path, self.broker_url, self.env = tmp_path, broker_url, env
        self.started: list[Worker] = []

    def start(self, *, pool: str = "solo", **extra_env: str) -> Worker:
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        env = {**self.env, **extra_env}
        pool_args = [f"--pool={pool}"] + (["--concurrency=1"] if pool == "prefork" else [])
        level = os.environ.get("FAULTS_WORKER_LOGLEVEL", "WARNING")  # INFO shows each task received
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.worker", "worker", *pool_args, f"--loglevel={level}",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"fault{len(self.started)}@%h"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        worker = Worker(process, log)
        self.started.append(worker)
        return worker

    def send(self, name: str, *args: object) -> None:
        """Queue task `name` on this broker, as beat or `.delay()` would."""
        app = Celery("faults", broker=self.broker_url, set_as_current=False)
        try:
            app.send_task(name, args=list(args))
        finally:
            app.close()

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture
def celery_workers(private_redis, tmp_path, live_settings_env) -> Iterator[Workers]:
    env = {
        **live_settings_env,
        "CELERY_BROKER_URL": private_redis.url(0),
    }
    workers = Workers(tmp_path, private_redis.url(0), env)
    try:
        yield workers
    finally:
        workers.kill_all()


@pytest.fixture
def live_settings_env(transactional_db) -> dict[str, str]:
    """The environment of a subprocess that works on this test's database (committed rows)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER", "PYTEST_CURRENT_TEST")
    }
    env |= {
        "DATABASE_URL": database_url(),
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "test-only-secret"),
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }
    return env


# --- Receivers ----------------------------------------------------------------------------------


@pytest.fixture
def scripted_receiver(settings) -> Iterator[Callable[..., ScriptedReceiver]]:
    """A factory of scripted webhook receivers on loopback (allowed as an on-premise receiver)."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    made: list[ScriptedReceiver] = []

    def make(**kwargs) -> ScriptedReceiver:
        receiver = ScriptedReceiver(**kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()
