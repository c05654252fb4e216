"""Completions for HumanEval's prompts: from a model in process
(``AsyncEngine``) or from any OpenAI-compatible server (``/v1/completions``),
``samples`` per problem, at most ``concurrency`` requests at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.engine_args import EngineArgs
from modelbench.engine.sampling_params import SamplingParams
from modelbench.eval.humaneval import STOP, Problem, truncate
from modelbench.eval.verify import extract_code

Completion = tuple[str, int, str]  # task_id, sample, completion
# (task_id, sample) -> why no completion came: the model refused that prompt
# (longer than its context, ...); the sample is scored as a failure saying so.
Refusals = dict[tuple[str, int], str]


@dataclass(frozen=True)
class Sampling:
    samples: int = 1
    style: str = "completion"  # or "chat": the instruction through the chat template
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.style not in ("completion", "chat"):
            raise ValueError(f"style must be 'completion' or 'chat', got {self.style!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def finish(self, text: str) -> str:
        """A chat answer's code (a whole function), or a completion cut at the stops."""
        return extract_code(text) if self.style == "chat" else truncate(text)

    def seed_of(self, sample: int) -> int | None:
        return None if self.seed is None else self.seed + sample


def jobs(problems: Sequence[Problem], sampling: Sampling) -> list[tuple[Problem, int]]:
    return [(p, i) for p in problems for i in range(sampling.samples)]


async def generate_local(
    problems: Sequence[Problem],
    model: str | None,
    sampling: Sampling,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
    refusals: Refusals | None = None,
) -> list[Completion]:
    """Completions from ``model`` (a path; None: the default model) in process.
    A prompt the engine refuses gets an empty completion and its reason in
    ``refusals``."""
    engine = AsyncEngine(EngineArgs(model=model, max_num_seqs=max(1, concurrency)))
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Problem, sample: int) -> Completion:
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=STOP if sampling.style == "completion" else [],
            seed=sampling.seed_of(sample),
        )
        prompt: str | list[int] = problem.prompt
        if sampling.style == "chat":
            messages = [{"role": "user", "content": problem.chat_prompt()}]
            text = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            prompt = engine.tokenizer.encode(text, add_special_tokens=False)
        answer = ""
        async with gate:
            try:
                async for out in engine.generate(prompt, params):
                    answer += out.outputs[0].text
            except ValueError as exc:
                if refusals is None:
                    raise
                refusals[(problem.task_id, sample)] = str(exc)
        if on_done is not None:
            on_done()
        return problem.task_id, sample, sampling.finish(answer)

    try:
        return list(await asyncio.gather(*(one(p, i) for p, i in jobs(problems, sampling))))
    finally:
        engine.shutdown()


async def served_model(client: httpx.AsyncClient) -> str:
    """The first model a server lists (for a server of one model)."""
    r = await client.get("/v1/models")
    r.raise_for_status()
    data = r.json().get("data") or []
    if not data:
        raise ValueError("the server lists no model; name one with --model")
    return str(data[0]["id"])


async def generate_remote(
    problems: Sequence[Problem],
    base_url: str,
    model: str | None,
    sampling: Sampling,
    concurrency: int,
    api_key: str | None = None,
    on_done: Callable[[], None] | None = None,
    refusals: Refusals | None = None,
) -> tuple[str, list[Completion]]:
    """Completions from an OpenAI-compatible server; returns the model's name
    too. A 400 for one prompt (too long, ...) goes to ``refusals``; any other
    error status stops the run."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = base_url.rstrip("/").removesuffix("/v1")
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        name = model or await served_model(client)

        async def one(problem: Problem, sample: int) -> Completion:
            body: dict[str, object] = {
                "model": name,
                "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
            }
            if sampling.style == "chat":
                path = "/v1/chat/completions"
                body["messages"] = [{"role": "user", "content": problem.chat_prompt()}]
            else:
                path = "/v1/completions"
                body["prompt"] = problem.prompt
                body["stop"] = STOP[:4]  # OpenAI's API takes at most 4 stop sequences
            if sampling.seed is not None:
                body["seed"] = sampling.seed_of(sample)
            async with gate:
                r = await client.post(path, json=body)
            if r.status_code == 400 and refusals is not None:
                refusals[(problem.task_id, sample)] = f"{path} answered 400: {r.text[:300]}"
                if on_done is not None:
                    on_done()
                return problem.task_id, sample, ""
            if r.status_code != 200:
                raise ValueError(
                    f"{base}{path} answered {r.status_code} for {problem.task_id}: {r.text[:300]}"
                )
            if on_done is not None:
                on_done()
            choice = r.json()["choices"][0]
            text = choice["message"]["content"] if sampling.style == "chat" else choice["text"]
            return problem.task_id, sample, sampling.finish(text or "")

        done = await asyncio.gather(*(one(p, i) for p, i in jobs(problems, sampling)))
        return name, list(done)
