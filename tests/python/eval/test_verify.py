"""Verify's policy on given answers, run in the real sandbox: code taken out
of answers (fenced or not, a completion that continues a function header),
tests from doctests or given, the 400-worthy inputs named by field, and the
choice: a passing candidate, the majority when passing candidates disagree
on extra inputs, none when nothing passes (each failure with its reason)."""

from __future__ import annotations

import pytest

from modelbench.eval.sandbox import Limits, Sandbox
from modelbench.eval.verify import compile_error, extract_code, verify
from modelbench.eval.verify_tests import VerifyInputError, build_tests

LIMITS = Limits(wall_s=5.0, cpu_s=3)

MAGNITUDE_PROMPT = '''def magnitude(x: int) -> int:
    """How far x is from zero.
    >>> magnitude(3)
    3
    >>> magnitude(0)
    0
    """
'''


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(limits=LIMITS, concurrency=2)


def suite_for(prompt: str, tests: str | None = None, entry_point: str | None = None):
    return build_tests(prompt, tests, entry_point, "prompt")


# ---- code out of answers ---------------------------------------------------


def test_the_first_python_fence_wins_over_other_fences_and_prose() -> None:
    answer = (
        "Here is a shell line:\n```bash\necho hi\n```\nand the function:\n"
        "```python\ndef f(x):\n    return x\n```\nUse it:\n```python\nprint(f(1))\n```\n"
    )
    assert extract_code(answer) == "def f(x):\n    return x\n"


def test_any_fence_when_none_says_python_and_an_unclosed_one_runs_to_the_end() -> None:
    assert extract_code("Sure:\n```\ndef g():\n    return 1\n```") == "def g():\n    return 1\n"
    cut_off = "```py\ndef g():\n    return 1"
    assert extract_code(cut_off) == "def g():\n    return 1"
    indented = "1. Write:\n   ```python\n   def h():\n       return 2\n   ```\n"
    assert extract_code(indented) == "def h():\n    return 2\n"


def test_an_unfenced_answer_is_the_code() -> None:
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x\n"


def test_a_completion_continues_its_function_header() -> None:
    body = "    return x if x >= 0 else -x\n"
    assert extract_code(body, MAGNITUDE_PROMPT) == MAGNITUDE_PROMPT + body
    # a model that wrote the whole function again: only the answer compiles
    whole = "def magnitude(x):\n    return abs(x)\n"
    assert extract_code("\n" + whole, "def magnitude(x):\n") == "\n" + whole
    # a prompt that opens no function is not prepended
    assert extract_code("x = 1\n", "# set x\n") == "x = 1\n"


def test_compile_errors_name_the_line() -> None:
    assert compile_error("def f(:\n    pass\n") == "SyntaxError: invalid syntax (line 1)"
    assert compile_error("x = 1\n") is None


# ---- tests ------------------------------------------------------------------


def test_doctests_become_asserts_and_the_entry_point_is_found() -> None:
    suite = suite_for(MAGNITUDE_PROMPT)
    assert suite.origin == "doctests" and suite.entry_point == "magnitude"
    assert suite.source == "assert magnitude(3) == 3\nassert magnitude(0) == 0\n"
    # nudged from the tests' own arguments, none of them the tests' own
    assert suite.probes[:4] == ["(4,)", "(1,)", "(2,)", "(-1,)"]
    assert "(3,)" not in suite.probes and "(0,)" not in suite.probes


def test_doctests_of_printed_text_and_of_exceptions() -> None:
    prompt = (
        "Write shout(word) and div(a, b). For example:\n"
        "    >>> shout('hi')\n    HI!\n"
        "    >>> div(1, 0)\n    Traceback (most recent call last):\n      ...\n"
        "    ZeroDivisionError: division by zero\n"
    )
    suite = suite_for(prompt)
    assert """_doctest_prints("shout('hi')", 'HI!\\n')""" in suite.source
    assert "assert _raised == 'ZeroDivisionError'" in suite.source


def test_given_tests_win_and_a_check_function_is_called_with_the_entry_point() -> None:
    tests = "def check(candidate):\n    assert candidate(-2) == 2\n"
    suite = suite_for(MAGNITUDE_PROMPT, tests)
    assert suite.origin == "tests" and suite.entry_point == "magnitude"
    assert suite.source.endswith("\ncheck(magnitude)\n")
    assert suite.probes[0] == "(-1,)"
    tests_fn = "def test_zero():\n    assert magnitude(0) == 0\n"
    assert suite_for("", tests_fn).source.endswith("\ntest_zero()\n")


@pytest.mark.parametrize(
    "prompt, tests, entry_point, param, words",
    [
        ("", "assert f(1) ==", None, "tests", "SyntaxError"),
        ("", "return 1", None, "tests", "'return' outside function"),
        ("", "x = f(1)\n", None, "tests", "check nothing"),
        ("Write f.", None, None, "tests", "give tests"),
        ("", "def check(candidate):\n    assert candidate(1)\n", None, "entry_point", "check"),
        ("", "assert f(1) == 1", "f(x)", "entry_point", "must name a Python function"),
        (">>> f(1,\n2\n", None, None, "prompt", "does not compile"),
    ],
)
def test_bad_input_names_its_field(prompt, tests, entry_point, param, words) -> None:
    with pytest.raises(VerifyInputError) as caught:
        suite_for(prompt, tests, entry_point)
    assert caught.value.param == param and words in str(caught.value)


