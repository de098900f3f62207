"""Browser download URLs (mounted under /finance/ by portal/urls.py)."""

from django.urls import path

from invoicing import views

urlpatterns = [
    path("exports.csv", views.finance_export, name="finance-export"),
    path("invoices/<int:pk>.pdf", views.invoice_download, {"rendition": "pdf"}, name="invoice-pdf"),
    path("invoices/<int:pk>.csv", views.invoice_download, {"rendition": "csv"}, name="invoice-csv"),
]
