"""The C++ sampler against a reference built from transformers' logits processors."""

from __future__ import annotations

import random

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from modelbench import _core

VOCAB = 32
EOS = 3
NEG_INF = float("-inf")

Request = tuple[str, list[int], list[int], _core.SamplingParams]


def make_params(**fields: object) -> _core.SamplingParams:
    params = _core.SamplingParams()
    for name, value in fields.items():
        setattr(params, name, value)
    return params


def random_request(
    rng: random.Random, request_id: str, greedy: bool = False, vocab: int = VOCAB
) -> Request:
    params = make_params(
        temperature=0.0 if greedy else rng.choice([0.0, 0.5, 1.0, 1.7]),
        top_k=rng.choice([0, 0, 1, 3, 10, vocab - 1, vocab + 8]),
        top_p=rng.choice([1.0, 1.0, 0.3, 0.8, 0.95]),
        min_p=rng.choice([0.0, 0.0, 0.05, 0.2]),
        repetition_penalty=rng.choice([1.0, 1.3, 0.8]),
        presence_penalty=rng.choice([0.0, 0.5, -0.5]),
        frequency_penalty=rng.choice([0.0, 0.3, -0.3]),
        min_tokens=rng.choice([0, 0, 3]),
        stop_token_ids=rng.choice([[], [5, 7]]),
    )
    prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 8))]
    output = [rng.randrange(vocab) for _ in range(rng.randint(0, 6))]
    return request_id, prompt, output, params


def reference_probs(logits: torch.Tensor, request: Request) -> torch.Tensor:
    """[vocab] probabilities: penalties as vLLM, truncation as transformers; one-hot if greedy."""
    _, prompt, output, params = request
    vocab = logits.numel()
    scores = torch.nan_to_num(logits.clone(), nan=NEG_INF).unsqueeze(0)  # [1, vocab]
    if len(output) < params.min_tokens:
        scores[0, [EOS, *params.stop_token_ids]] = NEG_INF
    if params.repetition_penalty != 1.0:
        history = torch.tensor([prompt + output])
        scores = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)(history, scores)
    counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=vocab).float()
    if params.frequency_penalty != 0.0 or params.presence_penalty != 0.0:
        penalty = params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
        scores = scores - penalty
    if params.temperature == 0.0:
        return torch.nn.functional.one_hot(scores[0].argmax(), vocab).float()
    scores = TemperatureLogitsWarper(params.temperature)(None, scores)
    if params.top_k > 0:
        scores = TopKLogitsWarper(params.top_k)(None, scores)
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    if params.min_p > 0.0:
        scores = MinPLogitsWarper(params.min_p)(None, scores)
    return scores.softmax(-1)[0]


def test_greedy_matches_reference_argmax() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    logits = torch.randn(64, VOCAB)  # [64, vocab]
    requests = [random_request(rng, f"r{i}", greedy=True) for i in range(64)]
    token_ids, _ = _core.testing.Sampler(eos_token_id=EOS).sample(logits, requests)
    expected = [int(reference_probs(logits[i], r).argmax()) for i, r in enumerate(requests)]
    assert token_ids == expected


@pytest.mark.parametrize(("vocab", "configs", "rows"), [(VOCAB, 24, 8000), (2048, 8, 1000)])
def test_sampled_tokens_follow_reference_distribution(vocab: int, configs: int, rows: int) -> None:
    # Many configurations in one batch, each repeated `rows` times. Logits are
    # bounded so that most tokens the reference can draw are likely enough to
    # show up; draws are seeded, so the outcome is fixed. The large vocabulary
    # takes the sampler's path that widens its top-p candidates.
    rng = random.Random(vocab)
    torch.manual_seed(vocab)
    base = torch.rand(configs, vocab) * 4 - 2  # [configs, vocab]
    requests = [random_request(rng, f"r{c}", vocab=vocab) for c in range(configs)]
    logits = base.repeat_interleave(rows, dim=0)  # [configs * rows, vocab]
    batch = [requests[c] for c in range(configs) for _ in range(rows)]
    token_ids, _ = _core.testing.Sampler(eos_token_id=EOS).sample(logits, batch)

    counts = torch.bincount(
        torch.tensor(token_ids) + vocab * torch.arange(configs).repeat_interleave(rows),
        minlength=configs * vocab,
    ).view(configs, vocab)
    for c, request in enumerate(requests):
        probs = reference_probs(base[c], request)
        seen = counts[c] > 0
        assert not (seen & (probs == 0)).any(), f"config {c}: drew a token the reference excludes"
        likely = probs * rows >= 10
        assert seen[likely].all(), f"config {c}: never drew a token the reference allows"
        frequency = counts[c].float() / rows
        tolerance = 5 * (probs * (1 - probs) / rows).sqrt() + 1e-3
        assert ((frequency - probs).abs() <= tolerance).all(), f"config {c}: frequencies differ"


