"""The error a caller's bad input raises, carrying the field it names.

``InvalidParameter`` is a ``ValueError`` whose ``param`` names the offending
field (``"max_tokens"``), so that the server can answer a 400 naming it
without reading the message. The C++ engine raises its own
``modelbench._core.InvalidArgument``, also a ``ValueError`` with ``param``."""

from __future__ import annotations


class InvalidParameter(ValueError):
    """Input a caller got wrong; ``param`` names the field, or is None."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
