"""Signal receivers of the accounts app: thin, each calls one service.

- axes' `user_locked_out` -> an AuditLog entry the moment an account or address reaches the
  failure limit (not again for the further failures that keep it locked).
- `post_migrate` -> the operators group, rebuilt with its permissions after every migrate.
"""

from django.apps import AppConfig, apps
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.http import HttpRequest

from accounts import services


def audit_lockout(sender: object, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs) -> None:
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None or failures != settings.AXES_FAILURE_LIMIT:
        return  # a failure while already locked out (or the backend refusing one): recorded once
    services.login_lockout_record(username=username, ip_address=ip_address, path=request.path, failures=failures)


def sync_operators_group(sender: AppConfig, using: str = "default", **kwargs) -> None:
    # post_migrate is sent once per app; permissions of apps after this one may not exist yet on
    # a fresh database, so create them all first (idempotent, as Django's own handler is).
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    services.operators_group_sync()
