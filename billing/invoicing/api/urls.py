from django.urls import path

from billing.invoicing.api import views

urlpatterns = [
    path("invoices", views.InvoiceListView.as_view(), name="api-invoices"),
    path("invoices/<int:pk>", views.InvoiceDetailView.as_view(), name="api-invoice"),
    path("invoices/<int:pk>.csv", views.InvoiceDetailView.as_view(), {"rendition": "csv"}, name="api-invoice-csv"),
    path("invoices/<int:pk>.pdf", views.InvoiceDetailView.as_view(), {"rendition": "pdf"}, name="api-invoice-pdf"),
]
