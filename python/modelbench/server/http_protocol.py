"""uvicorn's httptools protocol with bounds on slow and greedy clients.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) and
nothing else: a client may take forever to send a request's head (slowloris:
a header byte every few seconds) or its body, holding a connection and its
buffers, and the httptools parser buffers a head of any size. This protocol
adds, per request:

- the request line and headers at most ``max_header_bytes``: past that,
  431 with OpenAI's error body, and the connection is closed (counted as
  the bytes arrive, so a client cannot make the parser buffer more than that
  and one read);
- the head complete within ``header_timeout_s`` of the connection opening or
  of the request's first byte: else the connection is closed;
- the body complete within ``body_timeout_s`` of the head: else closed (the
  app sees the client gone). A deadline that passes while uvicorn itself has
  stopped reading (flow control: a pipelined request waits its turn, or the
  app reads slowly) starts over instead: the client is not the one waiting.

``bounded_protocol(settings)`` is the class ``uvicorn.Config(http=...)`` takes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelbench.config import Settings
from modelbench.server.protocol import ErrorInfo, ErrorResponse

logger = logging.getLogger("modelbench.server")


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0
        self._refusal: tuple[int, str, str] | None = None  # status, code, message
        self._deadline: asyncio.TimerHandle | None = None

    # ---- deadlines ------------------------------------------------------

    def _arm(self, timeout_s: float, waiting_for: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expire, waiting_for, timeout_s)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, waiting_for: str, timeout_s: float) -> None:
        self._deadline = None
        if self.flow.read_paused:  # the server holds the body back (a pipelined request, or
            self._arm(timeout_s, waiting_for)  # the app reading slowly), not the client
            return
        if not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info(
                "closing the connection of %s: no %s within %.0f s", client, waiting_for, timeout_s
            )
            self.transport.close()

    # ---- the protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)  # the head so far (and at most one read more)
            if self._head_bytes > self.max_header_bytes:
                self._refuse_head()
                self.send_400_response("")

    def _refuse_head(self) -> None:
        self._refusal = (
            431,
            "request_header_fields_too_large",
            f"the request line and headers are over {self.max_header_bytes} bytes; send less",
        )

    def send_400_response(self, msg: str) -> None:
        """The answer to a request uvicorn cannot parse, or to one past a bound:
        OpenAI's error body (uvicorn's own is plain text), then the connection closes."""
        self._disarm()
        status, code, text = self._refusal or (
            400,
            "invalid_http_request",
            "the request is not valid HTTP/1.1: its request line or headers could not be parsed",
        )
        error = ErrorInfo(message=text, type="invalid_request_error", param=None, code=code)
        body = ErrorResponse(error=error).model_dump_json().encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()

    # ---- parser callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm(self.header_timeout_s, "request head")

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:  # a head that came in one read
            self._refuse_head()
            raise HeadTooLarge  # the parser stops; uvicorn calls send_400_response
        self._arm(self.body_timeout_s, "request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def bounded_protocol(settings: Settings) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with ``settings``' bounds."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
        },
    )
