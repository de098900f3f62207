"""Catalog import: the import_prices command and the prices_import_litellm service.

Files are written by the tests; URL imports go to a real http.server on 127.0.0.1.
"""

import datetime as dt
import functools
import http.server
import json
import socket
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from accounts.models import AuditLog
from billing.management.commands.import_prices import Command, bundled_catalog_path
from billing.models import Price, PricePlan
from billing.services.catalog import CATALOG_SOURCE, prices_import_litellm
from metering.models import UsageEvent
from tests import factories

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

SMALL_CATALOG = {
    "sample_spec": {"mode": "one of: chat, embedding, ...", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
    "acme-chat": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
    },
    "acme-long": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
        # The priority tier: only a long-context input rate of its own; the rest is the default's.
        "input_cost_per_token_above_200k_tokens_priority": 1.2e-05,
        "max_input_tokens": 1_000_000,
        "max_output_tokens": 64_000,
        # Not a token kind of ours: reported, not imported.
        "input_cost_per_audio_token": 1e-05,
    },
    "acme-complete": {"mode": "completion", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
    "acme-embed": {"mode": "embedding", "input_cost_per_token": 1e-07, "output_cost_per_token": 0.0},
    "acme-per-second": {"mode": "chat", "input_cost_per_second": 0.001, "output_cost_per_second": 0.001},
    "acme-free": {"mode": "chat", "input_cost_per_token": 0, "output_cost_per_token": 0},
}


def write(tmp_path, catalog, name="catalog.json"):
    path = tmp_path / name
    path.write_text(json.dumps(catalog))
    return str(path)


def run(*args) -> str:
    out = StringIO()
    call_command("import_prices", *args, stdout=out)
    return out.getvalue()


def versions(plan_slug: str, model: str) -> list[Price]:
    return list(
        Price.objects.filter(plan__slug=plan_slug, model_pattern=model, tenant__isnull=True).order_by("effective_from")
    )


# --- the mapping --------------------------------------------------------------------------


def test_small_file_creates_plan_and_maps_rates_exactly(tmp_path):
    out = run(write(tmp_path, SMALL_CATALOG), "--plan", "catalog", "--effective-from", "2026-01-01T00:00:00Z")

    plan = PricePlan.objects.get(slug="catalog")
    assert plan.currency == "USD"
    assert sorted(Price.objects.filter(plan=plan).values_list("model_pattern", "service_tier")) == [
        ("acme-chat", "default"),
        ("acme-complete", "default"),
        ("acme-long", "default"),
        ("acme-long", "priority"),
    ]
    chat = Price.objects.get(plan=plan, model_pattern="acme-chat")
    assert chat.effective_from == T0
    assert chat.source == CATALOG_SOURCE
    assert (chat.input_per_mtok, chat.output_per_mtok, chat.cached_input_per_mtok) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
    )
    assert chat.cache_write_per_mtok is None  # absent: rating uses the input rate
    assert chat.tier_threshold is None

    long = Price.objects.get(plan=plan, model_pattern="acme-long", service_tier="default")
    assert long.tier_threshold == 200_000
    assert (long.cache_write_1h_per_mtok, long.tier_cache_write_1h_per_mtok) == (Decimal("6"), Decimal("12"))
    assert (long.max_input_tokens, long.max_output_tokens) == (1_000_000, 64_000)
    assert (long.input_per_mtok, long.cached_input_per_mtok, long.cache_write_per_mtok) == (
        Decimal("3"),
        Decimal("0.3"),
        Decimal("3.75"),
    )
    assert (
        long.tier_input_per_mtok,
        long.tier_output_per_mtok,
        long.tier_cached_input_per_mtok,
        long.tier_cache_write_per_mtok,
    ) == (Decimal("6"), Decimal("22.5"), Decimal("0.6"), Decimal("7.5"))
    # Priority: LiteLLM reads `<key>_priority`, else `<key>`, per rate; the 1-hour write of the
    # long context has no suffixed key, so it falls back to the flat 1-hour rate (not the tier's).
    priority = Price.objects.get(plan=plan, model_pattern="acme-long", service_tier="priority")
    assert (priority.input_per_mtok, priority.output_per_mtok, priority.cached_input_per_mtok) == (
        Decimal("3"),
        Decimal("15"),
        Decimal("0.3"),
    )
    assert (priority.tier_threshold, priority.tier_input_per_mtok, priority.tier_output_per_mtok) == (
        200_000,
        Decimal("12"),
        Decimal("22.5"),
    )
    assert (priority.cache_write_1h_per_mtok, priority.tier_cache_write_1h_per_mtok) == (Decimal("6"), None)
    assert priority.max_input_tokens == 1_000_000

    assert "3 new price versions, 0 unchanged, 4 skipped" in out
    assert "1 service-tier rows" in out
    assert "priced 3 models" in out
    assert "input_cost_per_audio_token: 1" in out
    assert "not_a_chat_model 1" in out and "no_token_price 1" in out and "zero_price 1" in out
    assert "sample_spec 1" in out


