"""Execution-verified answers (``POST /v1/verify``): take the code out of
each model's answer, run it in the sandbox against the tests, and choose an
answer only among the code that passed.

The policy, in order:

1. Code from an answer: its first fenced ``python`` block, else its first
   fenced block of any language, else the whole answer; an answer to a
   completion prompt that opens a function (``def f(...):``) continues it,
   so the code is the prompt and the answer together (unless only the
   answer compiles, as when a model wrote the whole function again).
2. Code that does not compile fails without a run; the rest runs, each
   candidate in a sandbox process of its own, against the tests
   (``verify_tests``; the harness is ``verify_program``).
3. No candidate passed: ``verified`` is false, and every candidate says why.
   One passed: it is the answer. Several passed: each is called on a few
   extra inputs derived from the tests' calls, the candidates are grouped by
   what they did there (returned equal values, raised the same exception),
   and the largest group's first candidate (in the order the models were
   asked) is the answer; a tie goes to the group whose first candidate came
   first. An input on which any candidate ran out of time is left out of the
   comparison (slow is not wrong).
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelbench.eval.sandbox import Limits, RunResult, Sandbox
from modelbench.eval.verify_program import (
    Outcome,
    failure_reason,
    finished,
    probe_outcomes,
    probe_program,
    tests_program,
)
from modelbench.eval.verify_tests import TestSuite

LANGUAGES = ("python",)
VERIFY_LIMITS = Limits(wall_s=10.0, cpu_s=5)  # one candidate's run against the tests
OUTPUT_EXCERPT_CHARS = 1000

FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
PYTHON_FENCES = ("python", "py", "python3")
FUNCTION_HEADER = re.compile(r"^[ \t]*def[ \t]+\w+[ \t]*\(", re.M)


def extract_code(answer: str, completion_prompt: str | None = None) -> str:
    """The code in ``answer`` (rule 1 above). ``completion_prompt``: the
    prompt a completion answer continues (None for a chat answer)."""
    blocks = FENCE.findall(answer)
    python = [code for lang, code in blocks if lang.lower() in PYTHON_FENCES]
    if python or blocks:
        return textwrap.dedent((python or [code for _, code in blocks])[0])
    if completion_prompt is not None and FUNCTION_HEADER.search(completion_prompt):
        whole = completion_prompt + answer
        if compile_error(whole) is None or compile_error(answer) is not None:
            return whole
    return answer


def compile_error(code: str) -> str | None:
    """Why ``code`` does not compile ("SyntaxError: ... (line 3)"), or None."""
    try:
        compile(code, "<answer>", "exec")
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Candidate:
    """One answer's code and how it did. ``code`` is None when the model
    gave no answer (``reason`` says why)."""

    code: str | None
    passed: bool = False
    reason: str = "not run"
    output: str = ""  # the run's stdout then stderr, cut to the end
    run_s: float | None = None
    outcomes: list[Outcome] | None = None  # on the extra inputs, when compared


@dataclass
class Verdict:
    """The candidates, in order, and the choice among them."""

    candidates: list[Candidate]
    isolation: str
    chosen: int | None = None  # index of the answer; None: nothing passed
    reason: str = ""
    probes: list[str] = field(default_factory=list)  # the extra inputs, as calls
    left_out: list[str] = field(default_factory=list)  # of those, where one ran out of time
    groups: list[list[int]] = field(default_factory=list)  # passing candidates by behaviour

    @property
    def verified(self) -> bool:
        return self.chosen is not None


def verify(
    sandbox: Sandbox,
    codes: Sequence[str | None],
    suite: TestSuite,
    limits: Limits = VERIFY_LIMITS,
    no_answer: Sequence[str] | None = None,
) -> Verdict:
    """Run each code against ``suite`` and choose (blocks: run it off the
    event loop). ``no_answer[i]`` is the reason given for a missing code."""
    token = secrets.token_hex(16)
    candidates = [Candidate(code) for code in codes]
    to_run = []
    for i, candidate in enumerate(candidates):
        if candidate.code is None:
            candidate.reason = (no_answer[i] if no_answer else "") or "no answer"
        elif (error := compile_error(candidate.code)) is not None:
            candidate.reason = f"the code does not compile: {error}"
        else:
            to_run.append(i)
    programs = [tests_program(candidates[i].code or "", suite.source, token) for i in to_run]
    for i, run in zip(to_run, sandbox.run_many(programs, limits), strict=True):
        note_run(candidates[i], run, token)
    verdict = Verdict(candidates, sandbox.isolation)
    passing = [i for i, c in enumerate(candidates) if c.passed]
    if not passing:
        verdict.reason = f"none of the {len(candidates)} candidates passed the tests"
    elif len(passing) == 1 or not suite.probes:
        verdict.chosen = passing[0]
        verdict.reason = (
            "one candidate passed the tests"
            if len(passing) == 1
            else f"{len(passing)} candidates passed; no extra inputs to compare them on "
            "(the tests call no function with literal arguments), so the first is chosen"
        )
    else:
        compare_on_probes(sandbox, verdict, passing, suite, token, limits)
    return verdict


def note_run(candidate: Candidate, run: RunResult, token: str) -> None:
    candidate.run_s = run.wall_s
    candidate.output = (run.stdout.replace(token + "\n", "") + run.stderr)[-OUTPUT_EXCERPT_CHARS:]
    if run.passed and not finished(run.stdout, token):
        candidate.reason = "the program exited (with 0) before the tests finished"
    else:
        candidate.passed = run.passed
        candidate.reason = failure_reason(run.reason, run.stderr)


def compare_on_probes(
    sandbox: Sandbox,
    verdict: Verdict,
    passing: list[int],
    suite: TestSuite,
    token: str,
    limits: Limits,
) -> None:
    """Rule 3 for several passing candidates."""
    assert suite.entry_point is not None, "probes come from calls of the entry point"
    programs = [
        probe_program(verdict.candidates[i].code or "", suite.entry_point, suite.probes, token)
        for i in passing
    ]
    runs = sandbox.run_many(programs, limits)
    outcomes = [probe_outcomes(run.stdout, token) for run in runs]
    for i, found in zip(passing, outcomes, strict=True):
        verdict.candidates[i].outcomes = found
    compared = [
        p
        for p in range(len(suite.probes))
        if all(found is None or found[p].kind != "timed out" for found in outcomes)
    ]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, found, run in zip(passing, outcomes, runs, strict=True):
        key = (
            tuple(found[p].key for p in compared)
            if found is not None
            else ("failed on the extra inputs", failure_reason(run.reason, run.stderr))
        )
        groups.setdefault(key, []).append(i)
    verdict.groups = list(groups.values())
    best = max(verdict.groups, key=len)  # the first of the largest: the earliest on a tie
    verdict.chosen = best[0]
    verdict.probes = [suite.probe_call(args) for args in suite.probes]
    verdict.left_out = [call for p, call in enumerate(verdict.probes) if p not in compared]
    if len(verdict.groups) == 1:
        verdict.reason = (
            f"{len(passing)} candidates passed and agree on {len(compared)} extra inputs"
        )
    elif [len(g) for g in verdict.groups].count(len(best)) > 1:
        verdict.reason = (
            f"{len(passing)} candidates passed but disagree on {len(compared)} extra inputs, "
            "with no majority; the group of the model asked first is chosen"
        )
    else:
        verdict.reason = (
            f"{len(passing)} candidates passed but disagree on {len(compared)} extra inputs; "
            f"the majority ({len(best)} of {len(passing)}) is chosen"
        )
