"""HumanEval in the sandbox: the canonical solutions pass all 164, wrong
ones none; pass@k is the paper's estimator; `modelbench eval humaneval`
generates (in process and from a real server), scores, writes JSON, stores
the run, and `modelbench report` draws it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelbench.bench.report import pass_at_k_figure
from modelbench.eval.humaneval import (
    SampleResult,
    load_problems,
    pass_at_k,
    score,
    summarize,
    truncate,
)
from modelbench.eval.sandbox import Sandbox
from modelbench.eval.saved import load_eval_runs
from modelbench.eval.verify import extract_code

from ..server.conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, free_port, run_server
from ..tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def problems():
    return load_problems()


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


def test_the_canonical_solutions_pass_all_164(problems, sandbox: Sandbox) -> None:
    assert len(problems) == 164 and problems[0].task_id == "HumanEval/0"
    results = score(problems, [(p.task_id, 0, p.canonical_solution) for p in problems], sandbox)
    failed = [(r.task_id, r.reason) for r in results if not r.passed]
    assert not failed
    assert summarize(results) == {"pass@1": 1.0}


def test_wrong_solutions_pass_none(problems, sandbox: Sandbox) -> None:
    wrong = [(p.task_id, 0, "    return None\n") for p in problems]
    results = score(problems, wrong, sandbox)
    assert summarize(results) == {"pass@1": 0.0}
    # Another problem's solution is wrong too, for a reason the result names.
    swapped = score(problems[:2], [("HumanEval/0", 0, problems[1].canonical_solution)], sandbox)
    assert not swapped[0].passed and swapped[0].reason.startswith("exit code 1:")


def test_a_whole_function_from_a_chat_answer_is_scored_with_the_prompts_imports(
    problems, sandbox: Sandbox
) -> None:
    problem = problems[0]  # uses typing.List from its prompt
    answer = "Here it is:\n```python\n" + problem.prompt + problem.canonical_solution + "```\nDone."
    code = extract_code(answer)
    assert code.startswith("from typing import List") and "Done" not in code
    (result,) = score(problems, [(problem.task_id, 0, code)], sandbox, style="solution")
    assert result.passed, result.reason


def test_extract_code_and_truncate() -> None:
    assert extract_code("```text\nx = 1\n```\n```python\ny = 2\n```") == "y = 2\n"
    assert extract_code("text\n```\nz = 3\n```") == "z = 3\n"
    assert extract_code("```python\nunclosed = 1\n") == "unclosed = 1\n"
    assert extract_code("just code") == "just code"
    assert truncate("    return x\n\ndef other():\n    pass") == "    return x\n"
    assert truncate("    return x\nif __name__ == '__main__':\n    main()") == "    return x"


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 0.7),  # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7, 5) / C(10, 5)
        (10, 8, 5, 1.0),  # n - c < k: every draw of 5 holds a correct one
        (100, 0, 10, 0.0),
    ],
)
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_summarize_averages_over_problems_and_checks_the_sample_counts() -> None:
    def results(task: str, passes: list[bool]) -> list[SampleResult]:
        return [SampleResult(task, i, "", ok, "", 0.0) for i, ok in enumerate(passes)]

    many = results("a", [True, False] * 5) + results("b", [False] * 10)
    got = summarize(many)
    assert set(got) == {"pass@1", "pass@10"}
    assert got["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["pass@10"] == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="different numbers of samples"):
        summarize(results("a", [True]) + results("b", [True, True]))
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 5)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelbench", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_cli_scores_given_completions_stores_and_reports_them(
    problems, tmp_path: Path, sqlite_url: str
) -> None:
    lines = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in problems[:3]]
    lines.append({"task_id": "HumanEval/2", "completion": "    return 0.0\n"})  # a wrong 2nd try
    lines.append({"task_id": "HumanEval/0", "completion": problems[0].canonical_solution})
    lines.append({"task_id": "HumanEval/1", "completion": "    return []\n"})
    (tmp_path / "done.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    out = cli(
        "eval", "humaneval", "--completions", "done.jsonl", "--json", "out.json",
        "--database-url", sqlite_url, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["pass@1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert summary["problems"] == 3 and summary["samples"] == 2
    assert summary["isolation"] in ("bubblewrap", "rlimits")
    assert [(r["task_id"], r["sample"], r["passed"]) for r in summary["results"]] == [
        ("HumanEval/0", 0, True),
        ("HumanEval/1", 0, True),
        ("HumanEval/2", 0, True),
        ("HumanEval/2", 1, False),
        ("HumanEval/0", 1, True),
        ("HumanEval/1", 1, False),
    ]
    assert "pass@1 = 0.6667" in out.stdout and "sandbox:" in out.stdout
    run_id = out.stdout.split("saved as ")[1].split()[0]
    (stored,) = load_eval_runs([run_id], sqlite_url)
    assert stored["summary"]["pass@1"] == pytest.approx(summary["pass@1"])
    assert len(stored["results"]) == 6 and stored["results"][3]["reason"].startswith("exit code")

    fig = pass_at_k_figure([stored])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pass@1"]
    assert [b.get_height() for b in ax.containers[0]] == pytest.approx([2 / 3])
    report = cli("report", run_id, "--out", "rep", "--database-url", sqlite_url, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "pass@1" in report.stdout and (tmp_path / "rep" / "pass_at_k.png").is_file()
    listed = cli("report", "--list", "--database-url", sqlite_url, cwd=tmp_path)
    assert run_id in listed.stdout

    (tmp_path / "bad.jsonl").write_text('{"task_id": "HumanEval/0"}\n')
    bad = cli("eval", "humaneval", "--completions", "bad.jsonl", "--no-save", cwd=tmp_path)
    assert bad.returncode != 0 and "bad.jsonl:1: expected a JSON object" in bad.stderr


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough for HumanEval's prompts through a chat template (up to ~520 tokens).
    path = tmp_path_factory.mktemp("he") / "llama"
    return build_tiny_model("llama_gqa", path, max_position_embeddings=1024)


@pytest.mark.parametrize("style", ["completion", "chat"])
def test_cli_generates_in_process_and_from_a_server(
    tiny_path: Path, tmp_path: Path, style: str
) -> None:
    from modelbench.config import Settings

    local = cli(
        "eval", "humaneval", "--model", str(tiny_path), "--limit", "3", "--samples", "2",
        "--temperature", "0.8", "--seed", "1", "--max-tokens", "24", "--style", style,
        "--json", "local.json", "--no-save", cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    summary = json.loads((tmp_path / "local.json").read_text())
    assert summary["problems"] == 3 and summary["samples"] == 2 and "pass@1" in summary
    assert all(not r["passed"] and r["reason"] for r in summary["results"])  # random weights
    assert all(r["run_s"] > 0 for r in summary["results"])  # each ran in the sandbox

    settings = Settings(
        model=str(tiny_path), port=free_port(), max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY, served_model_name="tiny",
    )  # fmt: skip
    with run_server(settings, tiny_path) as server:
        remote = cli(
            "eval", "humaneval", "--base-url", server.base_url + "/v1", "--limit", "3",
            "--max-tokens", "16", "--style", style, "--json", "remote.json", "--no-save",
            cwd=tmp_path,
        )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    served = json.loads((tmp_path / "remote.json").read_text())
    assert served["model"] == "tiny" and served["problems"] == 3
    # The server's 256 tokens hold HumanEval/2's prompt (220 tokens with this
    # tokenizer) but not HumanEval/0's (263): that sample fails, saying why.
    reasons = {r["task_id"]: r["reason"] for r in served["results"]}
    assert "answered 400" in reasons["HumanEval/0"] and "256 tokens" in reasons["HumanEval/0"]
    if style == "completion":
        assert not reasons["HumanEval/2"].startswith("no completion")
    assert served["config"]["base_url"].startswith("http://127.0.0.1")
