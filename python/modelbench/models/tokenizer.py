"""Tokenizers: encode, decode, chat templates, and incremental detokenization.

``Tokenizer`` wraps a ``tokenizers.Tokenizer`` (the Rust fast tokenizer that
Hugging Face ships as ``tokenizer.json``, or one built from GGUF metadata)
with the model's special tokens and chat template. ``IncrementalDetokenizer``
turns a stream of generated ids into text deltas for streaming responses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

import tokenizers

REPLACEMENT_CHAR = "\ufffd"


class Tokenizer:
    """A model's tokenizer.

    Args:
        backend: the ``tokenizers.Tokenizer`` that encodes and decodes; its
            post-processor decides whether ``encode`` adds a BOS token.
        bos_token / eos_token: the special tokens' text, or ``None``.
        chat_template: a Jinja chat template, or ``None``.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.chat_template = chat_template

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """The tokenizer of a Hugging Face folder (read offline with transformers)."""
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:
            raise ValueError(f"cannot load the tokenizer in {path}: {e}") from e
        backend = getattr(hf, "backend_tokenizer", None)
        if not isinstance(backend, tokenizers.Tokenizer):
            raise ValueError(
                f"the tokenizer in {path} has no fast (tokenizer.json) version; "
                "modelbench needs a Hugging Face fast tokenizer"
            )
        template = hf.chat_template if isinstance(hf.chat_template, str) else None
        return cls(backend, bos_token=hf.bos_token, eos_token=hf.eos_token, chat_template=template)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @cached_property
    def bos_token_id(self) -> int | None:
        return self._token_id(self.bos_token)

    @cached_property
    def eos_token_id(self) -> int | None:
        return self._token_id(self.eos_token)

    def _token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; special tokens written in the text map to their ids.

        Through ``encode_batch``, which releases the GIL while it works
        (``encode`` holds it: a megabyte of text would stall every other
        thread, a server's event loop included, for a second)."""
        return self.backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; bytes of an incomplete UTF-8 character decode as U+FFFD."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Render ``messages`` with the model's chat template (or
        ``chat_template``), as transformers does: ``continue_final_message``
        leaves the last message open, so the model continues it; other
        keyword arguments are the template's variables.

        Raises:
            ValueError: no chat template; or continue_final_message without a
                final message to continue, or with add_generation_prompt.
        """
        source = chat_template or self.chat_template
        if not source:
            raise ValueError("this model has no chat template; send a plain prompt instead")
        if continue_final_message:
            if add_generation_prompt:
                raise ValueError(
                    "continue_final_message and add_generation_prompt cannot both be true: "
                    "set add_generation_prompt to false to continue the last message"
                )
            if not messages or not isinstance(messages[-1].get("content"), str):
                raise ValueError("continue_final_message needs a last message with text content")
        template = _compile_template(source)
        rendered = str(
            template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                **kwargs,
            )
        )
        if continue_final_message:
            # What transformers does: cut what the template wrote after the last
            # message's text (its end-of-turn), so the text stays open.
            final = str(messages[-1]["content"]).strip()
            end = rendered.rfind(final)
            if end < 0:
                raise ValueError("the chat template does not write the last message's text as is")
            rendered = rendered[: end + len(final)]
        return rendered


_template_cache: dict[str, Any] = {}


def _compile_template(source: str) -> Any:
    """A Jinja template in the sandboxed environment transformers renders with."""
    if source in _template_cache:
        return _template_cache[source]
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template error: {message}")

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    template = env.from_string(source)
    _template_cache[source] = template
    return template


class IncrementalDetokenizer:
    """Turns generated ids, fed one at a time, into text deltas.

    Decodes a small window of ids (from ``prefix_offset``) so that tokenizers
    whose decoding depends on the previous token (sentencepiece's leading
    space) get it right, and holds back text that ends in an incomplete
    UTF-8 character (U+FFFD) until the next ids complete it. The deltas of
    ``add`` followed by ``flush`` concatenate to ``decode(all ids)``.

    Args:
        tokenizer: the model's tokenizer.
        prompt_ids: ids before the generated ones; they give decoding its
            context but produce no text.
        skip_special_tokens: as in ``Tokenizer.decode``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Iterable[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = list(prompt_ids)
        # ids[prefix_offset:read_offset] decode to text already emitted.
        self.prefix_offset = max(len(self.ids) - 5, 0)
        self.read_offset = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> str:
        """Append one id; return the text it completes (may be empty)."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the end of the stream)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(REPLACEMENT_CHAR) and not final):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
