"""POST /api/v1/authorize: verify the key, price the estimate, check balance and hard quotas.

Every test runs on both balance backends (Redis + PostgreSQL, and PostgreSQL alone).
"""

from decimal import Decimal

import pytest

from accounts.models import Tenant
from accounts.services import api_key_revoke
from billing.models import Hold, LedgerEntry, Quota, Wallet
from billing.selectors import ledger_sum
from billing.services.quotas import quota_create
from metering.models import UsageEvent
from tests import factories
from tests.conftest import Credential

pytestmark = pytest.mark.django_db

# gpt-4o in conftest's plan: 2.5 per 1M input, 10 per 1M output.
# 1000 in + 500 out = 0.0025 + 0.005 = 0.0075
BODY = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}
ESTIMATE = Decimal("0.0075")


def authorize(cred: Credential, **overrides):
    return cred.post("/api/v1/authorize", {**BODY, **overrides})


def test_allowed_shape(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    response = authorize(key_a)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "allowed": True,
        "tenant": "acme",
        "api_key_id": key_a.row.pk,
        "balance": "10.00",
        "currency": "USD",
        "estimated_cost": "0.0075",
        "estimated_tokens": 1500,
        "priced": True,
        "quotas": [],
    }
    assert Hold.objects.count() == 0  # a check reserves nothing


def test_insufficient_balance_is_402_with_details(backend, key_a, tenant_a):
    factories.topup(tenant_a, "0.005")
    response = authorize(key_a)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_balance"
    assert error["details"] == {
        "limit": "balance",
        "balance": "0.005",
        "remaining": "0.005",
        "requested": "0.0075",
        "currency": "USD",
    }
    assert "Top up" in error["message"]


def test_no_wallet_at_all_is_402(backend, key_a):
    response = authorize(key_a)
    assert response.status_code == 402
    assert response.json()["error"]["details"]["balance"] == "0.00"


def test_estimate_exactly_the_balance_is_allowed(backend, key_a, tenant_a):
    factories.topup(tenant_a, "0.0075")
    assert authorize(key_a).status_code == 200
    assert authorize(key_a, hold=True, request_id="r1").status_code == 200
    assert authorize(key_a, hold=True, request_id="r2").status_code == 402


def test_hold_reserves_the_estimate_in_the_ledger(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    response = authorize(key_a, hold=True, request_id="call-1")
    assert response.status_code == 200, response.content
    body = response.json()
    hold = Hold.objects.get()
    assert body["hold_id"] == hold.pk
    assert body["hold"]["amount"] == "0.0075" and body["hold"]["created"] is True
    assert body["balance"] == "0.9925"
    assert body["request_id"] == "call-1"
    assert hold.status == Hold.Status.OPEN and hold.amount == ESTIMATE and hold.estimated_tokens == 1500
    assert hold.api_key_id == key_a.row.pk and hold.model == "gpt-4o"
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.HOLD)
    assert entry.amount == -ESTIMATE and entry.idempotency_key == f"hold:{hold.pk}"
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk) == Decimal("0.9925")


