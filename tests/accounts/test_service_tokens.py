"""A service token acts only through the tenant key it names, and only for that key's tenant."""

import pytest

from accounts import services
from billing.models import Hold, LedgerEntry
from metering.models import UsageEvent
from tests import factories
from tests.assertions import assert_charged_once
from tests.conftest import Credential
from tests.factories import EventBodyFactory, issue_api_key, issue_service_token

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ref", ["id", "id-string", "full-key"])
def test_service_token_names_the_key_by_id_or_full_key(service, key_a, tenant_a, ref):
    named = {"id": key_a.row.pk, "id-string": str(key_a.row.pk), "full-key": key_a.secret}[ref]
    response = service.post("/api/v1/events", EventBodyFactory(api_key=named))
    assert response.status_code == 201, response.content
    assert response.json()["api_key_id"] == key_a.row.pk
    stored = UsageEvent.objects.get(pk=response.json()["id"])
    assert (stored.tenant_id, stored.api_key_id) == (tenant_a.pk, key_a.row.pk)
    assert_charged_once(tenant_a)


def test_retry_naming_the_key_another_way_is_a_duplicate(service, key_a, tenant_a):
    body = EventBodyFactory(api_key=key_a.row.pk)
    first = service.post("/api/v1/events", body)
    second = service.post("/api/v1/events", {**body, "api_key": key_a.secret})
    third = service.post("/api/v1/events", {**body, "api_key": str(key_a.row.pk)})
    assert first.status_code == 201
    assert (second.status_code, third.status_code) == (200, 200)
    assert second.json()["id"] == third.json()["id"] == first.json()["id"]
    assert_charged_once(tenant_a)


def test_the_key_itself_posting_the_same_event_is_a_duplicate(service, key_a, tenant_a):
    body = EventBodyFactory()
    assert service.post("/api/v1/events", {**body, "api_key": key_a.row.pk}).status_code == 201
    replay = key_a.post("/api/v1/events", body)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True


def test_same_request_id_for_another_key_of_the_tenant_conflicts(service, key_a, tenant_a):
    other, _ = issue_api_key(tenant_a, name="other")
    body = EventBodyFactory()
    assert service.post("/api/v1/events", {**body, "api_key": key_a.row.pk}).status_code == 201
    response = service.post("/api/v1/events", {**body, "api_key": other.pk})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_id_conflict"


def test_service_token_must_name_a_key(service):
    response = service.post("/api/v1/events", EventBodyFactory())
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "api_key"}
    usage = service.get("/api/v1/usage")
    assert usage.status_code == 400
    assert usage.json()["error"]["code"] == "api_key_required"


@pytest.mark.parametrize("ref", [999_999, "999999", "tbk_abcdefghijkm_not-a-real-secret", "garbage"])
def test_unknown_named_key(service, ref):
    response = service.post("/api/v1/events", EventBodyFactory(api_key=ref))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_api_key"
    assert response.json()["error"]["details"] == {"field": "api_key"}
    batch = service.post("/api/v1/events/batch", {"events": [EventBodyFactory(api_key=ref)]})
    (item,) = batch.json()["results"]
    assert item["status"] == "rejected"
    assert (item["error"]["code"], item["error"]["field"]) == ("unknown_api_key", "api_key")
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("ref", [True, 1.5, ["x"], {"id": 1}])
def test_named_key_of_the_wrong_type(service, ref):
    response = service.post("/api/v1/events", EventBodyFactory(api_key=ref))
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "api_key"}


def test_revoked_named_key_is_refused(service, key_a, tenant_a):
    services.api_key_revoke(api_key=key_a.row, actor_label="test")
    response = service.post("/api/v1/events", EventBodyFactory(api_key=key_a.row.pk))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_revoked"
    batch = service.post("/api/v1/events/batch", {"events": [EventBodyFactory(api_key=key_a.secret)]})
    (item,) = batch.json()["results"]
    assert item["status"] == "rejected"
    assert (item["error"]["code"], item["error"]["field"]) == ("key_revoked", "api_key")
    usage = service.get("/api/v1/usage", {"api_key": key_a.row.pk})
    assert usage.status_code == 403
    assert UsageEvent.objects.count() == 0
    assert not LedgerEntry.objects.exists()


def test_named_key_of_a_suspended_tenant_is_refused(service, key_a, tenant_a):
    tenant_a.status = "suspended"
    tenant_a.save(update_fields=["status"])
    response = service.post("/api/v1/events", EventBodyFactory(api_key=key_a.row.pk))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"


