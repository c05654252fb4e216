"""Task adapters against transformers: a label's score is its log-likelihood
after the prompt, computed by the engine's prompt logprobs, and it equals the
logsumexp over the label's forms of the sums of their tokens' log-softmax under
the Hugging Face model of the same folder; the result is calibrated by the same
scores after the content-free text. Covered with the model's chat template and
without one."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.engine_args import EngineArgs
from modelbench.engine.sampling_params import SamplingParams
from modelbench.tasks.adapters import (
    CONTENT_FREE_TEXT,
    SENTIMENT_LABELS,
    GenerationParameters,
    TaskInputError,
    label_forms,
    label_prompts,
    parse_parameters,
    run_task,
    summarize_prompt,
)

from ..tiny_models import build_tiny_model, load_reference_model

MAX_MODEL_LEN = 256
TEXT = "the cat sat on the mat; the dog sat on the log."


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the module: an AsyncEngine serves one loop."""
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(scope="module")
def chat_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("tasks") / "chat")


@pytest.fixture(scope="module")
def plain_path(chat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its chat template removed (transformers saves it
    as chat_template.jinja, older versions inside tokenizer_config.json)."""
    path = Path(shutil.copytree(chat_path, tmp_path_factory.mktemp("tasks") / "plain"))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config = path / "tokenizer_config.json"
    import json

    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def reference(chat_path: Path) -> PreTrainedModel:
    return load_reference_model(chat_path)


def _engine(path: Path, runner: asyncio.Runner) -> Iterator[AsyncEngine]:
    engine = AsyncEngine(
        EngineArgs(model=str(path), max_model_len=MAX_MODEL_LEN, kv_cache_memory=32 * 1024 * 1024)
    )
    try:
        yield engine
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def chat_engine(chat_path: Path, runner: asyncio.Runner) -> Iterator[AsyncEngine]:
    yield from _engine(chat_path, runner)


@pytest.fixture(scope="module")
def plain_engine(plain_path: Path, runner: asyncio.Runner) -> Iterator[AsyncEngine]:
    yield from _engine(plain_path, runner)


def reference_label_logprobs(
    model: PreTrainedModel, prefix: list[int], labels: list[list[int]]
) -> list[float]:
    """Sum over each label's tokens of log_softmax(logits at the position before)[token]."""
    out = []
    for label in labels:
        ids = torch.tensor([prefix + label])
        with torch.no_grad():
            logprobs = torch.log_softmax(
                model(ids).logits[0].float(), dim=-1
            )  # [num_tokens, vocab]
        positions = range(len(prefix), len(prefix) + len(label))
        out.append(sum(logprobs[t - 1, ids[0, t]].item() for t in positions))
    return out


def reference_label_scores(
    model: PreTrainedModel, prefix: list[int], label_ids: list[list[list[int]]]
) -> tuple[list[float], list[float], list[int]]:
    """Each label's logsumexp over its forms' sums, and its most likely form's
    per-token mean and token count."""
    scores, means, counts = [], [], []
    for forms in label_ids:
        sums = reference_label_logprobs(model, prefix, forms)
        best = max(range(len(forms)), key=lambda j: sums[j])
        scores.append(torch.logsumexp(torch.tensor(sums, dtype=torch.float64), 0).item())
        means.append(sums[best] / len(forms[best]))
        counts.append(len(forms[best]))
    return scores, means, counts


@pytest.mark.parametrize("template", ["chat", "plain"])
@pytest.mark.parametrize(
    ("task", "labels"),
    [
        ("sentiment", list(SENTIMENT_LABELS)),
        ("classify", ["sports", "cooking and food", "the weather", "cat"]),
    ],
)
def test_label_scores_are_the_reference_log_likelihoods(
    template: str,
    task: str,
    labels: list[str],
    runner: asyncio.Runner,
    chat_engine: AsyncEngine,
    plain_engine: AsyncEngine,
    reference: PreTrainedModel,
) -> None:
    engine = chat_engine if template == "chat" else plain_engine
    parameters = {"labels": labels} if task == "classify" else None
    output = runner.run(run_task(engine, task, TEXT, parameters))

    prefix, label_ids, used = label_prompts(engine.tokenizer, task, TEXT, labels)
    assert used == template == output.metadata["template"]
    expected, means, counts = reference_label_scores(reference, prefix, label_ids)
    got = [output.metadata["logprobs"][label] for label in labels]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-4)
    for label, mean, count in zip(labels, means, counts, strict=True):
        assert output.metadata["label_tokens"][label] == count
        assert output.metadata["mean_logprobs"][label] == pytest.approx(mean, rel=1e-4, abs=1e-4)

    # The calibration is the labels' log-softmax after the content-free text,
    # subtracted from theirs after the text.
    cf_prefix, cf_ids, _ = label_prompts(engine.tokenizer, task, CONTENT_FREE_TEXT, labels)
    prior = torch.log_softmax(
        torch.tensor(reference_label_scores(reference, cf_prefix, cf_ids)[0], dtype=torch.float64),
        0,
    )
    torch.testing.assert_close(
        torch.tensor([output.metadata["calibration"][la] for la in labels], dtype=torch.float64),
        prior,
        rtol=1e-3,
        atol=1e-3,
    )
    calibrated = torch.log_softmax(torch.tensor(expected, dtype=torch.float64), 0) - prior
    torch.testing.assert_close(
        torch.tensor([output.metadata["calibrated"][la] for la in labels], dtype=torch.float64),
        calibrated,
        rtol=1e-3,
        atol=1e-3,
    )

    # The probabilities are the softmax of the calibrated scores, and the label is the best.
    probabilities = torch.softmax(calibrated, 0).float()
    result = output.result
    assert isinstance(result, dict)
    assert list(result["scores"]) == labels
    torch.testing.assert_close(
        torch.tensor([result["scores"][la] for la in labels]),
        probabilities,
        rtol=1e-3,
        atol=1e-4,
    )
    assert result["label"] == labels[int(calibrated.argmax())]
    assert output.metadata["prompt_tokens"] == len(prefix)


