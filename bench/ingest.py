"""Ingest benchmark: PostgreSQL's own COPY rate, then HTTP batch and single-event ingest.

One run, bounded in time (about 80 s with the defaults), loopback traffic only:

1. drops and recreates its own database (`--database`, default tokenbill_bench_ingest) on
   the server that DATABASE_URL names, migrates it, and creates a tenant with a price plan
   (exact names, a glob, a context tier), an API key and a service token;
2. COPY baseline: N rows into `LIKE metering_usageevent INCLUDING ALL` (same columns, unique
   key, checks and indexes) with psycopg's COPY, from text prepared before the clock starts;
3. starts gunicorn (portal.wsgi, DEBUG=0, LOG_LEVEL=WARNING, Prometheus multiprocess mode as
   in production) on a free 127.0.0.1 port;
4. load generator: separate processes, one blocking HTTP/1.1 connection each (raw sockets,
   keep-alive when the server offers it), bodies built on the fly with fresh request_ids;
   its own CPU time is measured and reported next to the server's;
5. batch ingest (1,000-event batches) at saturation, with an API key and with a service token
   naming the key in every event; single-event ingest at saturation and at a fixed offered
   rate (open loop: latency counts from the scheduled send time, so a slow server cannot hide
   its queueing); each measured phase starts after a VACUUM and a CHECKPOINT (--no-settle to
   skip), so one phase's maintenance does not land in the next one's latency;
6. checks: replays are duplicates, a changed body is a conflict, stored == accepted,
   wallet == sum(ledger), the usage charges match the stored costs, and Redis's balances
   and quota cells match PostgreSQL; prints a table (docs/scaling.md explains it).

Run with `make bench` (the test environment) or directly:
    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/ingest.py --duration 10
"""

from __future__ import annotations

import argparse
import array
import datetime as dt
import multiprocessing as mp
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import conninfo, database_urls, recreate_database  # noqa: E402 - bench/ is on sys.path
from benchserver import Server, add_server_arguments, resolve_server_arguments, start_server  # noqa: E402

