from django.urls import path

from invoicing.api import views

urlpatterns = [
    path("invoices", views.InvoiceListView.as_view(), name="api-invoices"),
    path("invoices/<int:pk>", views.InvoiceDetailView.as_view(), name="api-invoice"),
    path("invoices/<int:pk>.csv", views.InvoiceCSVView.as_view(), name="api-invoice-csv"),
    path("invoices/<int:pk>.pdf", views.InvoicePDFView.as_view(), name="api-invoice-pdf"),
]
