"""The label tasks, sentiment and classify: each label scored by its
log-likelihood as the answer to an instruction that lists the labels, over
the label's forms, calibrated against a content-free input (see
modelbench.tasks.adapters for the whole definition)."""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass
from typing import Any

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.sampling_params import SamplingParams
from modelbench.models.tokenizer import Tokenizer
from modelbench.tasks.base import TaskOutput, chat_prefix, check_length, has_chat_template

CONTENT_FREE_TEXT = ""  # the calibration input: the instruction over an empty text


def label_instruction(task: str, text: str, labels: list[str]) -> str:
    """The question whose answer is one of the labels, listed."""
    what = "the sentiment of the text" if task == "sentiment" else "the text"
    return f"Classify {what} as one of: {', '.join(labels)}. Answer with one word.\n\nText: {text}"


def label_forms(label: str) -> list[str]:
    """The surface forms a label is scored in: as given, and capitalised."""
    forms = [label]
    capitalised = label[:1].upper() + label[1:]
    if capitalised != label:
        forms.append(capitalised)
    return forms


def label_prompts(
    tokenizer: Tokenizer, task: str, text: str, labels: list[str]
) -> tuple[list[int], list[list[list[int]]], str]:
    """The prompt before the answer, each label's forms' answer tokens, and the template.

    The prefix and the labels are tokenized apart and concatenated, so a
    label's tokens are exactly those scored whatever the tokenizer would merge
    across the boundary. With a chat template a label is the assistant's
    whole answer; with the plain template it follows "Sentiment:" or
    "Category:" after a space. ``label_ids[i][j]`` are the tokens of
    ``label_forms(labels[i])[j]``."""
    instruction = label_instruction(task, text, labels)
    if has_chat_template(tokenizer):
        prefix, template, lead = chat_prefix(tokenizer, instruction), "chat", ""
    else:
        answer = "Sentiment:" if task == "sentiment" else "Category:"
        prefix, template, lead = tokenizer.encode(f"{instruction}\n{answer}"), "plain", " "
    label_ids = [
        [tokenizer.encode(lead + form, add_special_tokens=False) for form in label_forms(label)]
        for label in labels
    ]
    return prefix, label_ids, template


@dataclass
class LabelScore:
    label: str
    logprob: float  # the sum over the label's tokens (over its forms: their logsumexp)
    num_tokens: int
    form_logprob: float | None = None  # the counted form's own sum, when forms were combined

    @property
    def mean_logprob(self) -> float:
        own = self.logprob if self.form_logprob is None else self.form_logprob
        return own / self.num_tokens


async def score_labels(
    engine: AsyncEngine,
    prefix_ids: list[int],
    label_ids: list[list[int]],
    labels: list[str],
    request_id: str,
    priority: int = 0,
) -> list[LabelScore]:
    """Each label's log-likelihood after the prefix: the sum of its tokens'
    logprobs from the engine's prompt logprobs. The labels run concurrently,
    so the engine batches them. Prompt-logprob requests skip the prefix cache,
    so every position is computed (and scored) afresh."""
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, priority=priority)

    async def one(i: int) -> LabelScore:
        ids = prefix_ids + label_ids[i]
        last = None
        async for out in engine.generate(ids, params, f"{request_id}-label{i}"):
            last = out
        assert last is not None and last.prompt_logprobs is not None
        positions = last.prompt_logprobs[len(prefix_ids) :]
        assert len(positions) == len(label_ids[i]), "prompt logprobs do not cover the label"
        total = 0.0
        for token_id, position in zip(label_ids[i], positions, strict=True):
            assert position is not None and token_id in position, "a prompt token lacks its logprob"
            total += position[token_id].logprob
        return LabelScore(labels[i], total, len(label_ids[i]))

    return list(await asyncio.gather(*(one(i) for i in range(len(labels)))))


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def combine_forms(forms: list[LabelScore]) -> LabelScore:
    """A label's score over its forms: the logsumexp of the forms' sums (the
    probability that the answer is any of them); the token count is the most
    likely form's, so ``mean_logprob`` is that form's per-token mean."""
    best = max(forms, key=lambda f: f.logprob)
    total = logsumexp([f.logprob for f in forms])
    return LabelScore(best.label, total, best.num_tokens, best.logprob)