def test_free_models_stay_unpriced_unless_asked_for(tmp_path):
    path = write(tmp_path, SMALL_CATALOG)
    run(path, "--plan", "paid-only")
    assert not Price.objects.filter(plan__slug="paid-only", model_pattern="acme-free").exists()
    out = run(path, "--plan", "with-free", "--include-free")
    assert "4 new price versions, 0 unchanged, 3 skipped" in out
    free = Price.objects.get(plan__slug="with-free", model_pattern="acme-free")
    assert (free.input_per_mtok, free.output_per_mtok) == (Decimal(0), Decimal(0))


def test_service_reports_every_entry_once_and_audits(db):
    plan = factories.PricePlanFactory(slug="svc")
    catalog = {
        **SMALL_CATALOG,
        "acme/*-glob": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
        "acme-negative": {"mode": "chat", "input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06},
        "acme-text-rate": {"mode": "chat", "input_cost_per_token": "3e-7", "output_cost_per_token": "1.2e-6"},
        "acme-garbage-rate": {"mode": "chat", "input_cost_per_token": "cheap", "output_cost_per_token": 1e-06},
        "acme-two-tiers": {
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "input_cost_per_token_above_128k_tokens": 2e-06,
            "input_cost_per_token_above_256k_tokens": 3e-06,
        },
        "acme-tier-without-input": {
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "output_cost_per_token_above_128k_tokens": 4e-06,
        },
        "acme-bare-threshold": {
            "mode": "responses",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "input_cost_per_token_above_1000_tokens": 2e-06,
        },
        "not-an-object": [1, 2],
    }
    result = prices_import_litellm(
        plan=plan, catalog=catalog, effective_from=T0, actor_label="ops", models=[*catalog, "no-such-model"]
    )

    assert sorted(result.created_models) == [
        "acme-bare-threshold",
        "acme-chat",
        "acme-complete",
        "acme-long",
        "acme-text-rate",
        "acme-tier-without-input",
    ]
    assert result.skipped == {
        "invalid_rate": 2,
        "unsupported_tier": 1,
        "no_token_price": 1,
        "not_a_chat_model": 1,
        "not_an_object": 1,
        "not_in_catalog": 1,
        "sample_spec": 1,
        "unusable_name": 1,
        "zero_price": 1,
    }
    assert result.total == len(catalog) + 1
    assert Price.objects.get(plan=plan, model_pattern="acme-text-rate").input_per_mtok == Decimal("0.3")
    assert Price.objects.get(plan=plan, model_pattern="acme-bare-threshold").tier_threshold == 1000
    # Any kind's `_above_` key opens the context tier (LiteLLM): here only output has a tier rate.
    no_input = Price.objects.get(plan=plan, model_pattern="acme-tier-without-input")
    assert (no_input.tier_threshold, no_input.tier_input_per_mtok, no_input.tier_output_per_mtok) == (
        128_000,
        None,
        Decimal("4"),
    )

    audit = AuditLog.objects.get(action="price.import")
    assert audit.actor_label == "ops"
    assert audit.target_id == str(plan.pk)
    assert audit.changes["created"] == 6
    assert audit.changes["skipped"]["invalid_rate"] == 2
    assert sorted(audit.changes["created_models"]) == sorted(result.created_models)


def test_more_precision_than_stored_is_rounded_half_even_and_reported(tmp_path):
    catalog = {
        # Float noise from a per-DBU conversion: 17 significant digits.
        "noisy": {"mode": "chat", "input_cost_per_token": 2.9999900000000002e-06, "output_cost_per_token": 1e-05},
        # 1e-18 per token is exactly 12 places per 1M: stored as is.
        "tiny": {"mode": "chat", "input_cost_per_token": 1e-18, "output_cost_per_token": 1e-05},
    }
    plan = factories.PricePlanFactory(slug="precise")
    result = prices_import_litellm(plan=plan, catalog=catalog, effective_from=T0)

    noisy = Price.objects.get(plan=plan, model_pattern="noisy")
    assert noisy.input_per_mtok == Decimal("2.999990000000")  # 2.9999900000000002 per 1M, rounded
    assert Price.objects.get(plan=plan, model_pattern="tiny").input_per_mtok == Decimal("0.000000000001")
    assert [(r.model, r.key, r.catalog_value, r.stored_per_mtok) for r in result.rounded] == [
        ("noisy", "input_cost_per_token", "2.9999900000000002e-06", Decimal("2.999990000000"))
    ]
    # Through the command the JSON text is read as Decimal, and the rounding is printed.
    out = run(write(tmp_path, catalog), "--plan", "precise2")
    assert "rounded noisy input_cost_per_token=0.0000029999900000000002 to 2.999990000000 per 1M" in out
    assert "1 rates rounded to 12 places per 1M" in out


def test_rate_too_large_to_store_is_skipped_as_invalid(db):
    plan = factories.PricePlanFactory(slug="huge")
    catalog = {"huge": {"mode": "chat", "input_cost_per_token": 1e6, "output_cost_per_token": 1.0}}
    result = prices_import_litellm(plan=plan, catalog=catalog, effective_from=T0)
    assert result.skipped == {"invalid_rate": 1}
    assert not Price.objects.filter(plan=plan).exists()


# --- versions -----------------------------------------------------------------------------


def test_reimport_of_identical_catalog_creates_nothing(tmp_path):
    path = write(tmp_path, SMALL_CATALOG)
    run(path, "--plan", "catalog", "--effective-from", "2026-01-01T00:00:00Z")
    out = run(path, "--plan", "catalog", "--effective-from", "2026-02-01T00:00:00Z")
    assert "0 new price versions, 3 unchanged" in out
    assert Price.objects.filter(plan__slug="catalog").count() == 4  # acme-long has a priority row
    # Without --effective-from (now) too.
    assert "0 new price versions, 3 unchanged" in run(path, "--plan", "catalog")


def test_changed_price_adds_a_version_and_old_events_keep_their_price(tmp_path, key_a, tenant_a):
    model = "acme-chat"
    path = write(tmp_path, SMALL_CATALOG)
    run(path, "--plan", tenant_a.price_plan.slug)  # effective now
    first = key_a.post(
        "/api/v1/events", {"request_id": "r-1", "model": model, "input_tokens": 1000, "output_tokens": 500}
    )
    assert first.status_code == 201, first.content
    # 1000 x 2.5 + 500 x 10 per 1M
    assert Decimal(first.json()["cost"]) == Decimal("0.0075")

    changed = {**SMALL_CATALOG, model: {**SMALL_CATALOG[model], "input_cost_per_token": 3e-06}}
    out = run(write(tmp_path, changed, "changed.json"), "--plan", tenant_a.price_plan.slug)
    assert "1 new price versions, 2 unchanged" in out

    old, new = versions(tenant_a.price_plan.slug, model)
    assert (old.input_per_mtok, new.input_per_mtok) == (Decimal("2.5"), Decimal("3"))
    assert new.effective_from > old.effective_from
    assert (old.output_per_mtok, old.cached_input_per_mtok) == (new.output_per_mtok, new.cached_input_per_mtok)

    second = key_a.post(
        "/api/v1/events", {"request_id": "r-2", "model": model, "input_tokens": 1000, "output_tokens": 500}
    )
    assert Decimal(second.json()["cost"]) == Decimal("0.008")
    stored_first = UsageEvent.objects.get(request_id="r-1")
    assert stored_first.cost == Decimal("0.0075")
    assert stored_first.price_id == old.pk
    assert UsageEvent.objects.get(request_id="r-2").price_id == new.pk


def test_a_different_version_at_the_same_instant_is_a_conflict_not_an_overwrite(db):
    plan = factories.PricePlanFactory(slug="conflict")
    factories.PriceFactory(plan=plan, model_pattern="acme-chat", effective_from=T1, input_per_mtok=Decimal("9"))
    factories.PriceFactory(plan=plan, model_pattern="acme-chat", effective_from=T0, input_per_mtok=Decimal("8"))
    result = prices_import_litellm(plan=plan, catalog=SMALL_CATALOG, effective_from=T1, models=["acme-chat"])
    assert result.skipped == {"version_conflict": 1}
    assert [p.input_per_mtok for p in versions("conflict", "acme-chat")] == [Decimal("8"), Decimal("9")]


def test_tenant_overrides_are_not_compared_or_touched(db):
    plan = factories.PricePlanFactory(slug="overrides")
    tenant = factories.TenantFactory(price_plan=plan)
    override = factories.PriceFactory(
        plan=plan,
        tenant=tenant,
        model_pattern="acme-complete",
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
    )
    result = prices_import_litellm(plan=plan, catalog=SMALL_CATALOG, effective_from=T0, models=["acme-complete"])
    assert result.created_models == ["acme-complete"]
    assert Price.objects.filter(plan=plan, model_pattern="acme-complete").count() == 2
    override.refresh_from_db()
    assert override.input_per_mtok == Decimal("1")


def test_service_refuses_other_currency_and_naive_time(db):
    plan = factories.PricePlanFactory(slug="yen", currency="JPY")
    with pytest.raises(ValidationError, match="priced in JPY but the catalog is in USD"):
        prices_import_litellm(plan=plan, catalog=SMALL_CATALOG)
    with pytest.raises(ValidationError, match="timezone-aware"):
        prices_import_litellm(plan=plan, catalog=SMALL_CATALOG, currency="JPY", effective_from=dt.datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="JSON object"):
        prices_import_litellm(plan=plan, catalog=[], currency="JPY")
    assert not Price.objects.filter(plan=plan).exists()


# --- the bundled catalog ------------------------------------------------------------------


def test_bundled_catalog_imports_hundreds_of_models_once():
    assert bundled_catalog_path().name == "model_prices_and_context_window_backup.json"
    out = run("bundled", "--plan", "litellm", "--effective-from", "2026-01-01T00:00:00+00:00")
    created = Price.objects.filter(plan__slug="litellm", service_tier="default").count()
    assert created > 1500
    assert Price.objects.filter(plan__slug="litellm").exclude(service_tier="default").count() > 100
    assert f"{created} new price versions, 0 unchanged" in out

    gpt4o = {p.service_tier: p for p in Price.objects.filter(plan__slug="litellm", model_pattern="gpt-4o")}
    assert (gpt4o["default"].input_per_mtok, gpt4o["default"].output_per_mtok) == (Decimal("2.5"), Decimal("10"))
    assert gpt4o["default"].cached_input_per_mtok == Decimal("1.25")
    assert (gpt4o["default"].max_input_tokens, gpt4o["default"].max_output_tokens) == (128_000, 16_384)
    assert (gpt4o["priority"].input_per_mtok, gpt4o["priority"].cached_input_per_mtok) == (
        Decimal("4.25"),
        Decimal("2.125"),
    )
    # Batch: its own input and output; no batch cache read, so the standard one.
    assert (gpt4o["batch"].input_per_mtok, gpt4o["batch"].output_per_mtok) == (Decimal("1.25"), Decimal("5"))
    assert gpt4o["batch"].cached_input_per_mtok == Decimal("1.25")
    assert "flex" not in gpt4o
    sonnet = Price.objects.get(
        plan__slug="litellm", model_pattern="claude-sonnet-4-5-20250929-v1:0", service_tier="default"
    )
    assert (sonnet.tier_threshold, sonnet.tier_input_per_mtok, sonnet.tier_cache_write_per_mtok) == (
        200_000,
        Decimal("6"),
        Decimal("7.5"),
    )
    assert AuditLog.objects.filter(action="price.import").count() == 1

    again = run("bundled", "--plan", "litellm")
    assert f"0 new price versions, {created} unchanged" in again
    assert Price.objects.filter(plan__slug="litellm", service_tier="default").count() == created


# --- URLs, against a real local server ----------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serves tmp_path on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_url_import_from_local_http_server(tmp_path, http_root):
    write(tmp_path, SMALL_CATALOG)
    out = run(f"{http_root}/catalog.json", "--plan", "web")
    assert "3 new price versions" in out
    assert f"Imported {http_root}/catalog.json" in out
    assert Price.objects.filter(plan__slug="web").count() == 4  # acme-long has a priority row


def test_url_errors_are_clear(tmp_path, http_root):
    with pytest.raises(CommandError, match=r"Could not fetch .*/missing.json: HTTP 404"):
        run(f"{http_root}/missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CommandError, match=r"broken.json is not valid JSON: .*line 1, column 2"):
        run(f"{http_root}/broken.json")

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError, match=rf"Could not fetch http://127.0.0.1:{port}/c.json: .*refused"):
        run(f"http://127.0.0.1:{port}/c.json")
    assert not PricePlan.objects.filter(slug="default").exists()


def test_url_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts the connection (backlog), never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(CommandError, match=r"Could not fetch .*(timed out|no answer within 0.3 s)"):
            run(f"http://127.0.0.1:{port}/c.json", "--timeout", "0.3")


# --- bad input ----------------------------------------------------------------------------


def test_help_describes_the_arguments():
    text = Command().create_parser("manage.py", "import_prices").format_help()
    for part in ("FILE_OR_URL", "bundled", "--plan", "--currency", "--effective-from", "--model"):
        assert part in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", r"is not valid JSON: Expecting property name"),
        ("[1, 2]", r"is not a price catalog: expected a JSON object .* got list"),
        ('{"m": {"mode": "chat", "input_cost_per_token": NaN}}', r"is not valid JSON: NaN is not a valid price"),
        ("", r"is not valid JSON: Expecting value"),
    ],
)
def test_bad_json_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        run(str(path))
    assert not PricePlan.objects.exists()


