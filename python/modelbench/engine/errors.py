"""The error a caller's bad input raises, carrying the field it names.

``InvalidParameter`` is a ``ValueError`` whose ``param`` names the offending
field (``"max_tokens"``), so that the server can answer a 400 naming it
without reading the message. The C++ engine raises its own
``modelbench._core.InvalidArgument``, also a ``ValueError`` with ``param``."""

from __future__ import annotations

# Codes of input a model cannot take although every field is well formed (the
# server's 400 carries them, see modelbench.server.protocol_fields).
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
CONFLICTING_FIELDS = "conflicting_fields"
INVALID_GUIDED_CONSTRAINT = "invalid_guided_constraint"
INPUT_MISMATCH = "input_mismatch"  # a tensor model's input it does not take (modelbench.predict)


class InvalidParameter(ValueError):
    """Input a caller got wrong; ``param`` names the field, or is None;
    ``code`` says why when the value alone is not at fault (the prompt and
    max_tokens together are past the context: CONTEXT_LENGTH_EXCEEDED)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
