"""Usage stamped before a model's first price is charged: a first version applies from the
beginning (docs/billing-rules.md section 4), later versions from their own date, and events
already rated keep their price."""

import datetime as dt
import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from billing.models import LedgerEntry, Price
from billing.services.pricing import PRICED_FROM_BEGINNING, price_add
from metering.models import UsageEvent
from tests.factories import EventBodyFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("any_past_timestamp")]

MODEL = "acme-chat-1"
# 1000 input x 2 + 500 output x 8 per 1M tokens (the first version); 1000 x 4 + 500 x 16 (the second)
FIRST_COST = Decimal("0.006")
SECOND_COST = Decimal("0.012")


def _catalog(tmp_path, *, input_cost: float, output_cost: float) -> str:
    entry = {"mode": "chat", "input_cost_per_token": input_cost, "output_cost_per_token": output_cost}
    path = tmp_path / f"catalog-{input_cost}.json"
    path.write_text(json.dumps({MODEL: entry}))
    return str(path)


def _import(path: str, *args: str) -> str:
    out = StringIO()
    call_command("import_prices", path, "--plan", "standard", *args, stdout=out)
    return out.getvalue()


def _post(cred, days_ago: float) -> dict:
    when = timezone.now() - dt.timedelta(days=days_ago)
    body = EventBodyFactory(model=MODEL, timestamp=when.isoformat())
    response = cred.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_a_fresh_import_prices_usage_stamped_before_it(key_a, tenant_a, plan, tmp_path):
    output = _import(_catalog(tmp_path, input_cost=2e-06, output_cost=8e-06))
    assert "1 first versions effective from 2000-01-01T00:00:00+00:00" in output
    (price,) = Price.objects.filter(plan=plan, model_pattern=MODEL)
    assert price.effective_from == PRICED_FROM_BEGINNING

    two_days = _post(key_a, 2)
    long_ago = _post(key_a, 300)
    for body in (two_days, long_ago):
        assert body["priced"] is True
        assert Decimal(body["cost"]) == FIRST_COST
    assert set(UsageEvent.objects.values_list("price_id", flat=True)) == {price.pk}
    charged = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage").values_list("amount", flat=True)
    assert sum(charged) == -2 * FIRST_COST


def test_a_later_version_applies_from_its_date_and_rated_events_keep_their_price(key_a, plan, tmp_path):
    _import(_catalog(tmp_path, input_cost=2e-06, output_cost=8e-06))
    before = [_post(key_a, 2), _post(key_a, 300)]

    since = (timezone.now() - dt.timedelta(days=10)).replace(microsecond=0)
    output = _import(_catalog(tmp_path, input_cost=4e-06, output_cost=1.6e-05), "--effective-from", since.isoformat())
    assert "first versions" not in output
    first, second = Price.objects.filter(plan=plan, model_pattern=MODEL).order_by("effective_from")
    assert (first.effective_from, second.effective_from) == (PRICED_FROM_BEGINNING, since)

    # No re-rating: the events already stored keep the cost and price they were rated with.
    for body in before:
        stored = UsageEvent.objects.get(pk=body["id"])
        assert (stored.cost, stored.price_id) == (FIRST_COST, first.pk)
    assert Decimal(_post(key_a, 5)["cost"]) == SECOND_COST
    assert Decimal(_post(key_a, 20)["cost"]) == FIRST_COST


def test_a_changed_price_without_a_date_starts_now(key_a, plan, tmp_path):
    _import(_catalog(tmp_path, input_cost=2e-06, output_cost=8e-06))
    started = timezone.now()
    _import(_catalog(tmp_path, input_cost=4e-06, output_cost=1.6e-05))
    second = Price.objects.filter(plan=plan, model_pattern=MODEL).latest("effective_from")
    assert second.effective_from >= started
    assert Decimal(_post(key_a, 1)["cost"]) == FIRST_COST


def test_effective_from_is_honoured_for_a_first_version(key_a, plan, tmp_path):
    since = (timezone.now() - dt.timedelta(days=1)).replace(microsecond=0)
    _import(_catalog(tmp_path, input_cost=2e-06, output_cost=8e-06), "--effective-from", since.isoformat())
    (price,) = Price.objects.filter(plan=plan, model_pattern=MODEL)
    assert price.effective_from == since
    assert _post(key_a, 2)["priced"] is False
    assert Decimal(_post(key_a, 0.5)["cost"]) == FIRST_COST


def test_price_add_without_a_date(key_a, tenant_a, plan):
    first = price_add(plan=plan, model_pattern=MODEL, input_per_mtok=Decimal(2), output_per_mtok=Decimal(8))
    assert first.effective_from == PRICED_FROM_BEGINNING
    assert Decimal(_post(key_a, 300)["cost"]) == FIRST_COST

    started = timezone.now()
    second = price_add(plan=plan, model_pattern=MODEL, input_per_mtok=Decimal(4), output_per_mtok=Decimal(16))
    assert second.effective_from >= started
    # A tenant override changes one tenant's terms from now; it does not reach back.
    override = price_add(
        plan=plan, model_pattern=MODEL, tenant_id=tenant_a.pk, input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)
    )
    assert override.effective_from >= started
    # A glob's first version is a first version too.
    glob = price_add(plan=plan, model_pattern="acme-*", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    assert glob.effective_from == PRICED_FROM_BEGINNING


def test_the_ops_import_prices_earlier_usage_too(client, operator, key_a, plan):
    catalog = {MODEL: {"mode": "chat", "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06}}
    upload = SimpleUploadedFile("catalog.json", json.dumps(catalog).encode(), content_type="application/json")
    client.force_login(operator)
    response = client.post(reverse("ops-plan-import"), {"plan": plan.pk, "catalog": upload})
    assert response.status_code == 302, response.content
    assert Price.objects.get(plan=plan, model_pattern=MODEL).effective_from == PRICED_FROM_BEGINNING
    assert Decimal(_post(key_a, 2)["cost"]) == FIRST_COST