def test_bad_arguments_are_clear_errors(tmp_path):
    path = write(tmp_path, SMALL_CATALOG)
    cases = [
        ((str(tmp_path / "nope.json"),), r"No such file: .*nope.json"),
        ((str(tmp_path),), r"Not a file: "),
        (("ftp://example.com/c.json",), r"Unsupported URL scheme 'ftp'"),
        ((path, "--plan", "no spaces"), r"--plan 'no spaces' is not a valid slug"),
        ((path, "--currency", "dollars"), r"--currency 'dollars' is not a 3-letter ISO 4217 code"),
        ((path, "--effective-from", "yesterday"), r"--effective-from 'yesterday' is not an ISO 8601 date-time"),
        ((path, "--effective-from", "2026-01-01T00:00:00"), r"needs a UTC offset"),
        ((path, "--timeout", "0"), r"--timeout must be positive"),
        (("",), r"FILE_OR_URL is empty"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=message):
            run(*args)
    (tmp_path / "latin1.json").write_bytes(b'{"caf\xe9": {}}')
    with pytest.raises(CommandError, match=r"latin1.json is not UTF-8 text"):
        run(str(tmp_path / "latin1.json"))
    assert not PricePlan.objects.exists()


def test_plan_currency_mismatch_is_refused(tmp_path):
    factories.PricePlanFactory(slug="euro", currency="EUR")
    path = write(tmp_path, SMALL_CATALOG)
    with pytest.raises(CommandError, match=r"Plan 'euro' is priced in EUR, but the catalog is in USD \(--currency\)"):
        run(path, "--plan", "euro")
    # A catalog declared in the plan's currency (an operator's own list in LiteLLM's format) is fine.
    assert "3 new price versions" in run(path, "--plan", "euro", "--currency", "eur")
    assert not Price.objects.filter(plan__slug="euro").exclude(plan__currency="EUR").exists()


def test_model_filter_imports_only_the_named_models(tmp_path):
    out = run(write(tmp_path, SMALL_CATALOG), "--plan", "some", "--model", "acme-chat", "--model", "nope", "-v", "2")
    assert list(Price.objects.filter(plan__slug="some").values_list("model_pattern", flat=True)) == ["acme-chat"]
    assert "1 new price versions, 0 unchanged, 1 skipped (not_in_catalog 1)" in out
    assert "skipped, asked for by name but not in the catalog: nope" in out


def test_effective_from_at_the_ends_of_the_calendar_is_a_command_error(tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"gpt-x": {"mode": "chat", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}')
    with pytest.raises(CommandError, match="out of range"):
        call_command("import_prices", str(catalog), "--plan", "p", "--effective-from", "0001-01-01T00:00:00+01:00")
