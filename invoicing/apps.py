from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    """Monthly close, invoices and credit notes, finance exports and reconciliation."""

    name = "invoicing"
    label = "invoicing"
    verbose_name = "Invoicing"
