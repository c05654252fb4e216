"""Task adapters: generate, summarize, sentiment, classify and embed over an AsyncEngine.

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
- ``embed``: the text's mean-pooled, L2-normalized final hidden state (the
  vector /v1/embeddings gives), as ``{"embedding": [...], "dimensions": n}``.

Bad input raises ``TaskInputError`` (a ValueError) naming the parameter.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.encoder_engine import EncoderEngine
from modelbench.engine.errors import CONFLICTING_FIELDS, CONTEXT_LENGTH_EXCEEDED
from modelbench.engine.guided_fields import GuidedFields
from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.sampling_ranges import (
    MaxTokens,
    MinP,
    NonNegativeInt32,
    Penalty,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TokenId,
    TopK,
    TopP,
)
from modelbench.models.tokenizer import Tokenizer
from modelbench.tasks.base import (
    TaskInputError,
    TaskOutput,
    chat_prefix,
    check_length,
    has_chat_template,
)
from modelbench.tasks.labels import (
    CONTENT_FREE_TEXT,
    LabelScore,
    label_forms,
    label_prompts,
    run_labels,
    score_labels,
)

InferTask = Literal["generate", "summarize", "sentiment", "classify", "embed"]
INFER_TASKS: tuple[str, ...] = ("generate", "summarize", "sentiment", "classify", "embed")
SENTIMENT_LABELS = ("positive", "negative", "neutral")
DEFAULT_MAX_TOKENS = 128  # generate and summarize, capped by the room left in the context
MAX_LABELS = 64  # each label is one sequence through the engine


class GenerationParameters(GuidedFields):
    """Sampling parameters of generate and summarize (SamplingParams' fields
    that make sense for one answer; ``None`` is the task's default), and
    structured output (``guided_json``, ``response_format``, ...: GuidedFields)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_tokens: MaxTokens | None = None
    min_tokens: NonNegativeInt32 | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    repetition_penalty: RepetitionPenalty | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stop_token_ids: list[TokenId] | None = None
    include_stop_str_in_output: bool | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None

    def sampling_params(
        self, default_max_tokens: int, greedy: bool, model_defaults: dict[str, Any] | None = None
    ) -> SamplingParams:
        """SamplingParams of these values over the task's defaults, over the
        model's (its generation config). The task's length bound wins over
        the model's max_new_tokens; greedy tasks stay greedy."""
        given = self.model_dump(exclude_none=True, exclude=set(GuidedFields.model_fields))
        if self.max_tokens is not None and self.min_tokens is not None:
            if self.min_tokens > self.max_tokens:
                raise TaskInputError(
                    f"min_tokens is {self.min_tokens}, more than max_tokens ({self.max_tokens})",
                    "parameters.min_tokens",
                    CONFLICTING_FIELDS,
                )
        # Without max_tokens the task's bound, raised to min_tokens if that asks for more.
        default_max_tokens = max(default_max_tokens, self.min_tokens or 0)
        defaults: dict[str, Any] = {**(model_defaults or {}), "max_tokens": default_max_tokens}
        if greedy:
            defaults["temperature"] = 0.0
        try:
            return SamplingParams(**{**defaults, **given}, guided=self.guided("parameters."))
        except ValueError as exc:
            param = str(getattr(exc, "param", None) or "")
            if param.startswith("parameters."):
                raise TaskInputError(str(exc), param, getattr(exc, "code", None)) from exc
            field = getattr(exc, "param", None)
            param = f"parameters.{field}" if field in given else "parameters"
            raise TaskInputError(str(exc), param) from exc


class SentimentParameters(BaseModel):
    """Sentiment takes no parameters: its labels are fixed."""

    model_config = ConfigDict(extra="forbid")


class ClassifyParameters(BaseModel):
    """The candidate labels: at least two, unique, none blank."""

    model_config = ConfigDict(extra="forbid", strict=True)

    labels: Annotated[  # check_labels words the errors; the schema states the same
        list[str],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string", "pattern": "\\S"},
                "minItems": 2,
                "maxItems": MAX_LABELS,
                "uniqueItems": True,
            }
        ),
    ]


class EmbedParameters(BaseModel):
    """Embed takes no parameters: the vector is the mean-pooled, normalized
    final hidden state, as /v1/embeddings gives it."""

    model_config = ConfigDict(extra="forbid")


_PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "embed": EmbedParameters,
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
        raise TaskInputError(
            f"parameters.labels must hold at least 2 labels, got {len(labels)}", "parameters.labels"
        )
    if len(labels) > MAX_LABELS:
        raise TaskInputError(
            f"parameters.labels may hold at most {MAX_LABELS} labels, got {len(labels)}",
            "parameters.labels",
        )
    blank = [i for i, label in enumerate(labels) if not label.strip()]
    if blank:
        raise TaskInputError(
            f"parameters.labels[{blank[0]}] is blank; every label needs some text",
            "parameters.labels",
        )
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise TaskInputError(
                f"parameters.labels holds {label!r} twice; labels must be unique",
                "parameters.labels",
            )
        seen.add(label)


# ---- prompts ----------------------------------------------------------------


def summarize_prompt(tokenizer: Tokenizer, text: str) -> tuple[list[int], str]:
    """Token ids of the summarize prompt, and which template built it ("chat" or "plain")."""
    if has_chat_template(tokenizer):
        instruction = f"Summarize the following text in a few sentences.\n\n{text}"
        return chat_prefix(tokenizer, instruction), "chat"
    return tokenizer.encode(f"Summarize the following text.\n\n{text}\n\nSummary:"), "plain"


# ---- running ----------------------------------------------------------------


async def generate_text(
    engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams, request_id: str
) -> tuple[str, dict[str, Any]]:
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


async def run_task(
    engine: AsyncEngine | EncoderEngine,
    task: str,
    text: str,
    parameters: dict[str, Any] | BaseModel | None = None,
    request_id: str | None = None,
    priority: int = 0,
) -> TaskOutput:
    """Run ``task`` on ``text`` with ``engine``.

    Args:
        parameters: the task's parameters, as a dict (validated here) or as
            ``parse_parameters`` returned them.
        request_id: a prefix for the engine's request ids (unique per call).
        priority: the engine's scheduling priority of the task's requests
            (lower first, as vLLM's).

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
        if isinstance(parsed, GenerationParameters) and isinstance(engine, AsyncEngine):
            return await _run_generation(engine, task, text, parsed, request_id, priority)
        if isinstance(parsed, EmbedParameters):
            # An embedding model truncates past its max_seq_length (metadata says so).
            embedded = await engine.embed([text])
            vector = embedded.embeddings[0]
            return TaskOutput(
                result={"embedding": vector, "dimensions": len(vector)},
                metadata={
                    "prompt_tokens": embedded.num_prompt_tokens,
                    "truncated": embedded.truncated > 0,
                },
            )
        if isinstance(engine, EncoderEngine):
            raise TaskInputError(
                f"the task {task!r} needs a language model; this is an embedding model "
                "(task embed only)",
                "task",
            )
        labels = parsed.labels if isinstance(parsed, ClassifyParameters) else list(SENTIMENT_LABELS)
        return await run_labels(engine, task, text, labels, request_id, priority)
    except TaskInputError:
        raise
    except ValueError as exc:  # the engine refused the prompt (a token out of range, ...)
        param = str(getattr(exc, "param", None) or "")
        if param.startswith("parameters."):  # a structured-output constraint that does not compile
            raise TaskInputError(str(exc), param, getattr(exc, "code", None)) from exc
        raise TaskInputError(str(exc), "text") from exc


async def _run_generation(
    engine: AsyncEngine,
    task: str,
    text: str,
    parameters: GenerationParameters,
    request_id: str,
    priority: int,
) -> TaskOutput:
    tokenizer, max_model_len = engine.tokenizer, engine.max_model_len
    if task == "generate":
        prompt_ids, template = await asyncio.to_thread(tokenizer.encode, text), None
    else:
        prompt_ids, template = await asyncio.to_thread(summarize_prompt, tokenizer, text)
    check_length(len(prompt_ids), max_model_len)
    room = max_model_len - len(prompt_ids)
    params = parameters.sampling_params(
        min(DEFAULT_MAX_TOKENS, room), task == "summarize", engine.sampling_defaults
    )
    params.priority = priority
    if params.max_tokens > room:
        raise TaskInputError(
            f"max_tokens is {params.max_tokens}, but the prompt takes {len(prompt_ids)} of "
            f"the model's {max_model_len} tokens, which leaves {room}; lower max_tokens or "
            "shorten the text",
            "parameters.max_tokens",
            CONTEXT_LENGTH_EXCEEDED,
        )
    result, metadata = await generate_text(engine, prompt_ids, params, request_id)
    if template is None:
        return TaskOutput(result, metadata)
    return TaskOutput(result.strip(), {**metadata, "template": template})


__all__ = [
    "CONTENT_FREE_TEXT",
    "INFER_TASKS",
    "SENTIMENT_LABELS",
    "ClassifyParameters",
    "GenerationParameters",
    "LabelScore",
    "TaskInputError",
    "TaskOutput",
    "label_forms",
    "label_prompts",
    "parse_parameters",
    "run_task",
    "score_labels",
    "summarize_prompt",
]
