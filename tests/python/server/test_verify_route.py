"""POST /v1/verify and `modelbench verify` on a real server that holds the
tiny random-weight model beside upstream names served by real upstream
processes (tests/python/gateway/faulty_upstream.py) that answer fixed code:
a wrong function that passes the prompt's doctests, two right ones (fenced
and not), and one that fails. The tiny model writes no working code, so it
is never verified; the upstreams' answers are, and the majority wins when
the passing ones disagree. One record per model, tied by the verify id; bad
input is a 400 naming the field."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.config import Settings
from modelbench.eval.sandbox import bubblewrap_available

from ..gateway.test_gateway_faults import ROOT, Upstream, wait_until
from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, free_port, run_server

PROMPT = '''Complete this function; answer with its code only.

def magnitude(x: int) -> int:
    """How far x is from zero.
    >>> magnitude(3)
    3
    >>> magnitude(0)
    0
    """
'''
ANSWERS = {
    "wrong": "```python\ndef magnitude(x):\n    return x\n```",
    "right": "Here it is:\n\n```python\ndef magnitude(x: int) -> int:\n    return abs(x)\n```\n",
    "also-right": "def magnitude(x):\n    return x if x >= 0 else -x\n",
}
ISOLATION = "bubblewrap" if bubblewrap_available() else "rlimits"


@pytest.fixture(scope="module")
def url(tiny_llama_path: Path) -> Iterator[str]:
    upstreams = {name: Upstream("ok", text) for name, text in ANSWERS.items()}
    upstreams["broken"] = Upstream("error500")
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        upstream=[f"{name}={u.base}" for name, u in upstreams.items()],
    )
    try:
        with run_server(settings, tiny_llama_path) as running:
            yield running.base_url
    finally:
        for upstream in upstreams.values():
            upstream.stop()


def post(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/verify", json=body, timeout=120)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_passing_answers_that_disagree_go_with_the_majority(url: str) -> None:
    r = post(
        url,
        models=["wrong", "right", "also-right", MODEL_NAME],
        messages=chat(PROMPT),
        max_tokens=24,
        temperature=0,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True and body["isolation"] == ISOLATION
    assert body["tests_from"] == "doctests" and body["entry_point"] == "magnitude"
    assert body["tests"] == "assert magnitude(3) == 3\nassert magnitude(0) == 0\n"
    wrong, right, also_right, tiny = body["results"]
    assert [wrong["passed"], right["passed"], also_right["passed"]] == [True, True, True]
    assert right["code"] == "def magnitude(x: int) -> int:\n    return abs(x)\n"
    assert also_right["code"] == ANSWERS["also-right"]
    assert body["chosen"] == {"index": 1, "model": "right", "code": right["code"]}
    agreement = body["agreement"]
    assert agreement["groups"] == [[0], [1, 2]] and "magnitude(-1)" in agreement["inputs"]
    at = agreement["inputs"].index("magnitude(-1)")
    assert wrong["extra_outputs"][at] == "returned -1"
    assert right["extra_outputs"][at] == also_right["extra_outputs"][at] == "returned 1"
    assert right["served_by"].startswith("right@http://127.0.0.1:")
    assert right["generation_ms"] > 0 and right["run_ms"] > 0
    # the tiny model's random weights write no magnitude()
    assert tiny["model"] == "tiny-llama:1" and tiny["passed"] is False and tiny["reason"]
    assert tiny["usage"]["completion_tokens"] <= 24 and tiny["extra_outputs"] is None

    def recorded() -> list[dict]:
        rows = httpx.get(url + "/v1/requests", params={"limit": 50}, timeout=5).json()["data"]
        return [row for row in rows if row.get("compare_id") == body["verify_id"]]

    wait_until(lambda: len(recorded()) == 4, 10, "four records")
    assert body["verify_id"].startswith("vfy-")
    assert {row["model_name"] for row in recorded()} == {
        "wrong",
        "right",
        "also-right",
        "tiny-llama",
    }


def test_given_tests_decide_and_every_failure_says_why(url: str) -> None:
    tests = "def check(candidate):\n    assert candidate(3) == 3\n    assert candidate(-2) == 2\n"
    r = post(url, models=["wrong", "broken", "also-right"], messages=chat(PROMPT), tests=tests)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tests_from"] == "tests" and body["tests"].endswith("check(magnitude)\n")
    wrong, broken, also_right = body["results"]
    assert wrong["reason"] == "failed: assert candidate(-2) == 2 (got -2)"
    assert broken["code"] is None and broken["error"]["code"] == "upstreams_unavailable"
    assert broken["reason"].startswith("no answer: no upstream of 'broken' could answer")
    assert also_right["passed"] and body["chosen"]["model"] == "also-right"
    assert body["agreement"] is None and body["reason"] == "one candidate passed the tests"


def test_a_model_that_writes_no_working_code_is_not_verified(url: str) -> None:
    header = 'def add(a, b):\n    """\n    >>> add(2, 3)\n    5\n    """\n'
    r = post(url, models=[MODEL_NAME], prompt=header, max_tokens=16, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is False and body["chosen"] is None
    assert body["reason"] == "none of the 1 candidates passed the tests"
    (tiny,) = body["results"]
    assert tiny["passed"] is False and tiny["reason"] != "passed"
    assert tiny["code"] is not None and tiny["finish_reason"] in ("length", "stop")
    assert body["isolation"] == ISOLATION


@pytest.mark.parametrize(
    "change, param, words",
    [
        ({"models": []}, "models", "at least one model"),
        ({"language": "javascript"}, "language", "supported: python"),
        ({"tests": "assert magnitude(1) =="}, "tests", "SyntaxError"),
        ({"messages": chat("Write magnitude(x).")}, "tests", "give tests"),
        ({"stream": True}, "stream", "not supported"),
        ({"entry_point": "magnitude(x)"}, "entry_point", "must name a Python function"),
        ({"messages": None}, "messages", "one of them"),
        ({"max_tokens": 0}, "max_tokens", ""),
    ],
)
def test_bad_input_is_a_400_naming_the_field(url: str, change, param, words) -> None:
    body = {"models": ["right"], "messages": chat(PROMPT), **change}
    r = post(url, **{k: v for k, v in body.items() if v is not None})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_an_unknown_model_is_a_404(url: str) -> None:
    r = post(url, models=["right", "nope"], messages=chat(PROMPT))
    assert r.status_code == 404 and r.json()["error"]["param"] == "models"


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelbench", "verify", "--base-url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_the_command_prints_each_result_and_exits_0_when_verified(url: str) -> None:
    done = run_cli(url, "--model", "right", "--model", "wrong", "--model", "also-right", PROMPT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("verify vfy-") and f"{ISOLATION} sandbox" in lines[0]
    assert lines[1].startswith("  [passed] right@http://127.0.0.1:")
    assert "on extra inputs: " in lines[2] and "returned 1" in lines[2]
    assert lines[3].startswith("  [passed] wrong@") and "returned -1" in lines[4]
    assert lines[-3].startswith("verified: right (3 candidates passed but disagree")
    assert lines[-2:] == ["def magnitude(x: int) -> int:", "    return abs(x)"]


def test_the_command_exits_1_when_nothing_passes(url: str, tmp_path: Path) -> None:
    tests = tmp_path / "tests.py"
    tests.write_text("assert magnitude(-5) == 5\n")
    done = run_cli(
        url, "--model", "wrong", "--tests", str(tests), "--entry-point", "magnitude", PROMPT
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not verified" in done.stdout
    assert "failed: assert magnitude(-5) == 5 (got -5)" in done.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("assert (\n")
    refused = run_cli(url, "--model", "wrong", "--tests", str(bad), PROMPT)
    assert refused.returncode == 1 and "tests do not compile" in refused.stderr
