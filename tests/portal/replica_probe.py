"""Run by tests/portal/test_read_replica.py in a process of its own, whose DATABASE_URL is a
private PostgreSQL primary and DATABASE_REPLICA_URL its streaming standby (the suite's own
connections stay on the suite's database). Prints one JSON line of what it saw.

With replay paused on the standby, a new event is on the primary only: what the portal reads
from the replica (usage report, dashboard) lags, what it must read on the primary (the
balance, the event itself, the key's authentication) does not. Then replay resumes and the
report catches up.
"""

import json
import sys
import time

import django

django.setup()

import psycopg  # noqa: E402
from django.db import connections, router, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from accounts import services as account_services  # noqa: E402
from infra.db_routing import REPLICA, replica_reads  # noqa: E402
from metering.models import UsageEvent  # noqa: E402
from tests import factories  # noqa: E402

EVENT = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500}


def replica_sql(sql: str) -> object:
    settings = connections[REPLICA].settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"], user=settings["USER"], autocommit=True
    ) as conn:
        return conn.execute(sql).fetchone()[0]


def queries(alias: str, action) -> tuple[object, int]:
    """(what action returned, how many statements ran on alias meanwhile)."""
    statements: list[str] = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connections[alias].execute_wrapper(count):
        result = action()
    return result, len(statements)


def wait_for_replay(expected: int, timeout: float = 20) -> float:
    started = time.monotonic()
    while replica_sql("SELECT count(*) FROM metering_usageevent") != expected:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the replica did not replay {expected} events in {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> None:
    plan = factories.PricePlanFactory(slug="standard")
    factories.PriceFactory(plan=plan, model_pattern="gpt-4o")
    tenant = factories.TenantFactory(slug="acme", price_plan=plan)
    factories.topup(tenant, "10.00")
    _, secret = factories.issue_api_key(tenant)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    user, _ = account_services.user_create(
        email="owner@acme.test", password="correct horse battery staple 42", tenant=tenant, role="owner",
        actor_label="test",
    )  # fmt: skip
    browser = Client()
    browser.force_login(user)
    seen: dict[str, object] = {}

    first = api.post("/api/v1/events", {**EVENT, "request_id": "one"}, format="json")
    assert first.status_code == 201, first.content
    seen["first_replay_seconds"] = wait_for_replay(1)
    (report, on_replica), on_primary = queries(
        "default", lambda: queries(REPLICA, lambda: api.get("/api/v1/usage", {"group_by": "model"}))
    )
    seen["report_queries_on_primary"] = on_primary
    seen["report_before"] = report.json()["results"][0]["requests"]
    seen["report_queries_on_replica"] = on_replica

    replica_sql("SELECT pg_wal_replay_pause()")
    (second, ingest_on_replica) = queries(
        REPLICA, lambda: api.post("/api/v1/events", {**EVENT, "request_id": "two"}, format="json")
    )
    assert second.status_code == 201, second.content
    seen["ingest_queries_on_replica"] = ingest_on_replica
    seen["primary_events"] = UsageEvent.objects.count()
    seen["report_while_paused"] = api.get("/api/v1/usage", {"group_by": "model"}).json()["results"][0]["requests"]
    seen["balance_while_paused"] = api.get("/api/v1/balance").json()["balance"]
    seen["event_detail_while_paused"] = api.get(f"/api/v1/events/{second.json()['id']}").status_code
    (page, dashboard_on_replica), dashboard_on_primary = queries(
        "default", lambda: queries(REPLICA, lambda: browser.get("/t/acme/"))
    )
    seen["dashboard_queries_on_primary"] = dashboard_on_primary
    seen["dashboard_status"] = page.status_code
    seen["dashboard_queries_on_replica"] = dashboard_on_replica
    csv, _ = queries(REPLICA, lambda: browser.get("/t/acme/usage.csv"))
    seen["csv_rows_while_paused"] = len(b"".join(csv.streaming_content).decode().strip().splitlines()) - 1
    with replica_reads():
        seen["write_alias_inside_replica_reads"] = router.db_for_write(UsageEvent)
        seen["read_alias_inside_replica_reads"] = router.db_for_read(UsageEvent)
        with transaction.atomic():
            seen["read_alias_inside_a_transaction"] = router.db_for_read(UsageEvent)
            seen["count_inside_a_transaction"] = UsageEvent.objects.count()
        seen["count_on_replica"] = UsageEvent.objects.count()

    operator, _ = account_services.user_create(
        email="ops@platform.test", password="correct horse battery staple 42", is_staff=True, actor_label="test"
    )
    ops = Client()
    ops.force_login(operator)
    seen["ops_page_while_paused"] = ops.get("/ops/jobs/").content.decode()
    replica_sql("SELECT pg_wal_replay_resume()")
    seen["catch_up_seconds"] = wait_for_replay(2)
    seen["report_after"] = api.get("/api/v1/usage", {"group_by": "model"}).json()["results"][0]["requests"]
    deadline = time.monotonic() + 20
    while not replica_sql("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"):
        assert time.monotonic() < deadline, "the replica's replay did not catch up"
        time.sleep(0.01)
    seen["ops_page_after"] = ops.get("/ops/jobs/").content.decode()
    print(json.dumps(seen))
    print(
        f"dashboard: {seen['dashboard_queries_on_replica']} statements on the replica, "
        f"{seen['dashboard_queries_on_primary']} on the primary; GET /usage: {seen['report_queries_on_replica']} "
        f"on the replica, {seen['report_queries_on_primary']} on the primary; first replay "
        f"{seen['first_replay_seconds']:.3f} s, catch-up after the pause {seen['catch_up_seconds']:.3f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
