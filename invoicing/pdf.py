"""Invoice PDFs with WeasyPrint, in the tenant's language (en, zh-hans).

Chinese text needs a CJK font on the machine (Debian's fonts-wqy-microhei, which the Makefile
installs); the stylesheet names it first so that Latin and Chinese glyphs share one face.
"""

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string

from billing.money import currency_exponent
from invoicing import selectors
from invoicing.models import Invoice, InvoiceLine

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice",
        "draft": "Draft invoice (not issued)",
        "number": "Invoice number",
        "period": "Billing period",
        "issued": "Issued",
        "status": "Status",
        "bill_to": "Bill to",
        "from": "From",
        "tax_id": "Tax ID",
        "line": "#",
        "description": "Description",
        "quantity": "Tokens",
        "unit_price_m": "Price / 1M",
        "unit_price_k": "Price / 1K",
        "amount": "Amount",
        "subtotal": "Subtotal",
        "credits": "Prepaid credits applied",
        "due": "Amount due",
        "credit_notes": "Credit notes",
        "timezone": "Time zone",
        "rounding": "Each line is rounded once to the currency's minor unit (round half to even).",
        "input": "input tokens",
        "output": "output tokens",
        "cached_input": "cached input tokens",
        "cache_write": "cache write tokens",
        "long_context": "long context",
        "price_from": "price from",
        "late": "usage for {period} received after close",
        "unbilled": "usage for {period} not billed before",
        "no_lines": "No usage in this period.",
        "st_draft": "draft",
        "st_finalized": "issued",
        "st_paid": "paid",
        "st_void": "void",
    },
    "zh-hans": {
        "invoice": "发票",
        "draft": "发票草稿（未开具）",  # noqa: RUF001
        "number": "发票号码",
        "period": "账期",
        "issued": "开具日期",
        "status": "状态",
        "bill_to": "客户",
        "from": "开票方",
        "tax_id": "税号",
        "line": "序号",
        "description": "项目",
        "quantity": "令牌数",
        "unit_price_m": "单价 / 百万",
        "unit_price_k": "单价 / 千",
        "amount": "金额",
        "subtotal": "小计",
        "credits": "已抵扣预付额度",
        "due": "应付金额",
        "credit_notes": "贷项通知单",
        "timezone": "时区",
        "rounding": "每行金额按币种最小单位舍入一次（银行家舍入）。",  # noqa: RUF001
        "input": "输入令牌",
        "output": "输出令牌",
        "cached_input": "缓存命中输入令牌",
        "cache_write": "缓存写入令牌",
        "long_context": "长上下文",
        "price_from": "价格生效于",
        "late": "{period} 结账后收到的用量",
        "unbilled": "{period} 此前未计费的用量",
        "no_lines": "本期无用量。",
        "st_draft": "草稿",
        "st_finalized": "已开具",
        "st_paid": "已支付",
        "st_void": "已作废",
    },
}


def labels_for(language: str) -> dict[str, str]:
    return LABELS.get(language, LABELS["en"])


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.{currency_exponent(currency)}f}"


def line_text(line: InvoiceLine, labels: dict[str, str], *, several_versions: bool) -> str:
    text = f"{line.model}: {labels[line.token_kind]}"
    if line.long_context:
        text += f" ({labels['long_context']})"
    if several_versions and line.price_effective_from is not None:
        text += f", {labels['price_from']} {line.price_effective_from:%Y-%m-%d}"
    if line.kind == InvoiceLine.Kind.ADJUSTMENT:
        template = labels["unbilled"] if "not billed" in line.description else labels["late"]
        text = f"{template.format(period=line.usage_period)}: {text}"
    return text


def invoice_context(invoice: Invoice) -> dict[str, Any]:
    labels = labels_for(invoice.language)
    lines = selectors.lines_of(invoice)
    versions: dict[tuple[str, str], set[int | None]] = {}
    for line in lines:
        versions.setdefault((line.kind, line.model), set()).add(line.price_id)
    cur = invoice.currency
    rows = [
        {
            "position": line.position,
            "text": line_text(line, labels, several_versions=len(versions[(line.kind, line.model)]) > 1),
            "quantity": f"{line.quantity:,}",
            "per_m": f"{line.unit_price_per_mtok.normalize():f}",
            "per_k": f"{(line.unit_price_per_mtok / 1000).normalize():f}",
            "amount": _money(line.amount, cur),
        }
        for line in lines
    ]
    issuer = invoice.issuer or _issuer_now()
    return {
        "invoice": invoice,
        "t": labels,
        "lang": "zh-Hans" if invoice.language == "zh-hans" else "en",
        "rows": rows,
        "issuer": issuer,
        "status": labels[f"st_{invoice.status}"],
        "subtotal": _money(invoice.subtotal, cur),
        "credits": _money(invoice.credits_applied, cur),
        "due": _money(invoice.amount_due, cur),
        "credit_notes": [
            {"number": note.number, "amount": _money(note.amount, cur), "reason": note.reason}
            for note in invoice.credit_notes.all()
        ],
    }


def _issuer_now() -> dict[str, Any]:
    return {
        "name": settings.INVOICE_ISSUER_NAME,
        "address": settings.INVOICE_ISSUER_ADDRESS,
        "tax_id": settings.INVOICE_ISSUER_TAX_ID,
        "email": settings.INVOICE_ISSUER_EMAIL,
    }


def invoice_html(invoice: Invoice) -> str:
    return render_to_string("invoicing/invoice_pdf.html", invoice_context(invoice))


def invoice_pdf(invoice: Invoice) -> bytes:
    import weasyprint  # noqa: PLC0415 - loads pango through cffi; only the PDF paths need it

    # WeasyPrint narrates each rendering step at INFO; one invoice is not worth seven log lines.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    pdf: bytes = weasyprint.HTML(string=invoice_html(invoice)).write_pdf()  # bytes when no target is given
    return pdf
