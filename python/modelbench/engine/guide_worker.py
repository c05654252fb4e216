"""The matcher thread: follows each guided request's output through its
grammar and hands the C++ sampler the mask of allowed tokens.

The C++ engine never calls into Python for this. After each step it queues
what guided requests gained (``Engine.get_guide_events``); this thread
takes those tokens, advances each request's llguidance matcher and posts
the bitmask for the next output position (``Engine.post_token_mask``).
The engine meanwhile runs the next forward pass and waits for a mask only
when it samples, so the mask costs the step nothing unless computing it
takes longer than the forward. Constrained and unconstrained requests
share one batch.

One GuideWorker per engine; its thread starts with the first guided
request and ends with ``shutdown``.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from modelbench.engine.errors import InvalidParameter
from modelbench.engine.guided import GuidedDecodingParams, invalid

if TYPE_CHECKING:
    from modelbench import _core
    from modelbench.models.tokenizer import Tokenizer

# Compiled constraints kept for reuse (each a pristine matcher, copied per request).
CACHE_SIZE = 256


class GuidedDecodingError(RuntimeError):
    """A guided request's grammar could not go on (it ended with no valid output)."""


class GuideWorker:
    """Matchers of one engine's guided requests, and the thread that feeds them.

    Args:
        engine: the C++ engine whose guided requests this serves.
        tokenizer: the model's tokenizer (its ``tokenizers`` backend).
        vocab_size: columns of the model's logits (may exceed the tokenizer's ids).
        eos_token_id: the model's end-of-sequence id: where a finished
            grammar lets the output end.
    """

    def __init__(
        self,
        engine: _core.Engine,
        tokenizer: Tokenizer,
        vocab_size: int,
        eos_token_id: int | None,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = eos_token_id
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._matchers: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.num_compiled = 0  # constraints compiled (cache misses)

    def _llg_tokenizer(self) -> Any:
        with self._lock:
            if self._ll_tokenizer is None:
                if self._eos is None:
                    raise InvalidParameter(
                        "guided decoding needs a model with an end-of-sequence token; "
                        "this model has none",
                        "guided",
                    )
                from llguidance import LLTokenizer

                self._ll_tokenizer = LLTokenizer(
                    self._tokenizer.backend.to_str(), n_vocab=self._vocab_size, eos_token=self._eos
                )
            return self._ll_tokenizer

    def matcher(self, guided: GuidedDecodingParams) -> Any:
        """A fresh matcher at the start of ``guided``'s grammar. The grammar
        is compiled once per constraint (an LRU of CACHE_SIZE) and copied.
        Raises InvalidParameter naming ``guided.param`` for a schema, regex
        or grammar that does not compile."""
        from llguidance import LLMatcher

        tokenizer = self._llg_tokenizer()
        key = guided.cache_key()
        with self._lock:
            template = self._compiled.get(key)
            if template is not None:
                self._compiled.move_to_end(key)
        if template is None:
            try:
                grammar = guided.grammar_text()
            except ValueError as e:  # llguidance: the schema is not JSON it can read
                if isinstance(e, InvalidParameter):
                    raise
                raise invalid(f"{guided.param}: {e}", guided.param) from e
            template = LLMatcher(tokenizer, grammar, log_level=0)  # builds with the GIL released
            if template.is_error():
                raise invalid(
                    f"{guided.param}: the {guided.kind.replace('_', ' ')} constraint does not "
                    f"compile: {template.get_error()}",
                    guided.param,
                )
            with self._lock:
                self.num_compiled += 1
                self._compiled[key] = template
                while len(self._compiled) > CACHE_SIZE:
                    self._compiled.popitem(last=False)
        return template.deep_copy()

    def attach(self, request_id: str, matcher: Any) -> None:
        """Follow ``request_id`` (already added to the engine as guided) with
        ``matcher``: posts the mask of its first output token now, so that it
        is ready by the end of the prompt's forward pass."""
        self._ensure_thread()
        with self._lock:
            self._matchers[request_id] = matcher
        self._advance(request_id, matcher, [], 0)

    def pop_error(self, request_id: str) -> str | None:
        """Why a guided request ended with "abort", if its grammar was the cause."""
        with self._lock:
            return self._errors.pop(request_id, None)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            # The thread holds the worker weakly: a worker (and its engine)
            # dropped without shutdown() is freed, and the thread then ends.
            self._thread = threading.Thread(
                target=_run, args=(weakref.ref(self),), name="modelbench-guides", daemon=True
            )
            self._thread.start()
        # Stopped before the interpreter exits: a daemon thread ended while it
        # waits inside the engine (the GIL released) would unwind through C++
        # frames that cannot be unwound, and abort the process.
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    def _advance(self, request_id: str, matcher: Any, tokens: list[int], position: int) -> None:
        """Consume ``tokens`` and post the mask of output ``position``."""
        if tokens and not matcher.consume_tokens(tokens):
            self._fail(request_id, f"the output left its grammar: {matcher.get_error()}")
            return
        if matcher.is_error():
            self._fail(request_id, matcher.get_error())
            return
        mask = matcher.compute_bitmask()  # the GIL is released while it runs
        if not self._engine.post_token_mask(request_id, position, mask):
            with self._lock:  # the request ended meanwhile
                self._matchers.pop(request_id, None)

    def _fail(self, request_id: str, error: str) -> None:
        with self._lock:
            self._errors[request_id] = error
            self._matchers.pop(request_id, None)
        self._engine.fail_guide(request_id, error)

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            with self._lock:
                matcher = (
                    self._matchers.pop(event.request_id, None)
                    if event.finished
                    else self._matchers.get(event.request_id)
                )
            if matcher is None or event.finished:
                continue
            tokens = list(event.new_token_ids)
            try:
                self._advance(event.request_id, matcher, tokens, event.first_position + len(tokens))
            except Exception as e:  # never leave the sampler waiting
                self._fail(event.request_id, f"the matcher failed: {e}")

    def shutdown(self) -> None:
        """Stop the thread (after the engine has shut down, or before it is dropped)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None


def _run(ref: weakref.ref[GuideWorker]) -> None:
    while True:
        worker = ref()
        if worker is None or worker._stopping:
            return
        engine = worker._engine
        del worker  # not held while waiting
        events = engine.get_guide_events(0.5)
        worker = ref()
        if worker is None:
            return
        worker._handle(events)
        del worker, engine


def _shutdown_if_alive(ref: weakref.ref[GuideWorker]) -> None:
    worker = ref()
    if worker is not None:
        worker.shutdown()
