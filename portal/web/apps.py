from django.apps import AppConfig


class WebConfig(AppConfig):
    """The browser portal and the commands that span apps (seed_demo, create_tenant...)."""

    name = "portal.web"
    label = "web"
    verbose_name = "Portal"
