from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Price plans and rating, wallets and the credit ledger, holds and quotas."""

    name = "billing"
    verbose_name = "Billing"
