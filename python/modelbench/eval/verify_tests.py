"""The tests a verify call runs each candidate against: the ones given
(Python asserts, or test functions), else the prompt's doctest examples made
into asserts; the function they test (``entry_point``); and the extra inputs
on which passing candidates are compared, derived from the tests' calls.

A user's mistake is a ``VerifyInputError`` whose ``param`` names the field
(``tests``, ``entry_point``, or the prompt's ``messages``/``prompt``)."""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_PROBES = 8  # extra inputs a disagreement is settled on
PYTHON_CALL_HINT = (
    "send Python asserts (assert f(1) == 2) or a test function "
    "(def check(candidate): assert candidate(1) == 2)"
)

# Printed output (a doctest whose expected text is not a Python literal),
# checked as doctest checks it.
DOCTEST_HELPER = """def _doctest_prints(source, want):
    import contextlib, doctest, io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source + "\\n", "<doctest>", "single"), globals())
    if not doctest.OutputChecker().check_output(want, out.getvalue(), 0):
        raise AssertionError(f"{source} printed {out.getvalue()!r}, expected {want!r}")

"""


class VerifyInputError(ValueError):
    """A verify request that cannot be run as given; ``param`` is the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class TestSuite:
    """``source`` runs after the answer's code, in its namespace: the tests,
    then a call of each test function."""

    source: str
    origin: str  # "tests" (given) or "doctests" (from the prompt)
    entry_point: str | None  # the function under test, when known
    probes: list[str] = field(default_factory=list)  # argument tuples, as Python literals

    def probe_call(self, args: str) -> str:
        """How a probe reads as a call: ``f(1, 'a')``."""
        values = ast.literal_eval(args)
        return f"{self.entry_point}({', '.join(repr(v) for v in values)})"


def build_tests(
    prompt: str, tests: str | None, entry_point: str | None, prompt_param: str
) -> TestSuite:
    """The suite for a request: ``tests`` when given, else the doctests of
    ``prompt`` (the prompt's field is ``prompt_param``)."""
    if entry_point is not None and not (
        entry_point.isidentifier() and not keyword.iskeyword(entry_point)
    ):
        raise VerifyInputError(
            f"entry_point must name a Python function, like 'add'; got {entry_point!r}",
            "entry_point",
        )
    if tests is not None:
        source, origin = tests, "tests"
        tree = parse_tests(tests)
    else:
        source, origin = tests_from_doctests(prompt, prompt_param), "doctests"
        if not source:
            raise VerifyInputError(
                f"no tests: give tests ({PYTHON_CALL_HINT}), or put doctest examples "
                f"('>>> add(1, 2)' then '3' on the next line) in the {prompt_param}",
                "tests",
            )
        tree = ast.parse(source)
    entry_point = entry_point or infer_entry_point(prompt, tree)
    calls = test_function_calls(tree, entry_point)
    if not calls and not any(isinstance(n, (ast.Assert, ast.Raise)) for n in ast.walk(tree)):
        raise VerifyInputError(
            f"tests check nothing: they hold no assert, no raise and no test function; "
            f"{PYTHON_CALL_HINT}",
            "tests",
        )
    if calls:
        source = source.rstrip("\n") + "\n\n" + "".join(f"{call}\n" for call in calls)
    return TestSuite(source, origin, entry_point, probe_inputs(tree, entry_point))


def parse_tests(tests: str) -> ast.Module:
    """The tests' syntax tree; tests that do not compile are the user's error."""
    try:
        tree = ast.parse(tests, "<tests>")
        compile(tree, "<tests>", "exec")  # what the parser lets by (return outside a function)
    except SyntaxError as exc:
        where = f" (line {exc.lineno}: {exc.text.strip()})" if exc.text else ""
        raise VerifyInputError(
            f"tests do not compile: SyntaxError: {exc.msg}{where}; {PYTHON_CALL_HINT}", "tests"
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        raise VerifyInputError(
            f"tests do not compile: {type(exc).__name__}: {exc}; {PYTHON_CALL_HINT}", "tests"
        ) from exc
    return tree


def tests_from_doctests(prompt: str, prompt_param: str) -> str:
    """Asserts from the prompt's ``>>>`` examples ("" when it has none): an
    expected Python literal becomes ``assert call == literal``, an expected
    traceback a check that it raises, other expected text (or a ``print``)
    a check of what it prints, as doctest checks it; an example with nothing
    expected runs as a statement."""
    lines: list[str] = []
    for source, want in doctest_examples(prompt):
        try:
            statement = ast.parse(source, mode="single").body
        except SyntaxError as exc:
            raise VerifyInputError(
                f"the doctest example {source!r} in the {prompt_param} does not compile "
                f"({exc.msg}); fix it, or give tests",
                prompt_param,
            ) from exc
        expression = statement[0].value if isinstance(statement[0], ast.Expr) else None
        prints = isinstance(expression, ast.Call) and getattr(expression.func, "id", "") == "print"
        if want.startswith("Traceback (most recent call last):"):
            error = re.sub(r"\W", "", want.splitlines()[-1].split(":")[0].rsplit(".", 1)[-1])
            lines += raises(source, error or "Exception")
        elif not want:
            lines.append(source)
        elif expression is not None and not prints and (value := literal(want)) is not None:
            lines.append(f"assert {operand(expression, source)} == {value[0]!r}")
        else:
            lines.append(f"_doctest_prints({source!r}, {want + chr(10)!r})")
    if not lines:
        return ""
    helper = DOCTEST_HELPER if any(line.startswith("_doctest_prints") for line in lines) else ""
    return helper + "\n".join(lines) + "\n"


EXAMPLE = re.compile(r"^(\s*)>>> ?(.*)$")


def doctest_examples(text: str) -> Iterator[tuple[str, str]]:
    """(source, expected output) of each ``>>>`` example, read as doctest
    reads them (``...`` continues the source; the output runs to a blank
    line or the next example) but forgiving of prose around them: the
    output also ends at a line indented less, a closing docstring quote or a
    Markdown fence."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = EXAMPLE.match(lines[i])
        i += 1
        if start is None:
            continue
        indent, source = start.group(1), [start.group(2)]
        more = re.compile(rf"^{re.escape(indent)}\.\.\.(?: (.*))?$")
        while i < len(lines) and (line := more.match(lines[i])):
            source.append(line.group(1) or "")
            i += 1
        want = []
        while i < len(lines) and ends_output(lines[i], indent) is False:
            want.append(lines[i][len(indent) :])
            i += 1
        yield "\n".join(source).strip(), "\n".join(want).strip()


def ends_output(line: str, indent: str) -> bool:
    bare = line.strip()
    return (
        not bare
        or not line.startswith(indent)
        or EXAMPLE.match(line) is not None
        or bare in ('"""', "'''")
        or bare.startswith("```")
    )


def literal(text: str) -> tuple[Any] | None:
    """(value,) when ``text`` is a Python literal whose repr reads back the same."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    try:
        return (value,) if ast.literal_eval(repr(value)) == value else None
    except (ValueError, SyntaxError):  # inf, nan
        return None


def operand(node: ast.expr, source: str) -> str:
    """``source`` as the left side of ``==`` (in parentheses unless it binds tighter)."""
    tight = (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Dict)
    return source if isinstance(node, tight) else f"({source})"


def raises(source: str, error: str) -> list[str]:
    """Statements that check ``source`` raises the exception named ``error``."""
    body = "\n".join("    " + line for line in source.splitlines())
    message = source.replace("%", "%%") + f" raised %s, expected {error}"
    return [
        "try:",
        body,
        "except Exception as _error:",
        "    _raised = type(_error).__name__",
        "else:",
        "    _raised = 'nothing'",
        f"assert _raised == {error!r}, {message!r} % _raised",
    ]


def defined_in(prompt: str) -> list[str]:
    return re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", prompt, re.M)


def called_in(tree: ast.Module) -> Iterator[str]:
    """Names the tests call that they do not define and Python does not have."""
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    own |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name not in own and not hasattr(builtins, name) and not name.startswith("_"):
                yield name


def infer_entry_point(prompt: str, tree: ast.Module) -> str | None:
    """The function under test: one the prompt defines and the tests call,
    else the one a ``check(candidate)`` gets (the prompt's last ``def``),
    else the first the tests call."""
    defined, called = defined_in(prompt), list(dict.fromkeys(called_in(tree)))
    for name in reversed(defined):
        if name in called:
            return name
    if defined and any(is_check(n) for n in tree.body):
        return defined[-1]
    return called[0] if called else (defined[-1] if defined else None)


def is_check(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.FunctionDef)
        and node.name == "check"
        and len(node.args.args) - len(node.args.defaults) == 1
    )


def test_function_calls(tree: ast.Module, entry_point: str | None) -> list[str]:
    """``check(entry_point)`` for HumanEval's ``def check(candidate)``, and
    ``test_x()`` for each ``def test_x()`` that takes no arguments."""
    calls = []
    for node in tree.body:
        if is_check(node):
            if entry_point is None:
                raise VerifyInputError(
                    "tests define check(candidate), which needs the function to check: "
                    "give entry_point (its name), or define it in the prompt",
                    "entry_point",
                )
            calls.append(f"check({entry_point})")
        elif (
            isinstance(node, ast.FunctionDef)
            and node.name.startswith("test")
            and len(node.args.args) == len(node.args.defaults)
        ):
            calls.append(f"{node.name}()")
    return calls


def probe_inputs(tree: ast.Module, entry_point: str | None) -> list[str]:
    """Up to MAX_PROBES argument tuples near those the tests call the
    function with (each literal argument nudged: a number by one, a string
    or list reversed, emptied, shortened or lengthened), not among them."""
    if entry_point is None:
        return []
    seen: list[tuple[Any, ...]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in (entry_point, "candidate")
            and not node.keywords
        ):
            try:
                args = tuple(ast.literal_eval(a) for a in node.args)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if args not in seen:
                seen.append(args)
    variants = [
        [(*args[:i], v, *args[i + 1 :]) for v in neighbours(a)]
        for args in seen
        for i, a in enumerate(args)
    ]
    probes: list[str] = []
    for rank in range(max((len(v) for v in variants), default=0)):  # round robin: varied
        for options in variants:
            if rank < len(options) and len(probes) < MAX_PROBES:
                text = repr(options[rank])
                if options[rank] not in seen and text not in probes and literal(text):
                    probes.append(text)
    return probes


def neighbours(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, -value, 0]
    if isinstance(value, float):
        return [value + 0.5, -value, 0.0]
    if isinstance(value, (str, list, tuple)):
        seq: Any = value  # each of the three adds to its own type
        return [seq[::-1], seq[:0], seq[1:], seq + seq[:1]]
    if isinstance(value, dict):
        return [{}]
    return []
