"""The ASGI application: the relay's /v1/ straight to relay.gateway, everything else to Django.

The relay's path skips Django's middleware (sessions, CSRF, locale, messages...): it
authenticates with the API key itself and answers in OpenAI's shapes (docs/relay.md).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_asgi_application()

from relay.gateway import application as relay_application  # noqa: E402 - needs the apps loaded
from relay.gateway import process_warm, sessions_close  # noqa: E402
from relay.recorder import recorder_close  # noqa: E402


async def application(scope, receive, send) -> None:
    kind = scope["type"]
    if kind == "http" and scope["path"].startswith("/v1/"):
        await relay_application(scope, receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await process_warm()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await recorder_close()  # the calls still in memory are written before exit
                await sessions_close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    else:
        await django_application(scope, receive, send)
