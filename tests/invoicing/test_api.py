"""GET /api/v1/invoices and /api/v1/invoices/{id} (.csv, .pdf): tenant-scoped, read scope."""

import csv
import io

import pytest
from pypdf import PdfReader

from invoicing import services
from tests import factories
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 10)


@pytest.fixture
def invoices(tenant_a, api_key_a, tenant_b, api_key_b):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=1000)
    record(api_key_b, at=utc(2026, 10, 5), input_tokens=1_000_000, output_tokens=1000)
    out = {}
    for tenant in (tenant_a, tenant_b):
        draft, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=NOW)
        out[tenant.slug], _ = services.invoice_finalize(invoice=draft, now=NOW)
    services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=11, now=NOW)
    return out


def test_list_shows_only_own_invoices(invoices, key_a):
    response = key_a.get("/api/v1/invoices")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(row["period"], row["status"]) for row in rows] == [("2026-11", "draft"), ("2026-10", "finalized")]
    assert rows[1]["number"] == invoices["acme"].number
    assert rows[1]["subtotal"] == "5.01" and rows[1]["currency"] == "USD"
    assert rows[0]["number"] is None


def test_detail_with_lines(invoices, key_a):
    invoice = invoices["acme"]
    body = key_a.get(f"/api/v1/invoices/{invoice.pk}").json()
    assert body["number"] == invoice.number
    assert [line["token_kind"] for line in body["lines"]] == ["input", "output"]
    assert body["lines"][0]["unit_price_per_1m"] == "2.500000000000"
    assert body["lines"][0]["unit_price_per_1k"] == "0.002500000000000"
    assert body["lines"][0]["amount"] == "5.00"
    assert body["amount_due"] == "5.01"


def test_other_tenants_invoice_is_404_in_every_rendition(invoices, key_a):
    other = invoices["globex"]
    for suffix in ("", ".csv", ".pdf"):
        response = key_a.get(f"/api/v1/invoices/{other.pk}{suffix}")
        assert response.status_code == 404, suffix
        assert response.json()["error"]["code"] == "not_found"
    assert key_a.get("/api/v1/invoices/999999").status_code == 404


def test_csv_and_pdf_renditions(invoices, key_a):
    invoice = invoices["acme"]
    response = key_a.get(f"/api/v1/invoices/{invoice.pk}.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))
    assert rows[0]["amount"] == "5.00"
    assert rows[-1]["line"] == "amount_due" and rows[-1]["amount"] == "5.01"
    response = key_a.get(f"/api/v1/invoices/{invoice.pk}.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert invoice.number in text


def test_read_scope_required_and_auth(invoices, tenant_a, anonymous):
    _, secret = factories.issue_api_key(tenant_a, scopes=["ingest"])
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = anonymous.get("/api/v1/invoices")
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"
    anonymous.credentials()
    assert anonymous.get("/api/v1/invoices").status_code == 401


def test_service_token_acts_for_the_named_key(invoices, service, key_b):
    response = service.get("/api/v1/invoices", {"api_key": key_b.row.pk})
    assert [row["number"] for row in response.json()["results"]] == [invoices["globex"].number]
    assert service.get("/api/v1/invoices").status_code == 400
    assert service.get(f"/api/v1/invoices/{invoices['acme'].pk}", {"api_key": key_b.row.pk}).status_code == 404


def test_unknown_parameter_is_400(invoices, key_a):
    assert key_a.get("/api/v1/invoices", {"tenant": "globex"}).status_code == 400
