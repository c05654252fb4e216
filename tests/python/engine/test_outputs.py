"""RequestState: stop strings on detokenized text, whatever the token lengths."""

from __future__ import annotations

from types import SimpleNamespace

from modelbench.engine.outputs import RequestState
from modelbench.engine.sampling_params import SamplingParams

VOCAB = ["<s>", "Hello", " there", " a long token that ends here. And then more text follows", "!"]


class WordTokenizer:
    """Each id is a whole piece of text: decoding joins the pieces."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and i == 0))


def engine_output(token_id: int, finished: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        new_token_ids=[token_id],
        finished=finished,
        finish_reason="length" if finished else None,
        logprobs=[],
        prompt_logprobs=[],
        num_cached_tokens=0,
        num_preemptions=0,
        queue_time_s=-1.0,
        first_token_time_s=-1.0,
    )


def run(stop: list[str], tokens: list[int]) -> RequestState:
    state = RequestState(
        "r", None, [0], SamplingParams(stop=stop), WordTokenizer(), eos_token_id=None
    )
    for i, token in enumerate(tokens):
        if state.update(engine_output(token, finished=i == len(tokens) - 1)):
            break
    return state


def test_a_stop_string_early_in_a_long_token_is_found() -> None:
    state = run(["ends"], [1, 3, 4])
    assert state.finish_reason == "stop"
    assert state.text == "Hello a long token that "


def test_a_stop_string_spanning_two_tokens_is_found() -> None:
    state = run(["o th"], [1, 2, 4])
    assert state.stop_reason == "o th"
    assert state.text == "Hell"


def test_no_stop_string_leaves_the_text_whole() -> None:
    state = run(["zzz"], [1, 2, 4])
    assert state.finish_reason == "length"
    assert state.text == "Hello there!"