def log_softmax(scores: list[float]) -> list[float]:
    total = logsumexp(scores)
    return [s - total for s in scores]


# Content-free scores per engine and (task, labels): one prompt per label set.
_CALIBRATION: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], list[float]]] = (
    weakref.WeakKeyDictionary()
)
_CALIBRATION_ENTRIES = 256


async def _score_prompt(
    engine: AsyncEngine,
    prefix: list[int],
    label_ids: list[list[list[int]]],
    labels: list[str],
    request_id: str,
    priority: int = 0,
) -> list[LabelScore]:
    """Each label's score after ``prefix``, over its forms (all batched)."""
    flat = [(i, ids) for i, forms in enumerate(label_ids) for ids in forms]
    forms = [ids for _, ids in flat]
    scores = await score_labels(
        engine, prefix, forms, [labels[i] for i, _ in flat], request_id, priority
    )
    per_label: list[list[LabelScore]] = [[] for _ in labels]
    for (i, _), score in zip(flat, scores, strict=True):
        per_label[i].append(score)
    return [combine_forms(forms) for forms in per_label]


async def _calibration(
    engine: AsyncEngine, task: str, labels: list[str], request_id: str, priority: int = 0
) -> list[float]:
    """The labels' log-softmax after the content-free text (cached per engine)."""
    key = (task, tuple(labels))
    try:
        cache = _CALIBRATION.setdefault(engine, {})
    except TypeError:  # an engine that takes no weak reference: no cache
        cache = {}
    if key in cache:
        return cache[key]
    prefix, label_ids, _ = await asyncio.to_thread(
        label_prompts, engine.tokenizer, task, CONTENT_FREE_TEXT, labels
    )
    scores = await _score_prompt(engine, prefix, label_ids, labels, f"{request_id}-cf", priority)
    values = log_softmax([s.logprob for s in scores])
    if len(cache) >= _CALIBRATION_ENTRIES:
        cache.pop(next(iter(cache)))
    cache[key] = values
    return values


async def run_labels(
    engine: AsyncEngine,
    task: str,
    text: str,
    labels: list[str],
    request_id: str,
    priority: int = 0,
) -> TaskOutput:
    prefix, label_ids, template = await asyncio.to_thread(
        label_prompts, engine.tokenizer, task, text, labels
    )
    # max_tokens=1 is generated after the longest label, so it needs a slot too.
    longest = len(prefix) + max(len(ids) for forms in label_ids for ids in forms)
    check_length(longest, engine.max_model_len)
    scores, prior = await asyncio.gather(
        _score_prompt(engine, prefix, label_ids, labels, request_id, priority),
        _calibration(engine, task, labels, request_id, priority),
    )
    calibrated = [
        x - p for x, p in zip(log_softmax([s.logprob for s in scores]), prior, strict=True)
    ]
    probabilities = softmax(calibrated)
    best = max(range(len(scores)), key=lambda i: calibrated[i])
    return TaskOutput(
        {
            "label": labels[best],
            "scores": {s.label: p for s, p in zip(scores, probabilities, strict=True)},
        },
        {
            "logprobs": {s.label: s.logprob for s in scores},
            "mean_logprobs": {s.label: s.mean_logprob for s in scores},
            "label_tokens": {s.label: s.num_tokens for s in scores},
            "calibration": {la: p for la, p in zip(labels, prior, strict=True)},
            "calibrated": {la: c for la, c in zip(labels, calibrated, strict=True)},
            "prompt_tokens": len(prefix),
            "template": template,
        },
    )
