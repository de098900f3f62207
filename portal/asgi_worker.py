"""uvicorn's gunicorn worker for portal.asgi (the relay's deployment), without uvicorn's proxy headers.

uvicorn rewrites the ASGI client address from X-Forwarded-For whenever the peer is in
FORWARDED_ALLOW_IPS (127.0.0.1 by default), before any code of ours runs. The client address
has one rule here, accounts/client_ip.py's (TRUSTED_PROXY_COUNT), on every layer; with uvicorn's
rewrite under it, anything connecting from loopback could name any address and pass a key's
allowed networks or the /metrics allow-list. X-Forwarded-Proto is Django's to read
(SECURE_PROXY_SSL_HEADER, set with TRUSTED_PROXY_COUNT).
"""

from typing import Any

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]  # ships no hints

# Also what `make run` passes to uvicorn (--no-proxy-headers) and the relay tests' server uses.
UVICORN_OPTIONS: dict[str, Any] = {"proxy_headers": False}


class AsgiWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **UVICORN_OPTIONS}