MODELS = (
    # (model, weight): exact prices, a glob, a tiered price and a little unpriced traffic.
    ("gpt-4o", 40),
    ("gpt-4o-mini-2024-07-18", 30),
    ("claude-sonnet-4", 25),
    ("local-llama-3-8b", 1),
)
BATCH_PATH = "/api/v1/events/batch"
EVENT_PATH = "/api/v1/events"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- Options ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark usage ingest over HTTP against PostgreSQL's own COPY rate (see module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", default="tokenbill_bench_ingest", help="database to drop, create and use")
    parser.add_argument("--copy-rows", type=int, default=200_000, help="rows for the COPY baseline")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load before measuring")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch request")
    parser.add_argument("--batch-clients", type=int, default=4, help="concurrent batch connections")
    parser.add_argument("--single-clients", type=int, default=8, help="concurrent single-event connections")
    parser.add_argument("--rate", type=float, default=500.0, help="offered single-event rate (req/s) for latency")
    parser.add_argument("--rate-clients", type=int, default=8, help="processes sharing the offered rate")
    add_server_arguments(parser)
    parser.add_argument("--events", type=int, default=0, help="stop the batch phase after this many events (0: time)")
    parser.add_argument("--tenants", type=int, default=1, help="tenants (one key each) the clients are spread over")
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: copy,batch,gateway,single,rate")
    parser.add_argument("--keep-server", action="store_true", help="leave gunicorn running for profiling (prints pid)")
    parser.add_argument(
        "--no-settle",
        dest="settle",
        action="store_false",
        help="skip VACUUM and CHECKPOINT before each phase (one phase's maintenance then lands in the next)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 60:
        parser.error("--duration must be in (0, 60] seconds (the whole run stays under 3 minutes)")
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 1..10000")
    if min(args.batch_clients, args.single_clients, args.rate_clients, args.workers, args.threads, args.tenants) < 1:
        parser.error("client, worker and thread counts must be >= 1")
    if not args.database.replace("_", "").isalnum():
        parser.error("--database must be letters, digits and underscores")
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    resolve_server_arguments(args)
    return args


# --- Database setup --------------------------------------------------------------------------


@dataclass
class Fixture:
    tenants: list[tuple[int, int, str]]  # (tenant id, api key id, api key secret)
    service_token: str

    def key_for(self, index: int) -> tuple[int, int, str]:
        """Client `index`'s tenant: clients are spread over the tenants round-robin."""
        return self.tenants[index % len(self.tenants)]


def create_fixture(tenants: int) -> Fixture:
    from accounts import services  # noqa: PLC0415
    from billing.services.ledger import ledger_post  # noqa: PLC0415
    from billing.services.pricing import plan_get_or_create, price_add  # noqa: PLC0415
    from billing.services.resale import markup_set, plan_set_cost_plan  # noqa: PLC0415

    since = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    # The provider's prices; the tenants' plan is sold 1.25x over them, so ingest rates every
    # priced event twice (the price and its cost basis), as a reseller's does.
    plan = plan_get_or_create(slug="bench-cost", name="Bench cost plan", currency="USD", actor_label="bench")
    price_add(
        plan=plan,
        model_pattern="gpt-4o",
        input_per_mtok=Decimal("2.5"),
        output_per_mtok=Decimal("10"),
        cached_input_per_mtok=Decimal("1.25"),
        effective_from=since,
        actor_label="bench",
    )
    price_add(
        plan=plan,
        model_pattern="gpt-4o-mini*",
        input_per_mtok=Decimal("0.15"),
        output_per_mtok=Decimal("0.6"),
        cached_input_per_mtok=Decimal("0.075"),
        effective_from=since,
        actor_label="bench",
    )
    price_add(
        plan=plan,
        model_pattern="claude-sonnet-4",
        input_per_mtok=Decimal("3"),
        output_per_mtok=Decimal("15"),
        cached_input_per_mtok=Decimal("0.3"),
        cache_write_per_mtok=Decimal("3.75"),
        tier_threshold=200_000,
        tier_input_per_mtok=Decimal("6"),
        tier_output_per_mtok=Decimal("22.5"),
        effective_from=since,
        actor_label="bench",
    )
    price_add(plan=plan, model_pattern="o1*", input_per_mtok=Decimal("15"), output_per_mtok=Decimal("60"))
    cost_plan, plan = plan, plan_get_or_create(slug="bench", name="Bench plan", currency="USD", actor_label="bench")
    plan_set_cost_plan(plan=plan, cost_plan=cost_plan, actor_label="bench")
    markup_set(plan=plan, model_pattern="*", multiplier="1.25", effective_from=since, actor_label="bench")
    rows = []
    for number in range(tenants):
        slug = "bench" if number == 0 else f"bench-{number}"
        tenant = services.tenant_create(name=f"Bench {number}", slug=slug, price_plan_id=plan.pk, actor_label="bench")
        key, secret = services.api_key_create(
            tenant=tenant, name="bench", scopes=["ingest", "read"], actor_label="bench"
        )
        ledger_post(
            tenant_id=tenant.pk, currency="USD", kind="topup", amount=Decimal("1000000"), idempotency_key="bench-topup"
        )
        rows.append((tenant.pk, key.pk, secret))
    _, token = services.service_token_create(name="bench-gateway", actor_label="bench")
    for tenant_id, _, _ in rows:
        forget_redis_keys(tenant_id)
    return Fixture(tenants=rows, service_token=token)


def forget_redis_keys(tenant_id: int) -> None:
    """Delete this tenant's keys in REDIS_URL's database (a fresh database reuses tenant ids)."""
    from django.conf import settings  # noqa: PLC0415

    if not settings.REDIS_URL:
        return
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(settings.REDIS_URL)
    tag = f"[{{]{tenant_id}[}}]"
    for pattern in (f"bal:{tag}", f"qk:{tag}", f"hold:{tag}:*", f"q:{tag}:*", f"*alerts-debounce:{tag}"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


# --- Event shapes (shared by COPY rows and HTTP bodies) --------------------------------------

_MODEL_CYCLE = tuple(model for model, weight in MODELS for _ in range(weight))


def make_events(tag: str, start: int, count: int, now_iso: str) -> list[dict]:
    """`count` valid events with unique request_ids (a random tag, a counter)."""
    cycle = _MODEL_CYCLE
    n_models = len(cycle)
    events = []
    for i in range(start, start + count):
        model = cycle[(i * 7) % n_models]
        input_tokens = 200 + (i * 37) % 4000
        events.append(
            {
                "request_id": f"chatcmpl-{tag}{i:09d}",
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": 20 + (i * 13) % 800,
                "cached_input_tokens": (input_tokens // 2) if i % 3 == 0 else 0,
                "timestamp": now_iso,
                "latency_ms": 200 + i % 1500,
                "metadata": {"user": f"u{i % 500}", "feature": "chat"},
            }
        )
    return events


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- COPY baseline ---------------------------------------------------------------------------


def measure_copy(bench_url: str, fixture: Fixture, rows: int) -> dict:
    import psycopg  # noqa: PLC0415

    columns = (
        "tenant_id", "api_key_id", "request_id", "model", "input_tokens", "output_tokens",
        "cached_input_tokens", "cache_write_tokens", "occurred_at", "received_at", "latency_ms",
        "metadata", "token_source", "encoding", "cost", "currency", "price_id", "body_hash",
    )  # fmt: skip
    received = dt.datetime.now(dt.UTC).isoformat()
    tenant_id, api_key_id, _ = fixture.key_for(0)
    lines = []
    for event in make_events(os.urandom(4).hex(), 0, rows, now_iso()):
        metadata = orjson.dumps(event["metadata"]).decode()
        lines.append(
            f"{tenant_id}\t{api_key_id}\t{event['request_id']}\t{event['model']}\t"
            f"{event['input_tokens']}\t{event['output_tokens']}\t{event['cached_input_tokens']}\t0\t"
            f"{event['timestamp']}\t{received}\t{event['latency_ms']}\t{metadata}\treported\t\t"
            f"0.001234567890123456\tUSD\t\\N\t{os.urandom(32).hex()}\n"
        )
    data = "".join(lines).encode()
    chunk = 1 << 20
    with psycopg.connect(conninfo(bench_url)) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_usageevent")
        conn.execute("CREATE TABLE bench_copy_usageevent (LIKE metering_usageevent INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY bench_copy_usageevent ({', '.join(columns)}) FROM STDIN") as cp,
        ):
            for offset in range(0, len(data), chunk):
                cp.write(data[offset : offset + chunk])
        conn.commit()
        elapsed = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM bench_copy_usageevent").fetchone()[0]
        conn.execute("DROP TABLE bench_copy_usageevent")
        conn.commit()
    assert stored == rows, f"COPY stored {stored} of {rows} rows"
    return {"rows": rows, "seconds": elapsed, "rate": rows / elapsed, "bytes": len(data)}


# --- HTTP client: raw sockets, one connection per process -----------------------------------


class Connection:
    """A minimal HTTP/1.1 client: a fraction of http.client's CPU per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.reader = None

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=1 << 16)

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in range(2):
            reused = self.sock is not None
            if not reused:
                self._connect()
            try:
                self.sock.sendall(message)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                # The server may close an idle keep-alive connection; retrying is safe because
                # ingest is idempotent on request_id.
                if not reused or attempt:
                    raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, bytes]:
        reader = self.reader
        status_line = reader.readline()
        if not status_line:
            raise EOFError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected from the API")
        payload = reader.read(length) if length else b""
        if close:
            self.close()
        return status, payload


@dataclass
class WorkerResult:
    requests: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    first_error: str = ""
    cpu: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    latencies: bytes = b""


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def load_worker(spec: dict, queue: mp.Queue) -> None:
    """One load process: `mode` is batch, single (closed loop) or rate (open loop)."""
    cpu0 = _cpu()
    conn = Connection(spec["port"])
    credential = spec["service_token"] if spec["mode"] == "gateway" else spec["key"]
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    tag = os.urandom(4).hex()
    mode, size = spec["mode"], spec["batch_size"]
    latencies = array.array("d")
    result = WorkerResult()
    seq = 0
    interval = spec.get("interval", 0.0)
    start_at, deadline, max_events = spec["start_at"], spec["deadline"], spec.get("max_events", 0)
    while time.monotonic() < start_at:
        time.sleep(min(0.01, start_at - time.monotonic()))
    result.started = time.monotonic()
    scheduled = start_at + spec.get("offset", 0.0)
    stamp, stamp_at = now_iso(), time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline or (max_events and result.events >= max_events):
            break
        if now - stamp_at > 1:
            stamp, stamp_at = now_iso(), now
        if mode == "rate":
            if scheduled >= deadline:
                break
            if scheduled > now:
                time.sleep(scheduled - now)
            sent = scheduled
            scheduled += interval
        else:
            sent = time.monotonic()
        if mode in ("batch", "gateway"):
            events = make_events(tag, seq, size, stamp)
            if mode == "gateway":  # a gateway names the consuming key (the id authorize returned)
                for event in events:
                    event["api_key"] = spec["api_key_id"]
            body = orjson.dumps({"events": events})
            seq += size
            path, count = BATCH_PATH, size
        else:
            body = orjson.dumps(make_events(tag, seq, 1, stamp)[0])
            seq += 1
            path, count = EVENT_PATH, 1
        try:
            status, payload = conn.request("POST", path, body, headers)
        except (OSError, EOFError) as exc:
            result.errors += 1
            result.first_error = result.first_error or repr(exc)
            conn.close()
            continue
        done = time.monotonic()
        latencies.append(done - sent)
        result.requests += 1
        result.events += count
        if mode in ("batch", "gateway") and status == 200:
            summary = orjson.loads(payload)
            result.accepted += summary["accepted"]
            result.duplicates += summary["duplicates"]
            result.rejected += summary["rejected"]
        elif mode in ("single", "rate") and status == 201:
            result.accepted += 1
        elif mode in ("single", "rate") and status == 200:
            result.duplicates += 1
        else:
            result.errors += 1
            result.first_error = result.first_error or f"HTTP {status}: {payload[:300]!r}"
        result.finished = done
    conn.close()
    result.cpu = _cpu() - cpu0
    result.latencies = latencies.tobytes()
    queue.put(result)


# --- CPU accounting --------------------------------------------------------------------------


def proc_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each live process (utime + stime)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used in between by the processes alive at the end (a new one counts from zero)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def settle_database(bench_url: str) -> None:
    """Vacuum and checkpoint between phases, as pgbench runs do, so each phase pays its own way.

    Two batch phases insert over a million rows and about 1 GB of WAL: left alone, autovacuum
    and the checkpoint they trigger run during the single-event phases, which then measure the
    batch phases' maintenance (fsync stalls and a third of a core) rather than their own cost."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(conninfo(bench_url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) metering_usageevent, billing_ledgerentry, billing_quotacounter")
        conn.execute("CHECKPOINT")


def postgres_pids(bench_url: str, database: str) -> list[int]:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(conninfo(bench_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database]
        ).fetchall()
    return [row[0] for row in rows]


@dataclass
class PhaseResult:
    name: str
    clients: int
    seconds: float
    requests: int
    events: int
    accepted: int
    duplicates: int
    rejected: int
    errors: int
    first_error: str
    latencies: list[float]
    client_cpu: float
    server_cpu: float
    postgres_cpu: float
    machine_cpu: float
    extra: dict = field(default_factory=dict)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, round(q / 100 * (len(self.latencies) - 1)))
        return self.latencies[index] * 1000

    def cores(self, seconds_of_cpu: float) -> float:
        return seconds_of_cpu / self.seconds if self.seconds else 0.0


def run_phase(
    name: str, *, mode: str, clients: int, duration: float, args: argparse.Namespace, ctx: dict, **extra
) -> PhaseResult:
    server: Server = ctx["server"]
    start_at = time.monotonic() + 0.3
    deadline = start_at + duration
    queue: mp.Queue = mp.get_context("fork").Queue()
    specs = []
    for index in range(clients):
        _, api_key_id, secret = ctx["fixture"].key_for(index)
        spec = {
            "port": server.port,
            "key": secret,
            "api_key_id": api_key_id,
            "service_token": ctx["fixture"].service_token,
            "mode": mode,
            "batch_size": args.batch_size,
            "start_at": start_at,
            "deadline": deadline,
            "max_events": extra.get("max_events", 0) // clients if extra.get("max_events") else 0,
        }
        if mode == "rate":
            spec["interval"] = clients / extra["rate"]
            spec["offset"] = index / extra["rate"]
        specs.append(spec)
    fork = mp.get_context("fork")
    processes = [fork.Process(target=load_worker, args=(spec, queue), daemon=True) for spec in specs]
    for process in processes:
        process.start()
    server_pids = server.pids()
    pg_pids = postgres_pids(ctx["bench_url"], ctx["database"])
    while time.monotonic() < start_at:
        time.sleep(0.005)
    cpu_server0, cpu_pg0, busy0 = proc_cpu(server_pids), proc_cpu(pg_pids), machine_busy()
    pg_started = set(cpu_pg0)
    results = [queue.get(timeout=duration + 60) for _ in processes]
    # Backends opened during the phase (a recycled connection) count from zero; those that
    # closed during it are lost, so the figure can only be low, never negative.
    pg_pids = sorted(pg_started | set(postgres_pids(ctx["bench_url"], ctx["database"])))
    cpu_server1, cpu_pg1, busy1 = proc_cpu(server_pids), proc_cpu(pg_pids), machine_busy()
    for process in processes:
        process.join(timeout=10)
    finished = max((r.finished for r in results), default=start_at)
    seconds = max(finished - start_at, 1e-9)
    latencies: list[float] = []
    for r in results:
        values = array.array("d")
        values.frombytes(r.latencies)
        latencies.extend(values)
    latencies.sort()
    errors = [r.first_error for r in results if r.first_error]
    return PhaseResult(
        name=name,
        clients=clients,
        seconds=seconds,
        requests=sum(r.requests for r in results),
        events=sum(r.events for r in results),
        accepted=sum(r.accepted for r in results),
        duplicates=sum(r.duplicates for r in results),
        rejected=sum(r.rejected for r in results),
        errors=sum(r.errors for r in results),
        first_error=errors[0] if errors else "",
        latencies=latencies,
        client_cpu=sum(r.cpu for r in results),
        server_cpu=cpu_delta(cpu_server0, cpu_server1),
        postgres_cpu=cpu_delta(cpu_pg0, cpu_pg1),
        machine_cpu=busy1 - busy0,
        extra=extra,
    )


# --- Correctness checks ----------------------------------------------------------------------


def check_semantics(ctx: dict) -> list[tuple[str, bool, str]]:
    """Replays over HTTP against the running server: duplicate, conflict, per-item results."""
    conn = Connection(ctx["server"].port)
    headers = {"Authorization": f"Bearer {ctx['fixture'].key_for(0)[2]}", "Content-Type": "application/json"}
    events = make_events("chk" + os.urandom(3).hex(), 0, 10, now_iso())
    checks = []
    status, payload = conn.request("POST", BATCH_PATH, orjson.dumps({"events": events}), headers)
    first = orjson.loads(payload)
    checks.append(
        ("fresh batch accepted", status == 200 and first["accepted"] == 10, f"{status} {first.get('accepted')}")
    )
    status, payload = conn.request("POST", BATCH_PATH, orjson.dumps({"events": events}), headers)
    again = orjson.loads(payload)
    checks.append(("replayed batch all duplicates", again["duplicates"] == 10, f"{again['duplicates']} duplicates"))
    changed = [dict(events[0], output_tokens=events[0]["output_tokens"] + 1), {"request_id": "x"}, *events[1:3]]
    status, payload = conn.request("POST", BATCH_PATH, orjson.dumps({"events": changed}), headers)
    mixed = orjson.loads(payload)
    statuses = [item["status"] for item in mixed["results"]]
    checks.append(
        (
            "changed body conflicts, invalid rejected, rest duplicate",
            statuses == ["rejected", "rejected", "duplicate", "duplicate"]
            and mixed["results"][0]["error"]["code"] == "request_id_conflict",
            ",".join(statuses),
        )
    )
    status, payload = conn.request("POST", EVENT_PATH, orjson.dumps(events[0]), headers)
    single = orjson.loads(payload)
    checks.append(("single replay is 200 duplicate", status == 200 and single.get("duplicate") is True, str(status)))
    conn.close()
    ctx["accepted_extra"] += first["accepted"]
    return checks


def check_totals(ctx: dict, accepted: int) -> list[tuple[str, bool, str]]:
    from django.conf import settings  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415
    from django.db.models import Count, Sum  # noqa: PLC0415

    from billing import selectors  # noqa: PLC0415
    from billing.models import LedgerEntry  # noqa: PLC0415
    from metering.models import UsageEvent  # noqa: PLC0415

    connection.close()
    stored_total, wallets_ok, charges_ok, details = 0, True, True, []
    for tenant_id, _, _ in ctx["fixture"].tenants:
        stored = UsageEvent.objects.filter(tenant_id=tenant_id).aggregate(n=Count("id"), cost=Sum("cost"))
        wallet, ledger = selectors.wallet_balance(tenant_id=tenant_id), selectors.ledger_sum(tenant_id=tenant_id)
        usage = LedgerEntry.objects.filter(tenant_id=tenant_id, kind="usage").aggregate(
            n=Count("id"), total=Sum("amount")
        )
        charged = -(usage["total"] or Decimal(0))
        cost = stored["cost"] or Decimal(0)
        # Each charge is one batch's summed cost rounded once to 6 places: at most half a micro-unit off.
        bound = Decimal("0.0000005") * (usage["n"] or 0)
        stored_total += stored["n"]
        wallets_ok &= wallet == ledger
        charges_ok &= abs(charged - cost) <= bound
        details.append((wallet, ledger, charged, cost, usage["n"]))
    wallet, ledger, charged, cost, charges = details[0]
    more = f" (first of {len(details)} tenants)" if len(details) > 1 else ""
    mirror = []
    if settings.BALANCE_BACKEND == "redis":
        from billing.services.reconcile import balances_reconcile  # noqa: PLC0415

        drifts = [balances_reconcile(tenant_id=tenant_id, fix=False) for tenant_id, _, _ in ctx["fixture"].tenants]
        mirror.append(
            (
                "Redis balances and quota cells == PostgreSQL",
                all(report.clean for report in drifts),
                f"{sum(len(r.drifts) + len(r.wallets) for r in drifts)} drifts",
            )
        )
    return [
        *mirror,
        ("stored events == accepted", stored_total == accepted, f"{stored_total} stored, {accepted} accepted"),
        ("wallet == sum(ledger)", wallets_ok, f"{wallet} vs {ledger}{more}"),
        (
            "usage charges == stored cost (within rounding)",
            charges_ok,
            f"charged {charged}, cost {cost:.9f}, {charges} charges{more}",
        ),
    ]


# --- Report ----------------------------------------------------------------------------------


def report(copy: dict | None, phases: dict[str, PhaseResult], checks: list, args: argparse.Namespace) -> None:
    copy_rate = copy["rate"] if copy else float("nan")
    print()
    print(f"ingest benchmark: {os.cpu_count()} cores, gunicorn {args.workers} x {args.worker_class}", end="")
    print(f" (threads {args.threads})" if args.worker_class == "gthread" else "", end="")
    print(f", load average before the run {ctx_load:.2f}")
    if copy:
        print(f"COPY baseline: {copy['rows']:,} rows in {copy['seconds']:.2f} s = {copy_rate:,.0f} rows/s")
    header = (
        f"{'phase':<30}{'clients':>8}{'rate':>10}{'unit':>9}{'vs COPY':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'client':>7}{'gunicorn':>9}{'pg':>5}{'machine':>8}{'py ms':>7}{'pg ms':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for phase in phases.values():
        if phase.name.startswith("batch"):
            rate, unit = phase.events / phase.seconds, "events/s"
        else:
            rate, unit = phase.requests / phase.seconds, "req/s"
        per_request = 1000 / max(phase.requests, 1)
        print(
            f"{phase.name:<30}{phase.clients:>8}{rate:>10,.0f}{unit:>9}{rate / copy_rate:>8.1%}"
            f"{phase.pct(50):>8.1f}{phase.pct(99):>8.1f}"
            f"{phase.cores(phase.client_cpu):>7.2f}{phase.cores(phase.server_cpu):>9.2f}"
            f"{phase.cores(phase.postgres_cpu):>5.2f}{phase.cores(phase.machine_cpu):>8.2f}"
            f"{phase.server_cpu * per_request:>7.2f}{phase.postgres_cpu * per_request:>7.2f}"
        )
    print(
        "(client, gunicorn, pg, machine: cores busy on average (load generator, web workers, PostgreSQL\n"
        " backends, the whole machine); py ms, pg ms: CPU milliseconds per request in gunicorn and in\n"
        " PostgreSQL (a batch request carries --batch-size events))"
    )
    for phase in phases.values():
        line = f"  {phase.name}: {phase.requests:,} requests in {phase.seconds:.1f} s, {phase.accepted:,} accepted"
        line += f", {phase.duplicates} duplicates, {phase.rejected} rejected, {phase.errors} errors"
        if phase.first_error:
            line += f" (first: {phase.first_error})"
        print(line)
    print()
    print("checks:")
    for name, ok, detail in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")


ctx_load = 0.0


def main(argv: list[str] | None = None) -> int:
    global ctx_load  # noqa: PLW0603 - one figure for the report header
    args = parse_args(argv)
    ctx_load = os.getloadavg()[0]
    began = time.monotonic()
    maintenance_url, bench_url = database_urls(args.database)
    recreate_database(maintenance_url, args.database)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    call_command("migrate", verbosity=0, interactive=False)
    fixture = create_fixture(args.tenants)
    connections.close_all()
    print(f"setup: database {args.database} migrated in {time.monotonic() - began:.1f} s", flush=True)

    copy = None
    if "copy" not in args.skip:
        copy = measure_copy(bench_url, fixture, args.copy_rows)
        print(f"COPY: {copy['rate']:,.0f} rows/s", flush=True)

    server = start_server(args, database_url=bench_url, name="ingest")
    ctx = {"server": server, "fixture": fixture, "bench_url": bench_url, "database": args.database}
    ctx["accepted_extra"] = 0
    phases: dict[str, PhaseResult] = {}
    checks: list = []
    try:
        if args.warmup > 0:
            warm = run_phase(
                "warmup", mode="batch", clients=args.batch_clients, duration=args.warmup, args=args, ctx=ctx
            )
            ctx["accepted_extra"] += warm.accepted
            warm = run_phase("warmup", mode="single", clients=args.workers, duration=1.0, args=args, ctx=ctx)
            ctx["accepted_extra"] += warm.accepted
        plan = [
            (
                "batch",
                f"batch {args.batch_size:,} (saturation)",
                "batch",
                args.batch_clients,
                {"max_events": args.events},
            ),
            ("gateway", f"batch {args.batch_size:,}, service token", "gateway", args.batch_clients, {}),
            ("single", "single (saturation)", "single", args.single_clients, {}),
            ("rate", f"single @ {args.rate:,.0f} req/s offered", "rate", args.rate_clients, {"rate": args.rate}),
        ]
        for key, name, mode, clients, extra in plan:
            if key in args.skip:
                continue
            if args.settle:
                settle_database(bench_url)
            phase = run_phase(name, mode=mode, clients=clients, duration=args.duration, args=args, ctx=ctx, **extra)
            phases[key] = phase
            print(f"{name}: done", flush=True)
        checks.extend(check_semantics(ctx))
        accepted = ctx["accepted_extra"] + sum(p.accepted for p in phases.values())
        checks.extend(check_totals(ctx, accepted))
        for phase in phases.values():
            checks.append((f"{phase.name}: no transport or HTTP errors", phase.errors == 0, f"{phase.errors} errors"))
    finally:
        if args.keep_server:
            print(f"gunicorn left running: pid {server.process.pid}, port {server.port}, key {fixture.key_for(0)[2]}")
        else:
            server.stop()
    report(copy, phases, checks, args)
    print(f"\nwhole run: {time.monotonic() - began:.0f} s; gunicorn log: {server.log_path}")
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"FAILED checks: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