def test_one_batch_for_two_tenants_stores_and_charges_each(service, key_a, key_b, tenant_a, tenant_b):
    events = [
        EventBodyFactory(request_id="same", api_key=key_a.row.pk),
        EventBodyFactory(request_id="same", api_key=key_b.row.pk),
        EventBodyFactory(api_key=key_b.secret),
        EventBodyFactory(api_key=999_999),
    ]
    response = service.post("/api/v1/events/batch", {"events": events})
    body = response.json()
    assert [item["status"] for item in body["results"]] == ["accepted", "accepted", "accepted", "rejected"]
    assert set(UsageEvent.objects.filter(tenant=tenant_a).values_list("request_id", flat=True)) == {"same"}
    assert UsageEvent.objects.filter(tenant=tenant_b).count() == 2
    assert_charged_once(tenant_a)
    assert_charged_once(tenant_b, events=2)


def test_service_token_reads_only_the_named_keys_tenant(service, key_a, key_b):
    key_a.post("/api/v1/events", EventBodyFactory(model="gpt-4o"))
    key_b.post("/api/v1/events", EventBodyFactory(model="gpt-4o-mini"))
    response = service.get("/api/v1/usage", {"api_key": key_b.row.pk, "group_by": "model"})
    assert response.status_code == 200
    assert [row["group"] for row in response.json()["results"]] == ["gpt-4o-mini"]


def test_revoked_service_token(key_a):
    token, secret = issue_service_token("old-gateway")
    token.revoked_at = token.created_at
    token.save(update_fields=["revoked_at"])
    response = Credential(token, secret).post("/api/v1/events", EventBodyFactory(api_key=key_a.row.pk))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "token_revoked"


# --- A named key's scopes bind the service token (api.views.resolve_named_key) ---------


@pytest.fixture
def reader_key(tenant_a):
    return Credential(*issue_api_key(tenant_a, scopes=["read"], name="reader"))


@pytest.fixture
def writer_key(tenant_a):
    return Credential(*issue_api_key(tenant_a, scopes=["ingest"], name="writer"))


def _scope_error(response, scope: str) -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert scope in error["message"]


@pytest.mark.parametrize("ref", ["id", "full-key"])
def test_ingest_naming_a_read_only_key_is_insufficient_scope(service, reader_key, tenant_a, ref):
    named = reader_key.row.pk if ref == "id" else reader_key.secret
    _scope_error(service.post("/api/v1/events", EventBodyFactory(api_key=named)), "ingest")
    _scope_error(reader_key.post("/api/v1/events", EventBodyFactory()), "ingest")  # the key itself: the same
    batch = service.post("/api/v1/events/batch", {"events": [EventBodyFactory(api_key=named)]})
    assert batch.status_code == 200
    (item,) = batch.json()["results"]
    assert item["status"] == "rejected"
    assert (item["error"]["code"], item["error"]["field"]) == ("insufficient_scope", "api_key")
    assert UsageEvent.objects.count() == 0
    assert not LedgerEntry.objects.filter(kind="usage").exists()


def test_ingest_naming_an_ingest_key_is_accepted(service, writer_key, tenant_a):
    response = service.post("/api/v1/events", EventBodyFactory(api_key=writer_key.row.pk))
    assert response.status_code == 201, response.content
    assert UsageEvent.objects.get().api_key_id == writer_key.row.pk
    assert_charged_once(tenant_a)


def test_reads_naming_an_ingest_only_key_are_insufficient_scope(service, writer_key, reader_key):
    event = service.post("/api/v1/events", EventBodyFactory(api_key=writer_key.row.pk)).json()
    named = {"api_key": writer_key.row.pk}
    for path in ("/api/v1/usage", "/api/v1/balance", "/api/v1/invoices", f"/api/v1/events/{event['id']}"):
        _scope_error(service.get(path, named), "read")
        _scope_error(writer_key.get(path), "read")  # the key itself: the same
        assert service.get(path, {"api_key": reader_key.row.pk}).status_code == 200, path


def test_authorize_naming_a_read_only_key_is_insufficient_scope(service, reader_key, writer_key, tenant_a):
    """/authorize needs ingest from a tenant key; a service token is held to the named key's."""
    factories.topup(tenant_a, "1.00")
    body = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}
    _scope_error(reader_key.post("/api/v1/authorize", body), "ingest")
    _scope_error(service.post("/api/v1/authorize", {**body, "api_key": reader_key.row.pk}), "ingest")
    _scope_error(service.post("/api/v1/authorize", {**body, "api_key": reader_key.secret, "hold": True}), "ingest")
    assert not Hold.objects.exists()
    allowed = service.post("/api/v1/authorize", {**body, "api_key": writer_key.row.pk})
    assert allowed.status_code == 200, allowed.content
    assert allowed.json()["allowed"] is True
