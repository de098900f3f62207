"""Round trips to PostgreSQL per single-event ingest: most of the hot path's latency.

Read off libpq's own protocol trace of the connection that serves the request, so the figure is
what travelled, whatever the code in between does. A round trip is a run of messages the client
sends before it reads the server's next answer.
"""

import tempfile
from contextlib import contextmanager

import pytest
from django.db import connection
from psycopg.pq import Trace

from billing.models import LedgerEntry
from metering.models import UsageEvent
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)  # the request's transaction is the outermost


@contextmanager
def protocol_trace():
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield lines
        finally:
            pgconn.untrace()
            trace.seek(0)
            lines.extend(trace.read().splitlines())


def round_trips(lines: list[str]) -> int:
    sides = [line.split("\t", 1)[0] for line in lines]
    return sum(1 for index, side in enumerate(sides) if side == "F" and (index == 0 or sides[index - 1] == "B"))


def _event(request_id: str) -> dict:
    return {"request_id": request_id, "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200}


def test_a_single_event_costs_three_round_trips(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    for n in range(6):  # past the first use's bookkeeping and psycopg's prepare threshold
        assert key_a.post("/api/v1/events", _event(f"warm-{n}")).status_code == 201
    with protocol_trace() as lines:
        response = key_a.post("/api/v1/events", _event("measured"))
    assert response.status_code == 201, response.content
    # The key lookup; the event insert (BEGIN and the balance lock ride with it); the money and
    # quota writes sent with COMMIT, which collects their answers.
    assert round_trips(lines) == 3, "\n".join(lines)
    assert UsageEvent.objects.filter(tenant=tenant_a, request_id="measured").count() == 1
    assert LedgerEntry.objects.filter(tenant=tenant_a, kind="usage").count() == 7
