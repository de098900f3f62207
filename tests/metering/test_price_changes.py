"""A price change applies from the next request, whatever wrote it.

Ingest and /authorize keep price books in process per (plan, tenant) and reuse one only
while the plan's version, read with the API key on every request, is unchanged; PostgreSQL
triggers move the version on any insert, update or delete of the plan's prices and on a
change of its currency.
"""

import datetime as dt
import itertools
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Price, PricePlan
from billing.services.pricing import price_add
from tests import factories

pytestmark = pytest.mark.django_db

_ids = itertools.count()


def _cost(cred, model: str = "gpt-4o") -> tuple[Decimal, str]:
    """Ingest one event of 1M input tokens: (its cost, its currency), i.e. the input rate."""
    body = {"request_id": f"price-{next(_ids)}", "model": model, "input_tokens": 1_000_000, "output_tokens": 0}
    response = cred.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    data = response.json()
    return Decimal(data["cost"]), data["currency"]


def _a_minute_ago() -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=1)


def test_a_new_price_version_applies_to_the_next_event(key_a, plan):
    assert _cost(key_a) == (Decimal("2.5"), "USD")
    assert _cost(key_a) == (Decimal("2.5"), "USD")  # served from the process's book
    price_add(plan=plan, model_pattern="gpt-4o", input_per_mtok=Decimal(3), output_per_mtok=Decimal(12),
              effective_from=_a_minute_ago())  # fmt: skip
    assert _cost(key_a) == (Decimal(3), "USD")


def test_a_tenant_override_applies_at_once_and_only_to_its_tenant(key_a, key_b, tenant_a, plan):
    assert _cost(key_a)[0] == _cost(key_b)[0] == Decimal("2.5")
    price_add(plan=plan, model_pattern="gpt-4o", input_per_mtok=Decimal(2), output_per_mtok=Decimal(8),
              tenant_id=tenant_a.pk, effective_from=_a_minute_ago())  # fmt: skip
    assert _cost(key_a)[0] == Decimal(2)
    assert _cost(key_b)[0] == Decimal("2.5")


def test_a_glob_added_later_prices_a_model_the_book_had_no_price_for(key_a, plan):
    response = key_a.post(
        "/api/v1/events", {"request_id": "o1-early", "model": "o1-mini", "input_tokens": 10, "output_tokens": 0}
    )
    assert response.json()["priced"] is False
    price_add(plan=plan, model_pattern="o1*", input_per_mtok=Decimal(15), output_per_mtok=Decimal(60),
              effective_from=_a_minute_ago())  # fmt: skip
    assert _cost(key_a, "o1-mini")[0] == Decimal(15)


def test_rows_changed_outside_the_services_apply_at_once(key_a, plan):
    """An edit or delete straight in the database (admin, SQL) moves the version too."""
    newer = price_add(plan=plan, model_pattern="gpt-4o", input_per_mtok=Decimal(3), output_per_mtok=Decimal(12),
                      effective_from=_a_minute_ago())  # fmt: skip
    unused_glob = factories.PriceFactory(plan=plan, model_pattern="gpt-5*", input_per_mtok="7", output_per_mtok="9")
    assert _cost(key_a)[0] == Decimal(3)  # the book now holds the gpt-5* glob too
    Price.objects.filter(pk=newer.pk).update(input_per_mtok=Decimal(4))
    assert _cost(key_a)[0] == Decimal(4)
    unused_glob.delete()  # never used, so nothing protects it
    response = key_a.post(
        "/api/v1/events", {"request_id": "gpt5", "model": "gpt-5-mini", "input_tokens": 10, "output_tokens": 0}
    )
    assert response.json()["priced"] is False


def test_a_plan_currency_change_applies_at_once(key_a, plan):
    assert _cost(key_a)[1] == "USD"
    PricePlan.objects.filter(pk=plan.pk).update(currency="EUR")
    assert _cost(key_a) == (Decimal("2.5"), "EUR")


def test_the_book_is_read_once_per_plan_version_and_model(key_a, plan):
    _cost(key_a)

    def price_reads() -> int:
        with CaptureQueriesContext(connection) as captured:
            _cost(key_a)
        table = re.compile(rf"\b{Price._meta.db_table}\b")
        return sum(1 for query in captured.captured_queries if table.search(query["sql"]))

    assert price_reads() == 0
    factories.PriceFactory(plan=plan, model_pattern="claude-*", input_per_mtok="3", output_per_mtok="15")
    assert price_reads() == 1
    assert price_reads() == 0


def test_authorize_estimates_with_the_new_price_at_once(backend, key_a, tenant_a, plan):
    factories.topup(tenant_a, "100.00")
    body = {"model": "gpt-4o", "estimated_input_tokens": 1_000_000, "max_output_tokens": 0}
    first = key_a.post("/api/v1/authorize", body)
    assert first.status_code == 200, first.content
    assert Decimal(first.json()["estimated_cost"]) == Decimal("2.5")
    price_add(plan=plan, model_pattern="gpt-4o", input_per_mtok=Decimal(3), output_per_mtok=Decimal(12),
              effective_from=_a_minute_ago())  # fmt: skip
    assert Decimal(key_a.post("/api/v1/authorize", body).json()["estimated_cost"]) == Decimal(3)
