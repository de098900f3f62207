"""API keys: only hashes are stored; unknown, revoked, suspended and out-of-scope keys are refused."""

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts import services
from metering.models import UsageEvent
from tests.conftest import Credential
from tests.factories import EventBodyFactory, issue_api_key

pytestmark = pytest.mark.django_db


def _all_text(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # a fixed table name from the test
        return "\n".join(repr(row) for row in cursor.fetchall())


def test_only_hashes_are_stored(key_a, service):
    key_a.post("/api/v1/events", EventBodyFactory())  # also touches last_used_at
    keys = _all_text("accounts_apikey")
    assert key_a.row.prefix in keys
    secret_part = key_a.secret.rsplit("_", 1)[-1]
    for table in ("accounts_apikey", "accounts_servicetoken", "accounts_auditlog", "metering_usageevent"):
        text = _all_text(table)
        assert key_a.secret not in text, table
        assert secret_part not in text, table
        assert service.secret not in text, table
        assert service.secret.split("_", 2)[2] not in text, table
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_hash FROM accounts_apikey WHERE id = %s", [key_a.row.pk])
        (stored_hash,) = cursor.fetchone()
    assert len(stored_hash) == 64
    assert stored_hash != key_a.secret


def _assert_401(response):
    assert response.status_code == 401, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tbk_abcdefghijkm_unknownsecretunknownsecretunknownsecret",
        "Bearer garbage",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token tbk_abcdefghijkm_x",
    ],
)
def test_unknown_or_malformed_credentials_are_401(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    _assert_401(client.post("/api/v1/events", EventBodyFactory(), format="json"))
    _assert_401(client.get("/api/v1/usage"))


def test_missing_header_is_401(anonymous):
    _assert_401(anonymous.post("/api/v1/events", EventBodyFactory(), format="json"))
    _assert_401(anonymous.get("/api/v1/usage"))


def test_right_prefix_wrong_secret_is_401(key_a):
    forged = key_a.secret[:-4] + ("AAAA" if not key_a.secret.endswith("AAAA") else "BBBB")
    _assert_401(Credential(key_a.row, forged).post("/api/v1/events", EventBodyFactory()))


def test_revoked_key_is_403_key_revoked(key_a):
    assert services.api_key_revoke(api_key=key_a.row, actor_label="test") is True
    for response in (key_a.post("/api/v1/events", EventBodyFactory()), key_a.get("/api/v1/usage")):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "key_revoked"
    assert UsageEvent.objects.count() == 0


def test_suspended_tenant_is_403(key_a, tenant_a):
    tenant_a.status = "suspended"
    tenant_a.save(update_fields=["status"])
    response = key_a.post("/api/v1/events/batch", {"events": [EventBodyFactory()]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/events", EventBodyFactory.build),
        ("post", "/api/v1/events/batch", lambda: {"events": [EventBodyFactory()]}),
        ("post", "/api/v1/tokenize", lambda: {"model": "gpt-4o", "text": "hi"}),
    ],
)
def test_read_only_key_cannot_ingest(tenant_a, method, path, body):
    reader = Credential(*issue_api_key(tenant_a, scopes=["read"]))
    response = getattr(reader, method)(path, body())
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert error["details"]["required_scope"] == "ingest"
    assert UsageEvent.objects.count() == 0


def test_read_only_key_reads_usage(key_a, tenant_a):
    key_a.post("/api/v1/events", EventBodyFactory())
    reader = Credential(*issue_api_key(tenant_a, scopes=["read"]))
    response = reader.get("/api/v1/usage", {"group_by": "model"})
    assert response.status_code == 200
    assert response.json()["results"][0]["requests"] == 1


def test_ingest_only_key_cannot_read(tenant_a):
    writer = Credential(*issue_api_key(tenant_a, scopes=["ingest"]))
    assert writer.post("/api/v1/events", EventBodyFactory()).status_code == 201
    response = writer.get("/api/v1/usage")
    assert response.status_code == 403
    assert response.json()["error"]["details"]["required_scope"] == "read"


def test_key_use_is_recorded(key_a):
    assert key_a.row.last_used_at is None
    key_a.post("/api/v1/events", EventBodyFactory())
    key_a.row.refresh_from_db()
    assert key_a.row.last_used_at is not None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/events", ["not", "an", "object"]),
        ("/api/v1/events/batch", {"events": []}),
        ("/api/v1/events/batch", {"events": [{}] * 1001}),
    ],
)
def test_scope_is_checked_before_the_body(tenant_a, path, body):
    reader = Credential(*issue_api_key(tenant_a, scopes=["read"]))
    response = reader.post(path, body)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_wrong_method_is_405_in_the_error_shape(key_a):
    response = key_a.get("/api/v1/events")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
