"""export_bills, reconcile_period, the staff download and invoice PDFs (English and Chinese)."""

import csv
import io
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from pypdf import PdfReader

from accounts import services as account_services
from invoicing import exports, pdf, services
from invoicing.models import Invoice
from tests import factories
from tests.conftest import Credential
from tests.invoicing.helpers import record, utc
from tests.portal.web_support import make_user

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 10)


def _close_all(*tenants, finalize=True):
    out = []
    for tenant in tenants:
        invoice, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=NOW)
        if finalize:
            invoice, _ = services.invoice_finalize(invoice=invoice, now=NOW)
        out.append(invoice)
    return out


@pytest.fixture
def period(make_tenant):
    usd, usd_key = make_tenant("usd-co", currency="USD", prices=[("gpt-4o", "2.5", "10"), ("o3", "2", "8")])
    jpy, jpy_key = make_tenant("jpy-co", currency="JPY", tz="Asia/Tokyo", prices=[("gpt-4o", "375", "1500")])
    kwd, kwd_key = make_tenant("kwd-co", currency="KWD", prices=[("gpt-4o", "0.77", "3.08")])
    zh, zh_key = make_tenant("zh-co", currency="CNY", tz="Asia/Shanghai", language="zh-hans")
    zh.name = "上海示例科技有限公司"
    zh.save()
    for key in (usd_key, jpy_key, kwd_key, zh_key):
        record(key, at=utc(2026, 10, 5), input_tokens=123_457, output_tokens=65_432, cached=1_000)
        record(key, at=utc(2026, 10, 9), input_tokens=9_999, output_tokens=1)
    record(usd_key, model="o3", at=utc(2026, 10, 7), input_tokens=5_000, output_tokens=777)
    return _close_all(usd, jpy, kwd, zh)


def test_export_bills_parses_and_totals_match(period, tmp_path):
    out = tmp_path / "bills.csv"
    call_command("export_bills", "--period", "2026-10", "--out", str(out), stderr=StringIO())
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"))))
    assert list(rows[0].keys()) == list(exports.BILLS_COLUMNS)
    heads = [row for row in rows if row["record"] == "invoice"]
    assert [row["tenant"] for row in heads] == ["jpy-co", "kwd-co", "usd-co", "zh-co"]
    for invoice in period:
        head = next(row for row in heads if row["invoice_number"] == invoice.number)
        lines = [row for row in rows if row["record"] == "line" and row["invoice_number"] == invoice.number]
        assert Decimal(head["subtotal"]) == invoice.subtotal
        assert sum(Decimal(row["amount"]) for row in lines) == invoice.subtotal
        assert sum(Decimal(row["amount_unrounded"]) for row in lines) == invoice.unrounded_total
        assert Decimal(head["amount_due"]) == invoice.amount_due
    jpy = next(row for row in rows if row["record"] == "line" and row["tenant"] == "jpy-co")
    assert "." not in jpy["amount"]  # yen has no minor unit
    kwd = next(row for row in rows if row["record"] == "line" and row["tenant"] == "kwd-co")
    assert len(kwd["amount"].split(".")[1]) == 3


def test_export_bills_is_byte_identical_and_bom(period, tmp_path):
    first, second, bom = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    call_command("export_bills", "--period", "2026-10", "--out", str(first), stderr=StringIO())
    call_command("export_bills", "--period", "2026-10", "--out", str(second), stderr=StringIO())
    assert first.read_bytes() == second.read_bytes()
    call_command("export_bills", "--period", "2026-10", "--out", str(bom), "--bom", stderr=StringIO())
    assert bom.read_bytes() == b"\xef\xbb\xbf" + first.read_bytes()
    assert "上海示例科技有限公司" in first.read_bytes().decode("utf-8")
    stdout = StringIO()
    call_command("export_bills", "--period", "2026-10", stdout=stdout)
    assert stdout.getvalue().encode("utf-8") == first.read_bytes()
    rec = tmp_path / "rec.csv"
    call_command(
        "export_bills", "--period", "2026-10", "--out", str(second), "--reconciliation", str(rec), stderr=StringIO()
    )
    assert second.read_bytes() == first.read_bytes()
    assert rec.read_bytes() == exports.reconciliation_csv(year=2026, month=10)
    assert [row["tenant"] for row in csv.DictReader(io.StringIO(rec.read_text("utf-8")))] == [
        "jpy-co", "kwd-co", "usd-co", "zh-co",
    ]  # fmt: skip


def test_export_bills_errors():
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("export_bills", "--period", "October")
    with pytest.raises(CommandError, match="Cannot write"):
        call_command("export_bills", "--period", "2026-10", "--out", "/nonexistent-dir/x.csv")


