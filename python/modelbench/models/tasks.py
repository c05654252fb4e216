"""Task adapters: generate, summarize, sentiment and classify over an AsyncEngine.

Each task turns a text into a prompt, runs it through the engine and shapes
the answer; nothing here knows HTTP, so notebooks use it as the server does::

    output = await run_task(engine, "sentiment", "I loved this film.")
    output.result   # {"label": "positive", "scores": {"positive": 0.71, ...}}

- ``generate``: the text is a plain prompt; ``parameters`` are sampling
  parameters (``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``,
  ``stop``, ...). The result is the generated text.
- ``summarize``: an instruction through the model's chat template (a plain
  "Summarize ...\\n\\nSummary:" prompt when the model has none), greedy and at
  most 128 tokens unless ``parameters`` say otherwise.
- ``sentiment`` / ``classify``: the labels are listed in an instruction
  through the chat template ("Classify the sentiment of the text as one of:
  positive, negative, neutral. Answer with one word." and the text), and each
  label is scored by its log-likelihood as the assistant's answer, read from
  the engine's prompt logprobs: the sum of its tokens' logprobs, taken over
  the label as given and capitalised (the logsumexp of the two forms' sums).
  The scores are calibrated against a content-free input (Zhao et al. 2021):
  the labels' log-softmax after an empty text is subtracted, which removes
  the small model's prior for some labels ("positive", "cooking"). The result
  is the best calibrated label and the softmax of the calibrated scores.
  Sentiment's labels are positive/negative/neutral; classify's come in
  ``parameters["labels"]``. On SmolLM2-135M-Instruct this gets 20 of 30
  sentiment sentences (every positive and negative one, neutral mostly not)
  and 29 of 30 topic sentences of tests/python/data/task_eval.json right
  (10 and 12 before: the labels' prior decided).

Bad input raises ``TaskInputError`` (a ValueError) naming the parameter.
"""

from __future__ import annotations

import asyncio
import math
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelbench.async_engine import AsyncEngine
from modelbench.models.tokenizer import Tokenizer
from modelbench.sampling_params import SamplingParams

InferTask = Literal["generate", "summarize", "sentiment", "classify"]
INFER_TASKS: tuple[str, ...] = ("generate", "summarize", "sentiment", "classify")
SENTIMENT_LABELS = ("positive", "negative", "neutral")
DEFAULT_MAX_TOKENS = 128  # generate and summarize, capped by the room left in the context
MAX_LABELS = 64  # each label is one sequence through the engine


