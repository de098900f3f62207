from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alert rules on quotas, balance and spend; their events and deliveries to channels."""

    name = "alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from alerts import receivers  # noqa: F401, PLC0415 - connects the ingest hook
