"""The operators' resale commands: set_exchange_rate, set_cost_plan, set_markup, derive_prices."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import AuditLog
from billing.models import ExchangeRate, Markup, Price
from billing.services.catalog import prices_import_litellm
from tests import factories
from tests.billing.test_resale import CATALOG

pytestmark = pytest.mark.django_db


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def plans():
    provider = factories.PricePlanFactory(slug="provider", currency="USD")
    prices_import_litellm(plan=provider, catalog=CATALOG, actor_label="test")
    return provider, factories.PricePlanFactory(slug="retail-cny", currency="CNY")


def test_an_operator_sets_up_a_cny_resale_plan_from_the_shell(plans):
    _provider, sell = plans
    assert "derived from provider (USD)" in run("set_cost_plan", "--plan", "retail-cny", "--cost-plan", "provider")
    out = run("set_exchange_rate", "--from", "usd", "--to", "CNY", "--rate", "7.3", "--note", "Q4 fix")
    assert "1 USD = 7.3 CNY" in out
    out = run("set_markup", "--plan", "retail-cny", "--model", "*", "--multiplier", "1.3")
    assert "Derived plan retail-cny: 3 new derived versions" in out
    out = run(
        "set_markup", "--plan", "retail-cny", "--model", "gpt-4o-mini", "--fixed", "input_per_mtok=1,output_per_mtok=4"
    )
    assert "1 new derived versions, 2 unchanged" in out
    assert Price.objects.filter(plan=sell, model_pattern="gpt-4o-mini").latest("pk").input_per_mtok == Decimal(1)
    assert "0 new derived versions, 3 unchanged" in run("derive_prices", "--plan", "retail-cny")
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"price_plan.cost_plan", "exchange_rate.set", "markup.set", "price.derive"} <= actions


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set_markup", "--plan", "nope", "--model", "*", "--multiplier", "1"), "--plan: no price plan 'nope'"),
        (("set_markup", "--plan", "retail-cny", "--model", "*", "--multiplier", "1"), "has no cost plan"),
        (("set_cost_plan", "--plan", "retail-cny", "--cost-plan", "retail-cny"), "its own cost plan"),
        (("set_exchange_rate", "--from", "USD", "--to", "CNY", "--rate", "-7"), "rate: rate must be positive"),
        (("set_exchange_rate", "--from", "USD", "--to", "CNY", "--rate", "abc"), "must be a decimal number"),
        (("set_exchange_rate", "--from", "USD", "--to", "USD", "--rate", "1"), "two different currencies"),
        (("set_exchange_rate", "--from", "US", "--to", "CNY", "--rate", "7"), "3-letter ISO 4217"),
        (
            ("set_exchange_rate", "--from", "USD", "--to", "CNY", "--rate", "7", "--effective-from", "2026-01-01"),
            "needs a UTC offset",
        ),
        (("derive_prices", "--plan", "retail-cny"), "has no cost plan"),
    ],
)
def test_bad_arguments_fail_clearly_and_change_nothing(plans, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ExchangeRate.objects.exists()
    assert not Markup.objects.exists()


def test_bad_markups_fail_clearly(plans):
    run("set_cost_plan", "--plan", "retail-cny", "--cost-plan", "provider")
    run("set_exchange_rate", "--from", "USD", "--to", "CNY", "--rate", "7.3")
    for args, message in [
        (("--multiplier", "-1.3"), "multiplier must be >= 0"),
        (("--fixed", "input_per_mtok=1"), "needs output_per_mtok"),
        (("--fixed", "input_per_mtok"), "is not RATE=VALUE"),
        (("--fixed", "input_per_mtok=1,output_per_mtok=-2"), "output_per_mtok must be >= 0"),
    ]:
        with pytest.raises(CommandError, match=message):
            run("set_markup", "--plan", "retail-cny", "--model", "gpt-4o", *args)
    assert not Markup.objects.exists()


def test_every_resale_command_has_help():
    for name in ("set_exchange_rate", "set_cost_plan", "set_markup", "derive_prices"):
        with pytest.raises(SystemExit) as exit_info:
            call_command(name, "--help", stdout=StringIO())
        assert exit_info.value.code == 0
