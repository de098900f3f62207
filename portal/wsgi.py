import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

from portal.warmup import warm_up_and_freeze  # noqa: E402 - needs the settings configured above

warm_up_and_freeze()
