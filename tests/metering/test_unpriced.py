"""Usage without a price is stored, marked unpriced, counted; an audited re-rate prices it once."""

import datetime as dt
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import AuditLog
from billing.models import LedgerEntry, QuotaCounter, Wallet
from billing.money import round_to_ledger, to_micros
from billing.selectors import ledger_sum
from billing.services.pricing import price_add
from billing.services.reconcile import balances_reconcile
from metering.models import DailyUsage, UsageEvent
from metering.services.rerate import usage_rerate_unpriced
from tests.assertions import metric_value
from tests.conftest import Credential
from tests.factories import EventBodyFactory, TenantFactory, issue_api_key

pytestmark = pytest.mark.django_db

DAYS_AGO_2 = timezone.now() - dt.timedelta(days=2)
# 17:30 UTC thirty days ago: the next day in Asia/Shanghai (tenant_b), whatever today is.
SHANGHAI_EVENING = (timezone.now() - dt.timedelta(days=30)).replace(hour=17, minute=30, second=0, microsecond=0)
SHANGHAI_DAY = SHANGHAI_EVENING.date() + dt.timedelta(days=1)


def _unpriced(cred, count: int, *, model: str = "claude-sonnet-4", when: dt.datetime = DAYS_AGO_2) -> list[dict]:
    events = [EventBodyFactory(model=model, timestamp=when.isoformat()) for _ in range(count)]
    response = cred.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == count
    return events


def _add_price(plan, model_pattern: str = "claude-sonnet-4", *, days_ago: int = 3, **rates):
    return price_add(
        plan=plan,
        model_pattern=model_pattern,
        input_per_mtok=Decimal(rates.get("input", "3")),
        output_per_mtok=Decimal(rates.get("output", "15")),
        effective_from=timezone.now() - dt.timedelta(days=days_ago),
        actor_label="test",
    )


def _rerate(*args: str) -> str:
    out = StringIO()
    call_command("rerate_unpriced", *args, stdout=out)
    return out.getvalue()


# 1000 input x 3 + 500 output x 15, per 1M tokens
CLAUDE_COST = Decimal("0.0105")


def test_unpriced_event_is_stored_marked_and_counted(key_a, tenant_a):
    before = metric_value("tokenbill_unpriced_events_total")
    event = EventBodyFactory(model="claude-sonnet-4")
    response = key_a.post("/api/v1/events", event)
    assert response.status_code == 201
    body = response.json()
    assert body["cost"] is None
    assert body["priced"] is False
    assert body["currency"] == "USD"
    stored = UsageEvent.objects.get(pk=body["id"])
    assert stored.cost is None
    assert stored.price_id is None
    assert metric_value("tokenbill_unpriced_events_total") == before + 1
    # The replay is a duplicate, still unpriced, and counted once.
    replay = key_a.post("/api/v1/events", event)
    assert replay.json()["duplicate"] is True
    assert metric_value("tokenbill_unpriced_events_total") == before + 1
    assert not LedgerEntry.objects.filter(tenant=tenant_a).exists()


def test_a_mixed_batch_charges_only_the_priced_events(key_a, tenant_a):
    events = [EventBodyFactory(), EventBodyFactory(model="claude-sonnet-4"), EventBodyFactory()]
    response = key_a.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == 3
    (charge,) = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")
    assert charge.amount == -2 * Decimal("0.0075")


def test_tenant_without_a_plan_stores_unpriced_in_its_currency(db):
    tenant = TenantFactory(price_plan=None, currency="CNY")
    cred = Credential(*issue_api_key(tenant))
    response = cred.post("/api/v1/events", EventBodyFactory())
    assert response.status_code == 201
    assert response.json()["priced"] is False
    assert response.json()["currency"] == "CNY"
    assert usage_rerate_unpriced(actor_label="test").still_unpriced == 1