def test_pdf_has_number_lines_and_total(period):
    invoice = Invoice.objects.get(tenant__slug="usd-co")
    data = pdf.invoice_pdf(invoice)
    assert data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert invoice.number in text
    for line in invoice.lines.all():
        assert line.model in text
        assert f"{line.amount:,.2f}" in text
    assert f"{invoice.subtotal:,.2f}" in text and f"{invoice.amount_due:,.2f}" in text
    assert "Amount due" in text and "output tokens" in text


def test_chinese_invoice_pdf(period):
    invoice = Invoice.objects.get(tenant__slug="zh-co")
    reader = PdfReader(io.BytesIO(pdf.invoice_pdf(invoice)))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert invoice.number in text
    assert "发票" in text and "应付金额" in text and "输出令牌" in text
    assert "上海示例科技有限公司" in text
    assert f"{invoice.amount_due:,.2f}" in text
    fonts = {str(font) for page in reader.pages for font in page["/Resources"]["/Font"].values()}
    assert fonts  # glyphs come from an embedded font, not boxes


def test_reconcile_period_shows_differences(period, make_tenant, tmp_path):
    usd = Invoice.objects.get(tenant__slug="usd-co")
    key = usd.tenant.api_keys.first()
    record(key, at=utc(2026, 10, 20), received=utc(2026, 11, 12), input_tokens=1_000_000, output_tokens=0)
    out = StringIO()
    call_command("reconcile_period", "--period", "2026-10", stdout=out)
    lines = {line.split(" ")[0]: line for line in out.getvalue().splitlines()}
    assert lines["jpy-co"].startswith("jpy-co 2026-10 JPY INV-")
    assert "rated - invoiced" not in lines["jpy-co"]
    assert "DIFFERENCES: rated - invoiced 2.500000000000000000" in lines["usd-co"]
    with pytest.raises(CommandError, match="usd-co"):
        call_command("reconcile_period", "--period", "2026-10", "--strict", stdout=StringIO())
    target = tmp_path / "rec.csv"
    call_command("reconcile_period", "--period", "2026-10", "--out", str(target), stdout=StringIO(), stderr=StringIO())
    rows = {row["tenant"]: row for row in csv.DictReader(io.StringIO(target.read_text("utf-8")))}
    assert Decimal(rows["usd-co"]["rated_minus_invoiced"]) == Decimal("2.5")
    assert Decimal(rows["kwd-co"]["invoice_lines_rounded"]) == Invoice.objects.get(tenant__slug="kwd-co").subtotal
    assert Decimal(rows["jpy-co"]["rated_usage"]) == Decimal(rows["jpy-co"]["invoice_lines_unrounded"])
    assert Decimal(rows["jpy-co"]["ledger_usage_charged"]) >= 0


def test_staff_download_and_member_pdf(period):
    staff = get_user_model().objects.create_user("ops@example.com", "ops@example.com", "pw-123456789", is_staff=True)
    client = Client()
    client.force_login(staff)
    response = client.get("/finance/exports.csv", {"period": "2026-10"})
    assert response.status_code == 200
    assert response.content == exports.bills_csv(period="2026-10")
    response = client.get("/finance/exports.csv", {"period": "2026-10", "kind": "reconciliation", "bom": "1"})
    assert response.content.startswith(b"\xef\xbb\xbftenant,period")
    assert client.get("/finance/exports.csv", {"period": "x"}).status_code == 400

    zh = Invoice.objects.get(tenant__slug="zh-co")
    member, _ = account_services.user_create(
        email="cfo@zh.example", password="pw-123456789", tenant=zh.tenant, role="finance"
    )
    outsider, _ = account_services.user_create(email="x@other.example", password="pw-123456789")
    member_client, outsider_client = Client(), Client()
    member_client.force_login(member)
    outsider_client.force_login(outsider)
    assert member_client.get("/finance/exports.csv", {"period": "2026-10"}).status_code == 403
    assert member_client.get(f"/finance/invoices/{zh.pk}.pdf").content.startswith(b"%PDF-")
    assert member_client.get(f"/finance/invoices/{zh.pk}.csv").status_code == 200
    assert outsider_client.get(f"/finance/invoices/{zh.pk}.pdf").status_code == 404


# --- Formula cells (api.csv_writer) -----------------------------------------------------

FORMULAS = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
AMOUNT_COLUMNS = ("quantity_tokens", "unit_price_per_1m", "unit_price_per_1k", "amount_unrounded", "amount")