def test_repeated_hold_for_one_request_is_one_hold(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    first = authorize(key_a, hold=True, request_id="same").json()
    second = authorize(key_a, hold=True, request_id="same")
    assert second.status_code == 200
    assert second.json()["hold_id"] == first["hold_id"]
    assert second.json()["hold"]["created"] is False
    assert Hold.objects.count() == 1
    assert ledger_sum(tenant_id=tenant_a.pk) == Decimal("1.00") - ESTIMATE


def test_hold_needs_a_request_id(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    response = authorize(key_a, hold=True)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request_id_required"


def test_hold_for_a_settled_request_id_is_409(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    authorize(key_a, hold=True, request_id="done")
    key_a.post("/api/v1/events", {"request_id": "done", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5})
    response = authorize(key_a, hold=True, request_id="done")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_id_used"


def test_unpriced_model_is_a_clear_422(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    response = authorize(key_a, model="mystery-model")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "model_not_priced"
    assert "mystery-model" in error["message"]
    assert error["details"] == {"model": "mystery-model", "plan": "standard"}


def test_unpriced_model_allowed_by_the_plan_costs_nothing(backend, key_a, tenant_a, plan):
    plan.allow_unpriced_models = True
    plan.save()
    response = authorize(key_a, model="mystery-model", hold=True, request_id="u1")
    assert response.status_code == 200, response.content
    assert response.json()["priced"] is False
    assert response.json()["estimated_cost"] == "0.00"
    assert Hold.objects.get().amount == 0
    assert not LedgerEntry.objects.filter(kind="hold").exists()


def test_glob_priced_model(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    response = authorize(key_a, model="gpt-4o-mini-2024", estimated_input_tokens=1_000_000, max_output_tokens=0)
    assert response.status_code == 200
    assert response.json()["estimated_cost"] == "0.15"


def test_estimate_rounds_up_to_the_micro_unit(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    # 1 input token x 0.15 / 1M = 0.00000015 -> 0.000001
    response = authorize(key_a, model="gpt-4o-mini", estimated_input_tokens=1, max_output_tokens=0)
    assert response.json()["estimated_cost"] == "0.000001"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("estimated_input_tokens", -1, "invalid_field"),
        ("estimated_input_tokens", 1.5, "invalid_field"),
        ("max_output_tokens", True, "invalid_field"),
        ("max_output_tokens", None, "missing_field"),
        ("model", "", "invalid_field"),
        ("hold", "yes", "invalid_field"),
        ("request_id", " x", "invalid_field"),
        ("surprise", 1, "unknown_field"),
    ],
)
def test_bad_bodies_are_400(backend, key_a, tenant_a, field, value, code):
    response = authorize(key_a, **{field: value})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code


def test_unknown_credential_is_401(backend, anonymous):
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer tbk_aaaaaaaaaaaa_nope")
    response = anonymous.post("/api/v1/authorize", BODY, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_revoked_key_is_403(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    api_key_revoke(api_key=key_a.row, actor_label="test")
    response = authorize(key_a)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_revoked"


def test_suspended_tenant_is_403(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    Tenant.objects.filter(pk=tenant_a.pk).update(status=Tenant.Status.SUSPENDED)
    response = authorize(key_a)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"


def test_key_without_ingest_scope_is_403(backend, tenant_a):
    factories.topup(tenant_a, "1.00")
    reader = Credential(*factories.issue_api_key(tenant_a, scopes=["read"]))
    assert authorize(reader).status_code == 403


def test_service_token_names_the_customer_key(backend, service, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    by_secret = authorize(service, api_key=key_a.secret)
    assert by_secret.status_code == 200
    assert by_secret.json()["tenant"] == "acme" and by_secret.json()["api_key_id"] == key_a.row.pk
    by_id = authorize(service, api_key=key_a.row.pk, hold=True, request_id="gw-1")
    assert by_id.status_code == 200
    assert Hold.objects.get().api_key_id == key_a.row.pk


def test_service_token_with_unknown_customer_key_is_401(backend, service):
    assert authorize(service, api_key="tbk_aaaaaaaaaaaa_nope").status_code == 401
    assert authorize(service, api_key=999_999).status_code == 401
    response = authorize(service)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "api_key_required"


def test_service_token_with_revoked_customer_key_is_403(backend, service, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    api_key_revoke(api_key=key_a.row, actor_label="test")
    response = authorize(service, api_key=key_a.secret)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_revoked"


def test_tenant_key_cannot_name_another_key(backend, key_a, key_b):
    response = authorize(key_a, api_key=key_b.secret)
    assert response.status_code == 400


# --- Quotas -------------------------------------------------------------------------------------


def test_hard_token_quota_refuses_with_details(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    quota = quota_create(
        tenant=tenant_a, api_key=key_a.row, metric="tokens", window="day", limit=Decimal(2000), actor_label="t"
    )
    first = authorize(key_a, hold=True, request_id="q1")
    assert first.status_code == 200
    [state] = first.json()["quotas"]
    assert state["id"] == quota.pk and state["held"] == 1500 and state["remaining"] == 500
    assert state["scope"] == "api_key" and state["limit"] == 2000
    second = authorize(key_a)
    assert second.status_code == 402
    error = second.json()["error"]
    assert error["code"] == "quota_exceeded"
    details = error["details"]
    assert details["limit"] == "quota" and details["quota_id"] == quota.pk
    assert (details["metric"], details["window"], details["scope"]) == ("tokens", "day", "api_key")
    assert (details["quota_limit"], details["used"], details["held"], details["remaining"]) == (2000, 0, 1500, 500)
    assert details["requested"] == 1500 and details["currency"] == "USD"
    assert int(second["Retry-After"]) > 0
    assert details["period_end"] is not None


def test_settled_usage_counts_against_the_quota(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(3000), actor_label="t")
    key_a.post("/api/v1/events", {"request_id": "e1", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 600})
    response = authorize(key_a)
    assert response.status_code == 402  # 1600 used + 1500 wanted > 3000
    assert response.json()["error"]["details"]["used"] == 1600
    assert authorize(key_a, max_output_tokens=400).status_code == 200  # 1600 + 1400 = 3000


def test_money_quota(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    quota_create(tenant=tenant_a, metric="money", window="lifetime", limit=Decimal("0.01"), actor_label="t")
    assert authorize(key_a, hold=True, request_id="m1").status_code == 200
    response = authorize(key_a)
    assert response.status_code == 402
    details = response.json()["error"]["details"]
    assert details["metric"] == "money" and details["quota_limit"] == "0.010000"
    assert details["remaining"] == "0.002500" and details["requested"] == "0.0075"
    assert details["period_end"] is None
    assert "Retry-After" not in response


def test_soft_quota_only_reports(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    quota_create(tenant=tenant_a, metric="tokens", window="day", limit=Decimal(10), enforcement="soft", actor_label="t")
    response = authorize(key_a, hold=True, request_id="s1")  # 1500 tokens against a soft limit of 10
    assert response.status_code == 200
    [state] = response.json()["quotas"]
    assert state["enforcement"] == "soft" and state["held"] == 1500 and state["remaining"] == 0


def test_other_keys_quota_does_not_apply(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    other, _ = factories.issue_api_key(tenant_a, name="other")
    quota_create(tenant=tenant_a, api_key=other, metric="tokens", window="day", limit=Decimal(1), actor_label="t")
    response = authorize(key_a)
    assert response.status_code == 200
    assert response.json()["quotas"] == []


def test_quota_and_balance_of_another_tenant_are_invisible(backend, key_a, key_b, tenant_a, tenant_b):
    factories.topup(tenant_a, "10.00")
    quota_create(tenant=tenant_b, metric="tokens", window="day", limit=Decimal(1), actor_label="t")
    assert authorize(key_a).status_code == 200
    assert authorize(key_b).status_code == 402


# --- The hold settles with the usage event ---------------------------------------------------------


def test_event_settles_its_hold(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    authorize(key_a, hold=True, request_id="call-9")
    event = key_a.post(
        "/api/v1/events", {"request_id": "call-9", "model": "gpt-4o", "input_tokens": 800, "output_tokens": 100}
    )
    assert event.status_code == 201
    hold = Hold.objects.get()
    cost = Decimal("0.003")  # 800 x 2.5 + 100 x 10, per 1M
    assert hold.status == Hold.Status.SETTLED and hold.settled_amount == cost and hold.overage == 0
    release = LedgerEntry.objects.get(kind="release")
    assert release.amount == ESTIMATE and release.idempotency_key == f"release:{hold.pk}"
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk) == Decimal("1.00") - cost
    assert UsageEvent.objects.get().cost == cost
    balance = key_a.get("/api/v1/balance").json()
    assert balance["balance"] == "0.997" and balance["holds"] == [] and balance["held"] == "0.00"


def test_quota_list_is_ordered_tenant_first(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    mine = quota_create(tenant=tenant_a, api_key=key_a.row, metric="money", window="day", limit=5, actor_label="t")
    wide = quota_create(tenant=tenant_a, metric="tokens", window="lifetime", limit=10**9, actor_label="t")
    ids = [q["id"] for q in authorize(key_a).json()["quotas"]]
    assert set(ids) == {mine.pk, wide.pk}
    assert Quota.objects.count() == 2
