"""The OpenAPI description fuzzed against the real server: every operation of /api/schema/.

gunicorn serves portal.wsgi as deployed (DEBUG off, bench/benchserver.py's starter) on a
loopback port, over the test database and the test Redis db. schemathesis loads the schema
from that server and sends each operation a bounded number of generated requests, valid and
invalid, with a tenant API key that holds both scopes (funded wallet, price plan, an event,
an invoice), then again with a service token that names that key. Every answer must be
documented: no 5xx, a status code the operation declares, a body and headers that match its
schema.
"""

import datetime as dt
import os
import sys
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import schemathesis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from tests import factories

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from benchserver import start_server  # noqa: E402 - bench/ is not a package

pytestmark = [pytest.mark.slow]

# Per operation, generation mode (valid, invalid) and credential: enough to reach every
# validation branch, and a time budget per credential that keeps both runs well under three
# minutes on a busy two-core machine (a slow machine sends fewer, never fewer than MIN_EXAMPLES).
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
MIN_EXAMPLES = 5
BUDGET_SECONDS = float(os.environ.get("API_FUZZ_SECONDS", "70"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def _database_url() -> str:
    """The test database pytest-django created, as a DATABASE_URL for the server process."""
    db = connection.settings_dict
    auth = urllib.parse.quote(db["USER"] or "")
    if db["PASSWORD"]:
        auth += ":" + urllib.parse.quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def world(transactional_db, plan):
    """Committed rows the server process can see: a funded tenant, its key, an event, an invoice."""
    from invoicing.services import invoice_draft_refresh  # noqa: PLC0415
    from metering.services.ingest import usage_record_batch  # noqa: PLC0415

    tenant = factories.TenantFactory(slug="fuzz", price_plan=plan)
    key, secret = factories.issue_api_key(tenant)
    factories.topup(tenant, "1000", reference="fuzz")
    _, service_secret = factories.issue_service_token()
    recorded = usage_record_batch(
        raw_events=[{"request_id": "fuzz-seed", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}],
        api_key=key,
    )
    today = timezone.now().astimezone(dt.UTC)
    invoice, _ = invoice_draft_refresh(tenant=tenant, year=today.year, month=today.month)
    assert invoice is not None
    return SimpleNamespace(
        key=key,
        secret=secret,
        service_secret=service_secret,
        event_id=recorded.items[0].event_id,
        invoice_id=invoice.pk,
    )


@pytest.fixture
def live_api(world):
    """gunicorn on a free loopback port over the test database; stopped before the flush."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # this test run's own Redis db
    server_args = SimpleNamespace(workers=2, worker_class="sync", threads=1)
    server = start_server(server_args, database_url=_database_url(), name="fuzz")
    yield f"http://127.0.0.1:{server.port}"
    server.stop()
    problems = [line for line in server.log_path.read_text().splitlines() if "Traceback" in line]
    server.log_path.unlink(missing_ok=True)
    assert not problems, f"the server logged tracebacks: {problems[:3]}"


def _schema(base_url: str, token: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"base-url": base_url, "headers": {"Authorization": f"Bearer {token}"}, "request-timeout": 30}
    )
    return schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json", config=config, timeout=30)


def _aim(case: schemathesis.Case, world: SimpleNamespace, *, service: bool) -> None:
    """Point a valid request at the fuzzed tenant's rows: its event and invoice ids, and for a
    service token the key to act for, so it reaches past the lookups (invalid requests keep
    whatever was generated)."""
    for name, row_id in (("event_id", world.event_id), ("id", world.invoice_id)):
        if isinstance(case.path_parameters, dict) and name in case.path_parameters:
            case.path_parameters[name] = row_id
    if not service:
        return
    if isinstance(case.query, dict) and "api_key" in case.query:
        case.query["api_key"] = str(world.key.pk)
    body = case.body if isinstance(case.body, dict) else {}
    events = body.get("events") if isinstance(body.get("events"), list) else []
    for item in [body, *events]:
        if isinstance(item, dict) and "api_key" in item:
            item["api_key"] = world.key.pk


def _fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    *,
    headers: dict[str, str],
    seconds: float,
    world: SimpleNamespace,
    service: bool,
) -> None:
    """One operation in one generation mode: at least MIN_EXAMPLES requests, then as many of
    MAX_EXAMPLES as `seconds` allows. Raises what schemathesis found."""
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    stop_at = time.monotonic() + seconds
    state = {"sent": 0, "failed": False}

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ_SETTINGS
    def run(case: schemathesis.Case) -> None:
        # Out of time: the remaining examples pass without a request, unless this operation
        # already failed (hypothesis then replays and shrinks the failure, which must repeat).
        if state["sent"] >= MIN_EXAMPLES and time.monotonic() > stop_at and not state["failed"]:
            return
        state["sent"] += 1
        if mode is GenerationMode.POSITIVE and state["sent"] % 2:
            _aim(case, world, service=service)
        try:
            case.call_and_validate(headers=headers, checks=checks)
        except BaseException:
            state["failed"] = True
            raise

    run()


def _fuzz(schema: schemathesis.BaseSchema, token: str, *, world: SimpleNamespace, service: bool) -> list[str]:
    """Every operation, valid then invalid inputs, each in an equal share of BUDGET_SECONDS;
    the failures of all operations, not just the first."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11, [op.label for op in operations]
    share = BUDGET_SECONDS / (2 * len(operations))
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(
                    operation,
                    mode,
                    headers={"Authorization": f"Bearer {token}"},
                    seconds=share,
                    world=world,
                    service=service,
                )
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures are reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("API_FUZZ_RANDOM") != "1",  # 1: explore new inputs (a local run)
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_every_operation_answers_as_documented_for_a_tenant_key(live_api, world):
    failures = _fuzz(_schema(live_api, world.secret), world.secret, world=world, service=False)
    assert not failures, "\n\n".join(failures)


def test_every_operation_answers_as_documented_for_a_service_token(live_api, world):
    failures = _fuzz(_schema(live_api, world.service_secret), world.service_secret, world=world, service=True)
    assert not failures, "\n\n".join(failures)