def _rows(body: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def _numeric(cell: str) -> bool:
    try:
        Decimal(cell)
    except ArithmeticError:
        return False
    return not cell.startswith("'")


@pytest.fixture
def formula_invoice(make_tenant):
    """A tenant named like a formula, with a slug starting "-", using models named like formulas."""
    tenant, key = make_tenant("-formula-co", prices=[(model, "2.5", "10") for model in FORMULAS])
    tenant.name = FORMULAS[0]
    tenant.save()
    for day, model in enumerate(FORMULAS, start=1):
        record(key, model=model, at=utc(2026, 10, day), input_tokens=123_457, output_tokens=65_432)
    (invoice,) = _close_all(tenant)
    return invoice


def test_export_bills_neutralises_formula_text_and_keeps_amounts(formula_invoice, tmp_path):
    out = tmp_path / "bills.csv"
    call_command("export_bills", "--period", "2026-10", "--out", str(out), stderr=StringIO())
    rows = [row for row in _rows(out.read_bytes()) if row["invoice_number"] == formula_invoice.number]
    assert rows and all(row["tenant"] == "'-formula-co" for row in rows)
    assert all(row["tenant_name"] == "'" + FORMULAS[0] for row in rows)
    lines = [row for row in rows if row["record"] == "line"]
    assert {row["model"] for row in lines} == {"'" + model for model in FORMULAS}
    assert all(row["description"].startswith("'") for row in lines)
    for row in lines:
        assert all(_numeric(row[column]) for column in AMOUNT_COLUMNS), row
    assert sum(Decimal(row["amount"]) for row in lines) == formula_invoice.subtotal
    head = next(row for row in rows if row["record"] == "invoice")
    assert Decimal(head["amount_due"]) == formula_invoice.amount_due
    again = tmp_path / "again.csv"
    call_command("export_bills", "--period", "2026-10", "--out", str(again), stderr=StringIO())
    assert again.read_bytes() == out.read_bytes()  # re-export byte-identical


def test_reconciliation_neutralises_text_and_keeps_negative_amounts(formula_invoice, tmp_path):
    target = tmp_path / "rec.csv"
    call_command("reconcile_period", "--period", "2026-10", "--out", str(target), stdout=StringIO(), stderr=StringIO())
    (row,) = _rows(target.read_bytes())
    assert row["tenant"] == "'-formula-co"
    numbers = [value for column, value in row.items() if column not in ("tenant", "period", "currency")
               and column not in ("invoice_number", "invoice_status")]  # fmt: skip
    assert all(_numeric(value) for value in numbers), row
    assert any(value.startswith("-") for value in numbers), "the fixture should give a negative difference"
    assert target.read_bytes() == exports.reconciliation_csv(year=2026, month=10)


def test_invoice_csv_neutralises_models_on_the_portal_and_the_api(formula_invoice):
    finance = make_user("finance@formula.test", tenant=formula_invoice.tenant, role="finance")
    client = Client()
    client.force_login(finance)
    portal = client.get(f"/finance/invoices/{formula_invoice.pk}.csv")
    assert portal.status_code == 200
    api = Credential(*factories.issue_api_key(formula_invoice.tenant)).get(f"/api/v1/invoices/{formula_invoice.pk}.csv")
    assert api.status_code == 200
    assert portal.content == api.content == exports.invoice_csv(formula_invoice)
    rows = _rows(portal.content)
    lines = [row for row in rows if row["line"].isdigit()]
    assert {row["model"] for row in lines} == {"'" + model for model in FORMULAS}
    for row in lines:
        assert all(_numeric(row[column]) for column in AMOUNT_COLUMNS), row
    assert rows[-1]["line"] == "amount_due" and Decimal(rows[-1]["amount"]) == formula_invoice.amount_due


# --- Downloads follow the billing page's role rule (accounts.roles) ---------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [("owner", 200), ("admin", 200), ("finance", 200), ("viewer", 403), ("operator", 200), ("outsider", 404)],
)
def test_invoice_downloads_answer_like_the_billing_page(period, role, expected):
    invoice = Invoice.objects.get(tenant__slug="usd-co")
    if role == "operator":
        user = make_user("ops@platform.test", staff=True)
    elif role == "outsider":
        user = make_user("owner@other.test", tenant=Invoice.objects.get(tenant__slug="jpy-co").tenant, role="owner")
    else:
        user = make_user(f"{role}@usd.test", tenant=invoice.tenant, role=role)
    client = Client()
    client.force_login(user)
    page = client.get(f"/t/{invoice.tenant.slug}/billing/")
    assert page.status_code == expected
    for suffix in ("pdf", "csv"):
        response = client.get(f"/finance/invoices/{invoice.pk}.{suffix}")
        assert response.status_code == expected, (role, suffix)
        if expected == 200:
            assert response.content.startswith(b"%PDF-" if suffix == "pdf" else b"line,line_kind")


@pytest.mark.parametrize("role", ["owner", "finance", "viewer"])
def test_finance_export_answers_like_the_operations_page(period, role):
    user = make_user(f"{role}@usd.test", tenant=Invoice.objects.get(tenant__slug="usd-co").tenant, role=role)
    client = Client()
    client.force_login(user)
    assert client.get("/ops/").status_code == 403
    assert client.get("/finance/exports.csv", {"period": "2026-10"}).status_code == 403