class TaskInputError(ValueError):
    """Input a caller got wrong; ``param`` names it (``"parameters.labels"``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ---- parameters -------------------------------------------------------------


class GenerationParameters(BaseModel):
    """Sampling parameters of generate and summarize (SamplingParams' fields
    that make sense for one answer; ``None`` is the task's default)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None

    def sampling_params(self, default_max_tokens: int, greedy: bool) -> SamplingParams:
        """SamplingParams of these values over the task's defaults."""
        given = self.model_dump(exclude_none=True)
        defaults: dict[str, Any] = {"max_tokens": default_max_tokens}
        if greedy:
            defaults["temperature"] = 0.0
        try:
            return SamplingParams(**{**defaults, **given})
        except ValueError as exc:
            field = str(exc).split(" ", 1)[0]
            param = f"parameters.{field}" if field in given else "parameters"
            raise TaskInputError(str(exc), param) from exc


class SentimentParameters(BaseModel):
    """Sentiment takes no parameters: its labels are fixed."""

    model_config = ConfigDict(extra="forbid")


class ClassifyParameters(BaseModel):
    """The candidate labels: at least two, unique, none blank."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str]


_PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "generate": GenerationParameters,
    "summarize": GenerationParameters,
    "sentiment": SentimentParameters,
    "classify": ClassifyParameters,
}


def parse_parameters(task: str, parameters: dict[str, Any] | None) -> BaseModel:
    """The task's parameters, validated; TaskInputError names the first bad one."""
    if task not in _PARAMETER_MODELS:
        raise TaskInputError(f"task must be one of {', '.join(INFER_TASKS)}, got {task!r}", "task")
    model = _PARAMETER_MODELS[task]
    parameters = parameters or {}
    unknown = [name for name in parameters if name not in model.model_fields]
    if unknown:
        allowed = ", ".join(model.model_fields) or "none"
        raise TaskInputError(
            f"unknown parameters for task {task!r}: {', '.join(unknown)}; it takes: {allowed}",
            f"parameters.{unknown[0]}",
        )
    try:
        parsed = model.model_validate(parameters)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = f"parameters.{loc}: {first['msg']}"
        if first.get("type") != "missing":
            message += f" (got {first.get('input')!r})"[:300]
        raise TaskInputError(message, f"parameters.{first['loc'][0]}") from exc
    if isinstance(parsed, ClassifyParameters):
        check_labels(parsed.labels)
    if isinstance(parsed, GenerationParameters):
        parsed.sampling_params(DEFAULT_MAX_TOKENS, greedy=False)  # range checks, before any work
    return parsed


def check_labels(labels: list[str]) -> None:
    """At least two labels, at most MAX_LABELS, unique, none blank."""
    if len(labels) < 2:
        raise TaskInputError(f"parameters.labels must hold at least 2 labels, got {len(labels)}",
                             "parameters.labels")
    if len(labels) > MAX_LABELS:
        raise TaskInputError(
            f"parameters.labels may hold at most {MAX_LABELS} labels, got {len(labels)}",
            "parameters.labels")
    blank = [i for i, label in enumerate(labels) if not label.strip()]
    if blank:
        raise TaskInputError(f"parameters.labels[{blank[0]}] is blank; every label needs some text",
                             "parameters.labels")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise TaskInputError(f"parameters.labels holds {label!r} twice; labels must be unique",
                                 "parameters.labels")
        seen.add(label)


# ---- prompts ----------------------------------------------------------------


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(tokenizer.chat_template)


def _chat_prefix(tokenizer: Tokenizer, instruction: str) -> list[int]:
    """The chat template over one user message, up to where the assistant
    answers. The template writes the special tokens itself."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": instruction}],
                                         add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def summarize_prompt(tokenizer: Tokenizer, text: str) -> tuple[list[int], str]:
    """Token ids of the summarize prompt, and which template built it ("chat" or "plain")."""
    if has_chat_template(tokenizer):
        instruction = f"Summarize the following text in a few sentences.\n\n{text}"
        return _chat_prefix(tokenizer, instruction), "chat"
    return tokenizer.encode(f"Summarize the following text.\n\n{text}\n\nSummary:"), "plain"


CONTENT_FREE_TEXT = ""  # the calibration input: the instruction over an empty text


def label_instruction(task: str, text: str, labels: list[str]) -> str:
    """The question whose answer is one of the labels, listed."""
    what = "the sentiment of the text" if task == "sentiment" else "the text"
    return (f"Classify {what} as one of: {', '.join(labels)}. Answer with one word."
            f"\n\nText: {text}")


def label_forms(label: str) -> list[str]:
    """The surface forms a label is scored in: as given, and capitalised."""
    forms = [label]
    capitalised = label[:1].upper() + label[1:]
    if capitalised != label:
        forms.append(capitalised)
    return forms


def label_prompts(tokenizer: Tokenizer, task: str, text: str,
                  labels: list[str]) -> tuple[list[int], list[list[list[int]]], str]:
    """The prompt before the answer, each label's forms' answer tokens, and the template.

    The prefix and the labels are tokenized apart and concatenated, so a
    label's tokens are exactly those scored whatever the tokenizer would merge
    across the boundary. With a chat template a label is the assistant's
    whole answer; with the plain template it follows "Sentiment:" or
    "Category:" after a space. ``label_ids[i][j]`` are the tokens of
    ``label_forms(labels[i])[j]``."""
    instruction = label_instruction(task, text, labels)
    if has_chat_template(tokenizer):
        prefix, template, lead = _chat_prefix(tokenizer, instruction), "chat", ""
    else:
        answer = "Sentiment:" if task == "sentiment" else "Category:"
        prefix, template, lead = tokenizer.encode(f"{instruction}\n{answer}"), "plain", " "
    label_ids = [[tokenizer.encode(lead + form, add_special_tokens=False)
                  for form in label_forms(label)] for label in labels]
    return prefix, label_ids, template


# ---- running ----------------------------------------------------------------


@dataclass
class TaskOutput:
    """What a task returns: the result (text, or label and scores) and metadata."""

    result: str | dict[str, Any]
    metadata: dict[str, Any]


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


async def generate_text(engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams,
                        request_id: str) -> tuple[str, dict[str, Any]]:
    """Run one prompt to the end: its text, and finish reason and token counts."""
    text, num_generated, last = "", 0, None
    async for out in engine.generate(prompt_ids, params, request_id):
        text += out.outputs[0].text
        num_generated += len(out.outputs[0].token_ids)
        last = out
    assert last is not None and last.finished, "the engine ended a stream without a final output"
    return text, {
        "finish_reason": last.outputs[0].finish_reason,
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": num_generated,
    }


async def score_labels(engine: AsyncEngine, prefix_ids: list[int], label_ids: list[list[int]],
                       labels: list[str], request_id: str) -> list[LabelScore]:
    """Each label's log-likelihood after the prefix: the sum of its tokens'
    logprobs from the engine's prompt logprobs. The labels run concurrently,
    so the engine batches them. Prompt-logprob requests skip the prefix cache,
    so every position is computed (and scored) afresh."""
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)

    async def one(i: int) -> LabelScore:
        ids = prefix_ids + label_ids[i]
        last = None
        async for out in engine.generate(ids, params, f"{request_id}-label{i}"):
            last = out
        assert last is not None and last.prompt_logprobs is not None
        positions = last.prompt_logprobs[len(prefix_ids):]
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


async def run_task(engine: AsyncEngine, task: str, text: str,
                   parameters: dict[str, Any] | BaseModel | None = None,
                   request_id: str | None = None) -> TaskOutput:
    """Run ``task`` on ``text`` with ``engine``.

    Args:
        parameters: the task's parameters, as a dict (validated here) or as
            ``parse_parameters`` returned them.
        request_id: a prefix for the engine's request ids (unique per call).

    Raises:
        TaskInputError: a bad task, parameter, or a text the model cannot take.
    """
    if isinstance(parameters, BaseModel):
        if not isinstance(parameters, _PARAMETER_MODELS.get(task, ())):
            raise TaskInputError(f"these parameters are not the task {task!r}'s", "parameters")
        parsed = parameters
    else:
        parsed = parse_parameters(task, parameters)
    if not text:
        raise TaskInputError("text must not be empty", "text")
    request_id = request_id or uuid.uuid4().hex
    try:
        if isinstance(parsed, GenerationParameters):
            return await _run_generation(engine, task, text, parsed, request_id)
        labels = parsed.labels if isinstance(parsed, ClassifyParameters) else list(SENTIMENT_LABELS)
        return await _run_labels(engine, task, text, labels, request_id)
    except TaskInputError:
        raise
    except ValueError as exc:  # the engine refused the prompt (a token out of range, ...)
        raise TaskInputError(str(exc), "text") from exc


async def _run_generation(engine: AsyncEngine, task: str, text: str,
                          parameters: GenerationParameters, request_id: str) -> TaskOutput:
    tokenizer, max_model_len = engine.tokenizer, engine.config.scheduler.max_model_len
    if task == "generate":
        prompt_ids, template = await asyncio.to_thread(tokenizer.encode, text), None
    else:
        prompt_ids, template = await asyncio.to_thread(summarize_prompt, tokenizer, text)
    _check_length(len(prompt_ids), max_model_len)
    room = max_model_len - len(prompt_ids)
    params = parameters.sampling_params(min(DEFAULT_MAX_TOKENS, room), greedy=task == "summarize")
    if params.max_tokens > room:
        raise TaskInputError(
            f"max_tokens is {params.max_tokens}, but the prompt takes {len(prompt_ids)} of "
            f"the model's {max_model_len} tokens, which leaves {room}; lower max_tokens or "
            "shorten the text", "parameters.max_tokens")
    result, metadata = await generate_text(engine, prompt_ids, params, request_id)
    if template is None:
        return TaskOutput(result, metadata)
    return TaskOutput(result.strip(), {**metadata, "template": template})


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
_CALIBRATION: weakref.WeakKeyDictionary[Any, dict[tuple, list[float]]] = weakref.WeakKeyDictionary()
_CALIBRATION_ENTRIES = 256


async def _score_prompt(engine: AsyncEngine, prefix: list[int], label_ids: list[list[list[int]]],
                        labels: list[str], request_id: str) -> list[LabelScore]:
    """Each label's score after ``prefix``, over its forms (all batched)."""
    flat = [(i, ids) for i, forms in enumerate(label_ids) for ids in forms]
    scores = await score_labels(engine, prefix, [ids for _, ids in flat],
                                [labels[i] for i, _ in flat], request_id)
    per_label: list[list[LabelScore]] = [[] for _ in labels]
    for (i, _), score in zip(flat, scores, strict=True):
        per_label[i].append(score)
    return [combine_forms(forms) for forms in per_label]


async def _calibration(engine: AsyncEngine, task: str, labels: list[str],
                       request_id: str) -> list[float]:
    """The labels' log-softmax after the content-free text (cached per engine)."""
    key = (task, tuple(labels))
    try:
        cache = _CALIBRATION.setdefault(engine, {})
    except TypeError:  # an engine that takes no weak reference: no cache
        cache = {}
    if key in cache:
        return cache[key]
    prefix, label_ids, _ = await asyncio.to_thread(
        label_prompts, engine.tokenizer, task, CONTENT_FREE_TEXT, labels)
    scores = await _score_prompt(engine, prefix, label_ids, labels, f"{request_id}-cf")
    values = log_softmax([s.logprob for s in scores])
    if len(cache) >= _CALIBRATION_ENTRIES:
        cache.pop(next(iter(cache)))
    cache[key] = values
    return values


async def _run_labels(engine: AsyncEngine, task: str, text: str, labels: list[str],
                      request_id: str) -> TaskOutput:
    prefix, label_ids, template = await asyncio.to_thread(
        label_prompts, engine.tokenizer, task, text, labels)
    # max_tokens=1 is generated after the longest label, so it needs a slot too.
    longest = len(prefix) + max(len(ids) for forms in label_ids for ids in forms)
    _check_length(longest, engine.config.scheduler.max_model_len)
    scores, prior = await asyncio.gather(
        _score_prompt(engine, prefix, label_ids, labels, request_id),
        _calibration(engine, task, labels, request_id))
    calibrated = [x - p for x, p in zip(log_softmax([s.logprob for s in scores]), prior,
                                        strict=True)]
    probabilities = softmax(calibrated)
    best = max(range(len(scores)), key=lambda i: calibrated[i])
    return TaskOutput(
        {"label": labels[best],
         "scores": {s.label: p for s, p in zip(scores, probabilities, strict=True)}},
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


def _check_length(num_tokens: int, max_model_len: int) -> None:
    # One slot is left for the token the engine generates after the prompt.
    if num_tokens >= max_model_len:
        raise TaskInputError(
            f"text is too long: the prompt takes {num_tokens} tokens and the model's context "
            f"is {max_model_len}; shorten the text", "text")


__all__ = [
    "CONTENT_FREE_TEXT", "INFER_TASKS", "SENTIMENT_LABELS", "ClassifyParameters",
    "GenerationParameters", "LabelScore", "TaskInputError", "TaskOutput", "label_forms", "label_prompts", "parse_parameters", "run_task",
    "score_labels", "summarize_prompt",
]