def test_rerate_prices_at_the_event_time_charges_once_and_audits(key_a, tenant_a, plan):
    events = _unpriced(key_a, 3)
    _add_price(plan)

    output = _rerate()
    assert "Priced 3 event(s)" in output
    stored = list(UsageEvent.objects.filter(tenant=tenant_a))
    assert {event.cost for event in stored} == {CLAUDE_COST}
    assert all(event.price_id is not None for event in stored)
    (charge,) = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")
    assert charge.amount == -round_to_ledger(3 * CLAUDE_COST)
    assert charge.idempotency_key.startswith("rerate:")
    assert charge.actor_label == "cli"
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk) == charge.amount
    (audit,) = AuditLog.objects.filter(action="usage.rerate")
    assert audit.tenant_id == tenant_a.pk
    assert audit.actor_label == "cli"
    assert audit.changes["events"] == 3
    assert Decimal(audit.changes["cost"]) == 3 * CLAUDE_COST
    assert audit.changes["ledger_entry_id"] == charge.pk

    # The API now answers the replay with the price.
    replay = key_a.post("/api/v1/events", events[0])
    assert replay.json()["duplicate"] is True
    assert Decimal(replay.json()["cost"]) == CLAUDE_COST
    assert replay.json()["priced"] is True


def test_running_twice_changes_nothing_the_second_time(key_a, tenant_a, plan):
    _unpriced(key_a, 2)
    _add_price(plan)
    _rerate()
    snapshot = (
        list(UsageEvent.objects.order_by("pk").values_list("pk", "cost", "price_id")),
        list(LedgerEntry.objects.order_by("pk").values_list("pk", "amount")),
        Wallet.objects.get(tenant=tenant_a).balance,
        AuditLog.objects.count(),
    )
    output = _rerate()
    assert "Priced 0 event(s); charged nothing." in output
    assert snapshot == (
        list(UsageEvent.objects.order_by("pk").values_list("pk", "cost", "price_id")),
        list(LedgerEntry.objects.order_by("pk").values_list("pk", "amount")),
        Wallet.objects.get(tenant=tenant_a).balance,
        AuditLog.objects.count(),
    )


def test_a_price_that_starts_after_the_event_does_not_apply(key_a, tenant_a, plan):
    _unpriced(key_a, 1)
    _add_price(plan, days_ago=1)  # the event happened two days ago
    output = _rerate()
    assert "Priced 0 event(s)" in output
    assert "1 event(s) still have no price" in output
    assert UsageEvent.objects.get(tenant=tenant_a).cost is None


def test_versions_price_each_event_at_its_own_time(key_a, tenant_a, plan):
    old = _unpriced(key_a, 1, when=timezone.now() - dt.timedelta(days=10))
    new = _unpriced(key_a, 1, when=timezone.now() - dt.timedelta(days=1))
    _add_price(plan, days_ago=20, input="1", output="1")
    _add_price(plan, days_ago=5)
    _rerate()
    assert UsageEvent.objects.get(request_id=old[0]["request_id"]).cost == Decimal("0.0015")
    assert UsageEvent.objects.get(request_id=new[0]["request_id"]).cost == CLAUDE_COST


def test_a_glob_price_rates_matching_models(key_a, tenant_a, plan):
    _unpriced(key_a, 1, model="claude-sonnet-4")
    _unpriced(key_a, 1, model="claude-haiku-3")
    _unpriced(key_a, 1, model="mistral-large")
    _add_price(plan, "claude-*")
    result = usage_rerate_unpriced(actor_label="test")
    assert (result.priced, result.still_unpriced) == (2, 1)
    assert result.charged == {"USD": 2 * CLAUDE_COST}


def test_tenant_option_limits_the_rerate(key_a, key_b, tenant_a, tenant_b, plan):
    _unpriced(key_a, 1)
    _unpriced(key_b, 2)
    _add_price(plan)
    assert "Priced 2 event(s)" in _rerate("--tenant", tenant_b.slug)
    assert UsageEvent.objects.get(tenant=tenant_a).cost is None
    assert not LedgerEntry.objects.filter(tenant=tenant_a).exists()
    assert "Priced 1 event(s)" in _rerate("--tenant", tenant_a.slug)