def test_label_tokens_are_appended_exactly(
    chat_engine: AsyncEngine, plain_engine: AsyncEngine
) -> None:
    """The chat prefix ends where the assistant answers; the plain one before
    a space and the label; the label ids are its own encoding, unmerged."""
    tok = chat_engine.tokenizer
    prefix, label_ids, _ = label_prompts(tok, "classify", TEXT, ["dog", "log"])
    assert tok.decode(prefix, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert "one of: dog, log. Answer with one word." in tok.decode(
        prefix, skip_special_tokens=False
    )
    assert label_forms("dog") == ["dog", "Dog"] and label_forms("Dog") == ["Dog"]
    assert label_ids == [
        [tok.encode(form, add_special_tokens=False) for form in ("dog", "Dog")],
        [tok.encode(form, add_special_tokens=False) for form in ("log", "Log")],
    ]

    plain = plain_engine.tokenizer
    assert plain.chat_template is None
    prefix, label_ids, template = label_prompts(plain, "sentiment", TEXT, list(SENTIMENT_LABELS))
    assert template == "plain"
    assert plain.decode(prefix).endswith(f"Text: {TEXT}\nSentiment:")
    assert [[plain.decode(ids) for ids in forms] for forms in label_ids] == [
        [" positive", " Positive"],
        [" negative", " Negative"],
        [" neutral", " Neutral"],
    ]


def test_generate_is_the_engine_answer_to_the_plain_prompt(
    runner: asyncio.Runner, chat_engine: AsyncEngine
) -> None:
    output = runner.run(
        run_task(
            chat_engine,
            "generate",
            "the sea",
            {"max_tokens": 7, "temperature": 0, "ignore_eos": True},
        )
    )

    async def direct() -> str:
        text = ""
        params = SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True)
        async for out in chat_engine.generate("the sea", params):
            text += out.outputs[0].text
        return text

    assert output.result == runner.run(direct())
    assert output.metadata == {
        "finish_reason": "length",
        "prompt_tokens": len(chat_engine.tokenizer.encode("the sea")),
        "completion_tokens": 7,
    }


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_summarize_uses_the_template_greedy_by_default(
    template: str,
    runner: asyncio.Runner,
    chat_engine: AsyncEngine,
    plain_engine: AsyncEngine,
) -> None:
    engine = chat_engine if template == "chat" else plain_engine
    prompt, used = summarize_prompt(engine.tokenizer, TEXT)
    assert used == template
    rendered = engine.tokenizer.decode(prompt, skip_special_tokens=False)
    if template == "chat":
        assert rendered.startswith("<|im_start|>user\n") and TEXT in rendered
    else:
        assert rendered == f"Summarize the following text.\n\n{TEXT}\n\nSummary:"
    first = runner.run(run_task(engine, "summarize", TEXT, {"max_tokens": 12, "ignore_eos": True}))
    second = runner.run(run_task(engine, "summarize", TEXT, {"max_tokens": 12, "ignore_eos": True}))
    assert first.result == second.result  # greedy
    assert first.metadata["template"] == template
    assert first.metadata["prompt_tokens"] == len(prompt)
    assert first.metadata["completion_tokens"] == 12