def test_seeded_request_ignores_the_rest_of_the_batch() -> None:
    torch.manual_seed(2)
    logits = torch.randn(1, 1000)  # [1, vocab]
    seeded = ("s", [1, 2], [], make_params(seed=123, temperature=0.9, top_p=0.95))

    def alone() -> list[int]:
        sampler = _core.testing.Sampler()
        return [sampler.sample(logits, [seeded])[0][0] for _ in range(10)]

    sampler = _core.testing.Sampler()
    in_batch = []
    for _ in range(10):
        batch = torch.randn(6, 1000)  # [6, vocab]
        batch[4] = logits[0]
        others = [(f"o{i}", [3], [], make_params(seed=i if i % 2 else None)) for i in range(6)]
        others[4] = seeded
        in_batch.append(sampler.sample(batch, others)[0][4])
    assert alone() == alone() == in_batch


def test_sample_reports_raw_logprobs() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, VOCAB)  # [2, vocab]
    expected = torch.log_softmax(logits, dim=-1)
    params = make_params(temperature=0.7, repetition_penalty=1.5, logprobs=4)
    requests = [("a", [0, 1, 2], [4], params), ("b", [0], [], make_params(logprobs=-1))]
    token_ids, logprobs = _core.testing.Sampler().sample(logits, requests)
    assert len(logprobs[0]) == 1 and logprobs[1] == []
    entry = logprobs[0][0]
    assert entry.chosen.token_id == token_ids[0]
    assert entry.chosen.logprob == pytest.approx(float(expected[0, token_ids[0]]), abs=1e-5)
    assert entry.chosen.rank == 1 + int((expected[0] > expected[0, token_ids[0]]).sum())
    values, ids = expected[0].topk(4)
    assert [t.token_id for t in entry.top] == ids.tolist()
    assert [t.logprob for t in entry.top] == pytest.approx(values.tolist(), abs=1e-5)
    assert [t.rank for t in entry.top] == [1, 2, 3, 4]


def test_compute_logprobs_matches_log_softmax() -> None:
    torch.manual_seed(4)
    logits = torch.randn(10, VOCAB)  # [10, vocab]
    targets = torch.randint(VOCAB, (10,))
    expected = torch.log_softmax(logits, dim=-1)
    entries = _core.testing.Sampler.compute_logprobs(logits, targets, 3)
    for i, entry in enumerate(entries):
        target = int(targets[i])
        assert entry.chosen.token_id == target
        assert entry.chosen.logprob == pytest.approx(float(expected[i, target]), abs=1e-5)
        assert entry.chosen.rank == 1 + int((expected[i] > expected[i, target]).sum())
        assert [t.token_id for t in entry.top] == expected[i].topk(3).indices.tolist()


def test_nan_logits_are_never_drawn() -> None:
    torch.manual_seed(5)
    logits = torch.randn(500, VOCAB)  # [500, vocab]
    logits[:, ::2] = float("nan")
    requests = [(f"r{i}", [0], [], make_params(logprobs=1)) for i in range(500)]
    token_ids, _ = _core.testing.Sampler().sample(logits, requests)
    assert all(t % 2 == 1 for t in token_ids)


def test_bad_input_is_rejected() -> None:
    sampler = _core.testing.Sampler()
    with pytest.raises(RuntimeError, match="rows"):
        sampler.sample(torch.zeros(3, VOCAB), [("a", [0], [], make_params())])
    with pytest.raises(RuntimeError, match="2-D"):
        sampler.sample(torch.zeros(VOCAB), [("a", [0], [], make_params())])
    with pytest.raises(ValueError, match="top_p"):
        sampler.sample(torch.zeros(1, VOCAB), [("a", [0], [], make_params(top_p=0.0))])
