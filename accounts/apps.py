from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    """Tenancy: tenants, memberships, API keys, service tokens and the audit log.

    The lowest layer of the project: it imports no other app of ours.
    """

    name = "accounts"
    label = "accounts"
    verbose_name = "Tenants and credentials"

    def ready(self) -> None:
        from axes.signals import user_locked_out  # noqa: PLC0415 - needs the app registry

        from accounts import receivers  # noqa: PLC0415

        user_locked_out.connect(receivers.audit_lockout, dispatch_uid="accounts.audit_lockout")
        post_migrate.connect(receivers.sync_operators_group, sender=self, dispatch_uid="accounts.operators_group")