@pytest.mark.parametrize(
    ("task", "parameters", "param", "message"),
    [
        (
            "generate",
            {"max_tokenz": 3},
            "parameters.max_tokenz",
            "unknown parameters for task 'generate': max_tokenz",
        ),
        ("generate", {"temperature": "hot"}, "parameters.temperature", "valid number"),
        ("generate", {"top_p": 0}, "parameters.top_p", "top_p"),
        ("generate", {"max_tokens": 0}, "parameters.max_tokens", "greater than or equal to 1"),
        ("sentiment", {"labels": ["a", "b"]}, "parameters.labels", "it takes: none"),
        ("classify", {}, "parameters.labels", "Field required"),
        ("classify", {"labels": []}, "parameters.labels", "at least 2"),
        ("classify", {"labels": ["a"]}, "parameters.labels", "at least 2"),
        ("classify", {"labels": ["a", " "]}, "parameters.labels", "blank"),
        ("classify", {"labels": ["a", "b", "a"]}, "parameters.labels", "'a' twice"),
        ("classify", {"labels": "a,b"}, "parameters.labels", "valid list"),
        ("translate", {}, "task", "task must be one of"),
    ],
)
def test_bad_parameters_name_the_field(
    task: str, parameters: dict, param: str, message: str
) -> None:
    with pytest.raises(TaskInputError, match=message) as caught:
        parse_parameters(task, parameters)
    assert caught.value.param == param


def test_too_long_text_and_max_tokens_past_the_context(
    runner: asyncio.Runner, chat_engine: AsyncEngine
) -> None:
    with pytest.raises(TaskInputError, match="too long") as caught:
        runner.run(run_task(chat_engine, "sentiment", "the cat sat " * 200))
    assert caught.value.param == "text"
    with pytest.raises(TaskInputError, match="max_tokens is 1000") as caught:
        runner.run(run_task(chat_engine, "generate", "the sea", {"max_tokens": 1000}))
    assert caught.value.param == "parameters.max_tokens"


def test_generation_defaults() -> None:
    params = GenerationParameters().sampling_params(128, greedy=True)
    assert (params.max_tokens, params.temperature) == (128, 0.0)
    params = GenerationParameters(temperature=0.5, max_tokens=3).sampling_params(128, greedy=True)
    assert (params.max_tokens, params.temperature) == (3, 0.5)


def test_parsed_parameters_must_belong_to_the_task(
    runner: asyncio.Runner, chat_engine: AsyncEngine
) -> None:
    with pytest.raises(TaskInputError, match="not the task 'sentiment'"):
        runner.run(run_task(chat_engine, "sentiment", TEXT, GenerationParameters()))
    parsed = parse_parameters("classify", {"labels": ["cat", "dog"]})
    output = runner.run(run_task(chat_engine, "classify", TEXT, parsed))
    assert isinstance(output.result, dict) and set(output.result["scores"]) == {"cat", "dog"}