# ---- running and choosing ----------------------------------------------------

RIGHT = "def magnitude(x):\n    return abs(x)\n"
ALSO_RIGHT = "def magnitude(x):\n    return x if x >= 0 else -x\n"
WRONG_ON_NEGATIVES = "def magnitude(x):\n    return x\n"


def test_one_passing_candidate_is_chosen_and_each_failure_says_why(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT, "assert magnitude(3) == 3\nassert magnitude(-4) == 4\n")
    codes = [
        WRONG_ON_NEGATIVES,
        "def magnitude(x):\n    return 1 / 0\n",
        "def magnitude(x:\n",
        None,
        RIGHT,
    ]
    verdict = verify(sandbox, codes, suite, LIMITS, no_answer=["", "", "", "no answer: 504", ""])
    assert verdict.verified and verdict.chosen == 4
    assert verdict.reason == "one candidate passed the tests"
    wrong, crash, syntax, missing, right = verdict.candidates
    assert wrong.reason == "failed: assert magnitude(-4) == 4 (got -4)" and not wrong.passed
    assert crash.reason == "assert magnitude(3) == 3 raised ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in crash.output and "<answer>" in crash.output
    assert (
        syntax.reason.startswith("the code does not compile: SyntaxError") and syntax.run_s is None
    )
    assert missing.reason == "no answer: 504"
    assert right.passed and right.reason == "passed" and right.run_s > 0
    assert verdict.isolation == sandbox.isolation


def test_nothing_passing_is_not_verified(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT, "assert magnitude(-4) == 4\n")
    verdict = verify(sandbox, [WRONG_ON_NEGATIVES, "print('no function')\n"], suite, LIMITS)
    assert not verdict.verified and verdict.chosen is None
    assert verdict.reason == "none of the 2 candidates passed the tests"
    assert verdict.candidates[0].reason == "failed: assert magnitude(-4) == 4 (got -4)"
    no_function = verdict.candidates[1]
    assert no_function.reason == (
        "assert magnitude(-4) == 4 raised NameError: name 'magnitude' is not defined"
    )
    assert no_function.output.startswith("no function\n") and "Traceback" in no_function.output


def test_passing_candidates_that_disagree_go_with_the_majority(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT)  # magnitude(3) and magnitude(0): all three pass
    verdict = verify(sandbox, [WRONG_ON_NEGATIVES, RIGHT, ALSO_RIGHT], suite, LIMITS)
    assert [c.passed for c in verdict.candidates] == [True, True, True]
    assert verdict.groups == [[0], [1, 2]] and verdict.chosen == 1
    assert "magnitude(-1)" in verdict.probes
    assert verdict.reason.endswith("; the majority (2 of 3) is chosen")
    wrong, right, _ = verdict.candidates
    assert wrong.outcomes is not None and right.outcomes is not None
    probe = verdict.probes.index("magnitude(-1)")
    assert (
        str(wrong.outcomes[probe]) == "returned -1" and str(right.outcomes[probe]) == "returned 1"
    )


def test_a_tie_goes_to_the_group_asked_first_and_agreement_says_so(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT)
    tie = verify(sandbox, [WRONG_ON_NEGATIVES, RIGHT], suite, LIMITS)
    assert tie.groups == [[0], [1]] and tie.chosen == 0 and "no majority" in tie.reason
    agree = verify(sandbox, [RIGHT, ALSO_RIGHT], suite, LIMITS)
    assert agree.groups == [[0, 1]] and agree.chosen == 0 and "agree on" in agree.reason


def test_a_slow_input_is_left_out_and_an_exception_is_behaviour(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT)
    slow_on_negatives = "def magnitude(x):\n    while x < 0:\n        pass\n    return x\n"
    raises = "def magnitude(x):\n    if x < 0:\n        raise ValueError(x)\n    return x\n"
    verdict = verify(sandbox, [slow_on_negatives, RIGHT, raises], suite, LIMITS)
    assert "magnitude(-1)" in verdict.left_out  # the first timed out there
    assert "magnitude(4)" in verdict.probes and "magnitude(4)" not in verdict.left_out
    slow = verdict.candidates[0].outcomes
    assert slow is not None and str(slow[verdict.probes.index("magnitude(-1)")]) == "timed out"
    # without the negatives all three return the same
    assert verdict.groups == [[0, 1, 2]] and verdict.chosen == 0


def test_code_that_leaves_before_the_tests_end_fails(sandbox: Sandbox) -> None:
    suite = suite_for(MAGNITUDE_PROMPT)
    early_exit = "import os\nos._exit(0)\n"
    main_exit = RIGHT + "import sys\nsys.exit(0)\n"
    unittest_main = (
        "import unittest\n" + WRONG_ON_NEGATIVES + "if __name__ == '__main__':\n"
        "    unittest.main()\n"
    )
    exits_in_call = "def magnitude(x):\n    raise SystemExit(0)\n"
    verdict = verify(sandbox, [early_exit, main_exit, unittest_main, exits_in_call], suite, LIMITS)
    reasons = [c.reason for c in verdict.candidates]
    assert reasons[0] == "the program exited (with 0) before the tests finished"
    assert reasons[1] == "the answer called exit(0) as it loaded"
    assert verdict.candidates[2].passed  # its __main__ block did not run; the tests did
    assert reasons[3] == "exit(0) was called during the tests"
    assert verdict.chosen == 2
