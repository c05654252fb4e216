"""install_ui(app): serve the page's static files at ``/ui`` (``/`` redirects
there) under a strict Content-Security-Policy.

The page is plain files: ``static/index.html``, ``static/ui.css`` and the ES
modules in ``static/js/``. It talks to the same HTTP API as any client, so
serving it needs no key; what it shows comes from keyed calls the browser
makes with the key the person gives it."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

# Same origin only, and no inline script or style: everything the page runs
# is a file served from here, everything it fetches is this server's API.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate: an upgrade's page is seen at once
]

# Module scripts must come as JavaScript whatever the host's mime.types says.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")


class SecurityHeaders:
    """Add ``HEADERS`` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*kept, *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def install_ui(app: FastAPI) -> None:
    """Mount the page at ``/ui`` and redirect ``/`` to it."""
    app.mount("/ui", SecurityHeaders(StaticFiles(directory=STATIC, html=True)), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
