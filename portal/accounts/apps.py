from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Tenancy: tenants, memberships, API keys, service tokens and the audit log.

    The lowest layer of the project: it imports no other app of ours.
    """

    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Tenants and credentials"