def test_rerate_reports_the_tenant_days_whose_rollups_are_stale(key_b, tenant_b, plan):
    # tenant_b is Asia/Shanghai: 17:30 UTC is the next day there.
    _unpriced(key_b, 1, when=SHANGHAI_EVENING)
    _add_price(plan, days_ago=60)
    result = usage_rerate_unpriced(tenant_id=tenant_b.pk, actor_label="test")
    assert result.days == {tenant_b.pk: {SHANGHAI_DAY}}


def test_unknown_tenant_is_a_command_error(db):
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("rerate_unpriced", "--tenant", "nope")


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        call_command("rerate_unpriced", "--help")
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--tenant" in help_text
    assert "audit" in help_text


def test_actor_label_is_required(db):
    with pytest.raises(ValueError, match="actor_label"):
        usage_rerate_unpriced(actor_label="")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_rerates_charge_once(key_a, tenant_a, plan):
    _unpriced(key_a, 30)
    _add_price(plan)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(usage_rerate_unpriced(tenant_id=tenant_a.pk, actor_label="test"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sum(result.priced for result in results) == 30
    assert sum(sum(result.charged.values(), Decimal(0)) for result in results) == 30 * CLAUDE_COST
    # 0.0105 is exact in ledger micro-units, so however the claims were split, nothing was rounded.
    assert ledger_sum(tenant_id=tenant_a.pk) == -30 * CLAUDE_COST
    assert AuditLog.objects.filter(action="usage.rerate").count() == LedgerEntry.objects.filter(tenant=tenant_a).count()
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk)
    assert not UsageEvent.objects.filter(tenant=tenant_a, cost__isnull=True).exists()


def test_rerated_cost_counts_against_money_quotas_and_leaves_no_drift(key_b, tenant_b, plan):
    # tenant_b is Asia/Shanghai: 17:30 UTC counts in its next day, and that day's month.
    _unpriced(key_b, 2, when=SHANGHAI_EVENING)
    _add_price(plan, days_ago=60)
    tokens_before = dict(
        QuotaCounter.objects.filter(tenant=tenant_b).values_list("period", "tokens").filter(api_key_ref=0)
    )
    usage_rerate_unpriced(tenant_id=tenant_b.pk, actor_label="test")
    cells = {
        (row.api_key_ref, row.period, row.period_start): row for row in QuotaCounter.objects.filter(tenant=tenant_b)
    }
    expected = to_micros(2 * CLAUDE_COST)
    for ref in (0, key_b.row.pk):
        assert cells[(ref, "day", SHANGHAI_DAY)].micros == expected
        assert cells[(ref, "month", SHANGHAI_DAY.replace(day=1))].micros == expected
        assert cells[(ref, "lifetime", dt.date(1970, 1, 1))].micros == expected
    # Tokens were counted when the events arrived, not again now.
    assert cells[(0, "day", SHANGHAI_DAY)].tokens == tokens_before["day"] == 3000
    report = balances_reconcile(fix=False)
    assert report.clean, report


def test_rerate_rebuilds_the_rollups_of_the_days_it_changed(key_b, tenant_b, plan):
    _unpriced(key_b, 2, when=SHANGHAI_EVENING)  # the next day in Shanghai
    call_command("rollup", "--date", SHANGHAI_DAY.isoformat(), "--tenant", tenant_b.slug, stdout=StringIO())
    (before,) = DailyUsage.objects.filter(tenant=tenant_b)
    assert (before.day, before.cost, before.unpriced_requests) == (SHANGHAI_DAY, 0, 2)
    _add_price(plan, days_ago=60)
    assert "Rebuilt the daily rollups of 1 tenant-day(s)" in _rerate("--tenant", tenant_b.slug)
    (after,) = DailyUsage.objects.filter(tenant=tenant_b)
    assert (after.requests, after.cost, after.unpriced_requests) == (2, 2 * CLAUDE_COST, 0)
