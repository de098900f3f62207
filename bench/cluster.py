"""Authorize on one Redis server vs a three-master Redis Cluster, paired in the same run.

One run (about two minutes with the defaults), loopback traffic only:

1. drops and recreates its own database (`--database`, default tokenbill_bench_cluster) on the
   server DATABASE_URL names, migrates it and creates `--tenants` tenants per target (price
   plan, a hard daily token quota, a large top-up, an API key): each target has tenants of its
   own, since each Redis mirrors only the changes made through it;
2. starts a private three-master Redis Cluster (bench/rediscluster.py) beside the standalone
   Redis that REDIS_URL names (only this run's tenants' keys are removed there first);
3. for `--rounds` rounds, alternating which target goes first, starts gunicorn (as deployed,
   `--workers` workers) on each target in turn and measures: checks (hold=false) and holds at
   `--rate` requests/s offered, open loop, latency from the scheduled send time; then
   `--clients` clients in a closed loop (as fast as answers come: the throughput). The
   clients spread over the tenants, so a cluster's load spreads over its masters;
4. checks wallet == sum(ledger) for every tenant and that each Redis equals PostgreSQL (the
   reconciler's view), then prints each round and the cluster/standalone ratios of the medians.

    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python bench/cluster.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authorize import Fixture, Phase, _client, create_fixture, forget_redis_keys, gather, migrated_database  # noqa: E402 - bench/ on sys.path
from benchserver import Server, add_server_arguments, resolve_server_arguments, start_server  # noqa: E402
from rediscluster import RedisClusterProcesses, cluster_missing_reason  # noqa: E402

TARGETS = ("standalone", "cluster")
MODES = ("check", "hold", "closed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Authorize p50/p99 and throughput: one Redis vs a 3-master Redis Cluster (module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", default="tokenbill_bench_cluster", help="database to drop, create and use")
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per server")
    parser.add_argument("--clients", type=int, default=8, help="load generator processes")
    parser.add_argument("--tenants", type=int, default=6, help="tenants per target (the clients spread over them)")
    parser.add_argument("--rounds", type=int, default=2, help="paired rounds, the order alternating")
    parser.add_argument(
        "--direct",
        type=int,
        default=2000,
        help="in-process authorize service calls per target and mode (no HTTP), alternating in blocks of 100; 0: skip",
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 60 or not 0 < args.rate <= 5000:
        parser.error("--duration must be in (0, 60] s and --rate in (0, 5000] req/s")
    if min(args.clients, args.workers, args.tenants, args.rounds) < 1:
        parser.error("--clients, --workers, --tenants and --rounds must be >= 1")
    if args.rounds > 10:
        parser.error("--rounds must be at most 10")
    if not args.database.replace("_", "").isalnum():
        parser.error("--database must be letters, digits and underscores")
    resolve_server_arguments(args)
    return args


def run_phase(name: str, server: Server, fixtures: list[Fixture], args: argparse.Namespace, *, mode: str) -> Phase:
    """Open loop at --rate (check, hold) or closed loop (closed) from --clients processes, client i
    on tenant i mod --tenants."""
    duration = args.warmup if name.endswith("warmup") else args.duration
    queue: mp.Queue = mp.Queue()
    start_at = time.perf_counter() + 0.5
    per_client = 0.0 if mode == "closed" else args.rate / args.clients
    procs = [
        mp.Process(
            target=_client,
            args=(
                server.port,
                fixtures[i % len(fixtures)].secret,
                per_client,
                start_at + (i / args.rate if per_client else 0),
                duration,
                mode == "hold",
                f"{name}-{i}",
                queue,
            ),
        )
        for i in range(args.clients)
    ]
    return gather(name, procs, queue, start_at=start_at, duration=duration)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    standalone_url = os.environ.get("REDIS_URL", "")
    if not standalone_url:
        raise SystemExit("REDIS_URL must name the standalone Redis to compare with; try `make bench`.")
    reason = cluster_missing_reason()
    if reason:
        raise SystemExit(reason)
    began = time.monotonic()
    bench_url = migrated_database(args.database)
    from django.db import connections  # noqa: PLC0415

    fixtures = {target: [create_fixture(f"bench-{target}-{i}") for i in range(args.tenants)] for target in TARGETS}
    for fixture in fixtures["standalone"]:
        forget_redis_keys(fixture.tenant_id)
    connections.close_all()

    cluster = RedisClusterProcesses(Path(tempfile.mkdtemp(prefix="tokenbill-bench-cluster-")))
    cluster.start()
    environments = {
        "standalone": {"REDIS_URL": standalone_url, "REDIS_CLUSTER": "0"},
        # A cluster cannot be Celery's broker; the benchmark queues nothing, but settings insist.
        "cluster": {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "1", "CELERY_BROKER_URL": standalone_url},
    }
    print(f"setup: {args.database} and a 3-master cluster on {cluster.ports} in {time.monotonic() - began:.1f} s")
    results: dict[str, dict[str, list[Phase]]] = {t: {m: [] for m in MODES} for t in TARGETS}
    try:
        for round_number in range(args.rounds):
            order = TARGETS if round_number % 2 == 0 else TARGETS[::-1]
            for target in order:
                server = start_server(
                    args,
                    database_url=bench_url,
                    name=f"cluster-bench-{target}",
                    env={"BALANCE_BACKEND": "redis", **environments[target]},
                    metrics=False,
                )
                try:
                    run_phase(f"{target}-warmup", server, fixtures[target], args, mode="check")
                    for mode in MODES:
                        phase = run_phase(f"{target}-{mode}-{round_number}", server, fixtures[target], args, mode=mode)
                        results[target][mode].append(phase)
                        print(f"round {round_number + 1} {target} {mode}: done", flush=True)
                finally:
                    server.stop()
        direct = direct_calls(fixtures, environments, args.direct)
        clean = verify(fixtures, environments)
    finally:
        cluster.stop()
    report(args, results)
    report_direct(direct)
    errors = sum(c for t in TARGETS for m in MODES for p in results[t][m] for s, c in p.statuses.items() if s != 200)
    return 0 if clean and not errors else 1


def direct_calls(
    fixtures: dict[str, list[Fixture]], environments: dict[str, dict[str, str]], calls: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per authorize_request (the service: key already loaded, no HTTP, one thread), checks
    and holds, the targets alternating every 100 calls, so both see the same machine."""
    from django.test.utils import override_settings  # noqa: PLC0415

    from accounts.models import ApiKey  # noqa: PLC0415
    from metering.services.authorize import authorize_request  # noqa: PLC0415

    times: dict[str, dict[str, list[float]]] = {t: {"check": [], "hold": []} for t in TARGETS}
    keys = {
        target: [ApiKey.objects.select_related("tenant").get(tenant_id=f.tenant_id) for f in rows]
        for target, rows in fixtures.items()
    }
    block = 100
    for start in range(0, calls, block):
        for target in TARGETS if (start // block) % 2 == 0 else TARGETS[::-1]:
            env = environments[target]
            cluster = env["REDIS_CLUSTER"] == "1"
            with override_settings(BALANCE_BACKEND="redis", REDIS_URL=env["REDIS_URL"], REDIS_CLUSTER=cluster):
                for mode in ("check", "hold"):
                    for n in range(start, min(start + block, calls)):
                        key = keys[target][n % len(keys[target])]
                        began = time.perf_counter()
                        authorize_request(
                            api_key=key,
                            model="gpt-4o",
                            estimated_input_tokens=1000,
                            max_output_tokens=500,
                            hold=mode == "hold",
                            request_id=f"direct-{target}-{n}" if mode == "hold" else None,
                        )
                        times[target][mode].append(time.perf_counter() - began)
    return times


def report_direct(times: dict[str, dict[str, list[float]]]) -> None:
    if not times["standalone"]["check"]:
        return
    print("in process (authorize_request, no HTTP, one thread), ms:")
    for mode in ("check", "hold"):
        figures = {}
        for target in TARGETS:
            values = sorted(times[target][mode])
            figures[target] = (values[len(values) // 2] * 1000, values[int(0.99 * (len(values) - 1))] * 1000)
        (p50a, p99a), (p50b, p99b) = figures["standalone"], figures["cluster"]
        print(
            f"  {mode:6} standalone p50 {p50a:.3f} p99 {p99a:.3f}; cluster p50 {p50b:.3f} p99 {p99b:.3f}; "
            f"cluster/standalone p50 {p50b / p50a:.2f}x p99 {p99b / p99a:.2f}x "
            f"({len(times['cluster'][mode])} calls each)"
        )


def verify(fixtures: dict[str, list[Fixture]], environments: dict[str, dict[str, str]]) -> bool:
    from django.test.utils import override_settings  # noqa: PLC0415

    from billing.models import Wallet  # noqa: PLC0415
    from billing.selectors import ledger_sum  # noqa: PLC0415
    from billing.services.reconcile import balances_reconcile  # noqa: PLC0415

    clean = True
    for target, rows in fixtures.items():
        env = environments[target]
        cluster = env["REDIS_CLUSTER"] == "1"
        with override_settings(BALANCE_BACKEND="redis", REDIS_URL=env["REDIS_URL"], REDIS_CLUSTER=cluster):
            for fixture in rows:
                wallet = Wallet.objects.get(tenant_id=fixture.tenant_id).balance
                books = wallet == ledger_sum(tenant_id=fixture.tenant_id)
                drift = balances_reconcile(tenant_id=fixture.tenant_id, fix=False)
                if not books or not drift.clean:
                    print(f"FAILED {target} tenant {fixture.tenant_id}: books {books}, drifts {drift.drifts}")
                    clean = False
    print(f"checks: wallet == sum(ledger) and Redis == PostgreSQL on both targets: {'ok' if clean else 'FAILED'}")
    return clean


def report(args: argparse.Namespace, results: dict[str, dict[str, list[Phase]]]) -> None:
    print()
    print(
        f"authorize, standalone Redis vs 3-master Redis Cluster: {args.rounds} paired round(s), {args.duration:.0f} s "
        f"per phase, {args.rate:.0f} req/s offered (check, hold), {args.clients} clients, {args.tenants} tenants "
        f"per target, {args.workers} gunicorn workers, load average {os.getloadavg()[0]:.2f}"
    )
    print("check/hold: open loop at the offered rate; closed: every client as fast as answers come (throughput)")
    print(f"{'round':>5} {'target':10} {'mode':6} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max':>8}")
    for target in TARGETS:
        for mode in MODES:
            for i, p in enumerate(results[target][mode]):
                print(
                    f"{i + 1:5d} {target:10} {mode:6} {p.requests:8d} {p.throughput:8.1f} "
                    f"{p.p50:8.2f} {p.p99:8.2f} {p.worst:8.2f}"
                )
    print("cluster / standalone, medians over the rounds:")
    for mode in MODES:
        ratios = []
        for figure in ("throughput", "p50", "p99"):
            one, many = (statistics.median(getattr(p, figure) for p in results[t][mode]) for t in TARGETS)
            ratios.append(f"{figure} {many / one:.2f}x ({one:.2f} -> {many:.2f})")
        print(f"  {mode:6} " + ", ".join(ratios))


if __name__ == "__main__":
    sys.exit(main())
