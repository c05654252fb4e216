"""What generation returns: RequestOutput and CompletionOutput (vLLM's shapes),
and the per-request output processing shared by ``LLM`` and ``AsyncEngine``:
incremental detokenization, stop strings, logprobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelbench import _core
from modelbench.engine.sampling_params import SamplingParams
from modelbench.models.tokenizer import IncrementalDetokenizer, Tokenizer


@dataclass
class Logprob:
    """One candidate token at a position."""

    logprob: float
    rank: int
    decoded_token: str


# Per position: token id -> Logprob (the chosen token and the top alternatives).
PositionLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    """One generated sequence. In streamed deltas, ``text`` and ``token_ids`` hold
    only what is new since the previous delta."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[PositionLogprobs] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it


@dataclass
class RequestMetrics:
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    queue_time_s: float | None = None
    first_token_time_s: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    metrics: RequestMetrics = field(default_factory=RequestMetrics)


def convert_logprobs(entry: _core.PositionLogprobs, tokenizer: Tokenizer) -> PositionLogprobs:
    out: PositionLogprobs = {}
    for candidate in [entry.chosen, *entry.top]:
        if candidate.token_id not in out:
            out[candidate.token_id] = Logprob(
                candidate.logprob,
                candidate.rank,
                tokenizer.decode([candidate.token_id], skip_special_tokens=False),
            )
    return out


class RequestState:
    """Turns the engine's token deltas for one sequence into text.

    Stop strings are searched in the text as it grows (they may span token
    boundaries); while a request streams, the last ``len(longest stop) - 1``
    characters are held back, since they may be the start of a stop string.
    """

    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        tokenizer: Tokenizer,
        eos_token_id: int | None,
        index: int = 0,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.tokenizer = tokenizer
        self.eos_token_id = eos_token_id
        self.index = index
        self.detokenizer = IncrementalDetokenizer(
            tokenizer, prompt_token_ids, skip_special_tokens=params.skip_special_tokens
        )
        self.token_ids: list[int] = []
        self.text = ""
        self.sent_text_len = 0
        self.sent_token_len = 0
        self.logprobs: list[PositionLogprobs] | None = [] if params.logprobs is not None else None
        self.cumulative_logprob: float | None = 0.0 if params.logprobs is not None else None
        self.prompt_logprobs: list[PositionLogprobs | None] | None = (
            [None] if params.prompt_logprobs is not None else None
        )
        self.finished = False
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.metrics = RequestMetrics()
        self._hold = max((len(s) for s in params.stop), default=1) - 1

    def update(self, out: _core.RequestOutput) -> bool:
        """Apply one engine output. Returns True when a stop string ended the
        request here, so the caller must abort it in the engine."""
        if self.finished:
            return False
        self.metrics = RequestMetrics(
            out.num_cached_tokens,
            out.num_preemptions,
            out.queue_time_s if out.queue_time_s >= 0 else None,
            out.first_token_time_s if out.first_token_time_s >= 0 else None,
        )
        if self.prompt_logprobs is not None:
            self.prompt_logprobs.extend(
                convert_logprobs(e, self.tokenizer) for e in out.prompt_logprobs
            )
        if self.logprobs is not None:
            for entry in out.logprobs:
                self.logprobs.append(convert_logprobs(entry, self.tokenizer))
                self.cumulative_logprob = (self.cumulative_logprob or 0.0) + entry.chosen.logprob
        for token_id in out.new_token_ids:
            self.token_ids.append(token_id)
            grown_from = len(self.text)
            self.text += self.detokenizer.add(token_id)
            if self._check_stop_strings(grown_from):
                return True
        if out.finished:
            grown_from = len(self.text)
            self.text += self.detokenizer.flush()
            if self._check_stop_strings(grown_from):
                return True
            self.finished = True
            self.finish_reason = out.finish_reason
            last = self.token_ids[-1] if self.token_ids else None
            if out.finish_reason == "stop" and last is not None and last != self.eos_token_id:
                self.stop_reason = last
        return False

    def _check_stop_strings(self, grown_from: int) -> bool:
        if not self.params.stop:
            return False
        # A new match ends in the text added since grown_from, so it starts
        # at most len(longest stop) - 1 characters before it.
        start = max(0, grown_from - self._hold)
        best = None
        for stop in self.params.stop:
            i = self.text.find(stop, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, stop)
        if best is None:
            return False
        i, stop = best
        self.text = (
            self.text[: i + len(stop)] if self.params.include_stop_str_in_output else self.text[:i]
        )
        self.finished = True
        self.finish_reason = "stop"
        self.stop_reason = stop
        return True

    def completion(self, delta: bool) -> CompletionOutput:
        """The output so far; with ``delta``, only what is new since the last call."""
        if not delta:
            return CompletionOutput(
                self.index,
                self.text,
                list(self.token_ids),
                self.cumulative_logprob,
                self.logprobs,
                self.finish_reason,
                self.stop_reason,
            )
        visible = (
            len(self.text)
            if self.finished
            else max(self.sent_text_len, len(self.text) - self._hold)
        )
        text = self.text[self.sent_text_len : visible]
        tokens = self.token_ids[self.sent_token_len :]
        logprobs = self.logprobs[self.sent_token_len :] if self.logprobs is not None else None
        self.sent_text_len = visible
        self.sent_token_len = len(self.token_ids)
        return CompletionOutput(
            self.index,
            text,
            tokens,
            self.cumulative_logprob,
            logprobs,
            self.finish_reason,
            self.stop_reason,
        )
