"""The program that runs in the sandbox for one candidate of ``POST
/v1/verify``: it loads the answer's code, then either runs the tests
(``tests_program``) or calls the answer's function on extra inputs
(``probe_program``), and ends with a line that holds the call's token.

Why a harness rather than the answer and the tests pasted together:

- the answer is loaded as a module named ``candidate``, so its ``if __name__
  == "__main__":`` block (a ``unittest.main()`` that exits 0, a demo) does
  not run and cannot end the program before the tests do;
- an ``exit()`` while loading or during the tests is a failure, and a run
  passes only when it exits 0 *and* printed the token after the last test,
  so code that leaves early with ``os._exit(0)`` fails too (this guards
  against code that exits early by mistake, not against code written to
  read the harness's own source and forge its end);
- a failure is told in one line (``verify: ...``, the last of stderr): the
  test's statement and, for ``assert x == y`` without a message, what ``x``
  was; the traceback above it shows the answer's lines by number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PROBE_TIMEOUT_S = 0.5  # one call on an extra input
REASON_PREFIX = "verify: "

HARNESS = r'''
import ast, contextlib, hashlib, io, json, linecache, os, signal, sys, traceback


class Overtime(BaseException):
    pass


def on_alarm(signum, frame):
    raise Overtime()


signal.signal(signal.SIGALRM, on_alarm)


def bounded(call, seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def load(source, name, ns):
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    exec(compile(source, name, "exec"), ns)


def say(fd, text):
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(fd, (text + "\n").encode(errors="replace"))


def fail(reason):
    say(2, "verify: " + " ".join(reason.split())[:400])
    os._exit(1)


def last_frame(tb, filename):
    found = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == filename:
            found = (frame, lineno)
    return found


def statement_at(source, lineno):
    """The innermost statement of ``source`` on line ``lineno``."""
    best = None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt) and node.lineno <= lineno <= (node.end_lineno or 0):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best


def test_failure(exc):
    at = last_frame(exc.__traceback__, "<tests>")
    if at is None:
        return f"{type(exc).__name__}: {exc}"
    frame, lineno = at
    node = statement_at(DATA["tests"], lineno)
    text = ast.get_source_segment(DATA["tests"], node) if node else None
    text = " ".join((text or linecache.getline("<tests>", lineno)).split())[:200]
    if not isinstance(exc, AssertionError):
        return f"{text} raised {type(exc).__name__}: {exc}"
    detail = str(exc)
    test = node.test if isinstance(node, ast.Assert) else None
    if not detail and isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Eq):
        left = compile(ast.Expression(test.left), "<tests>", "eval")
        try:
            detail = "got " + repr(bounded(lambda: eval(left, frame.f_globals, frame.f_locals), 1))
        except BaseException:
            detail = ""
    return f"failed: {text}" + (f" ({detail[:200]})" if detail else "")


def run_part(source, name, ns, exited, raised):
    """Run ``source`` in ``ns``; an exit or an exception fails the candidate."""
    try:
        load(source, name, ns)
    except SystemExit as exc:
        fail(exited(exc.code))
    except BaseException as exc:
        traceback.print_exc()
        fail(raised(exc))


def outcome(fn, args):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            shown = bounded(lambda: repr(fn(*args)), DATA["probe_timeout_s"])
    except Overtime:
        return ["timed out", "", ""]
    except BaseException as exc:
        return ["raised", type(exc).__name__, ""]
    digest = hashlib.sha256(shown.encode(errors="replace")).hexdigest()[:16]
    return ["returned", digest, shown[:40]]


def run_probes(ns):
    fn = ns.get(DATA["entry_point"])
    if not callable(fn):
        fail(f"the answer defines no function {DATA['entry_point']}")
    results = [outcome(fn, ast.literal_eval(args)) for args in DATA["probes"]]
    say(1, DATA["token"] + json.dumps(results))


answer = {"__name__": "candidate"}
run_part(
    DATA["code"],
    "<answer>",
    answer,
    lambda code: f"the answer called exit({code!r}) as it loaded",
    lambda exc: f"the answer raised {type(exc).__name__}: {exc} as it loaded",
)
if DATA["mode"] == "tests":
    run_part(
        DATA["tests"],
        "<tests>",
        answer,
        lambda code: f"exit({code!r}) was called during the tests",
        test_failure,
    )
    say(1, DATA["token"])
else:
    run_probes(answer)
'''


def program(data: dict[str, object]) -> str:
    return f"DATA = {data!r}\n{HARNESS}"


def tests_program(code: str, tests: str, token: str) -> str:
    """Load ``code``, run ``tests`` in its namespace, print ``token``."""
    return program({"mode": "tests", "code": code, "tests": tests, "token": token})


def probe_program(code: str, entry_point: str, probes: list[str], token: str) -> str:
    """Load ``code`` and call ``entry_point`` on each argument tuple of
    ``probes`` (Python literals); print ``token`` and the outcomes as JSON."""
    return program(
        {
            "mode": "probes",
            "code": code,
            "entry_point": entry_point,
            "probes": probes,
            "probe_timeout_s": PROBE_TIMEOUT_S,
            "token": token,
        }
    )


def finished(stdout: str, token: str) -> bool:
    """The tests ran to their end (the harness printed the token)."""
    return token in stdout.splitlines()


@dataclass(frozen=True)
class Outcome:
    """What a call on one extra input did: ``kind`` is "returned", "raised"
    or "timed out"; ``key`` is equal for equal behaviour."""

    kind: str
    key: str
    shown: str  # the value's repr (cut short), or the exception's name

    def __str__(self) -> str:
        return f"{self.kind} {self.shown}".strip()


def probe_outcomes(stdout: str, token: str) -> list[Outcome] | None:
    """The outcomes a probe program printed, or None when it did not finish."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(token):
            rows = json.loads(line[len(token) :])
            return [
                Outcome(kind, f"{kind}:{digest}", digest if kind == "raised" else shown)
                for kind, digest, shown in rows
            ]
    return None


def failure_reason(reason: str, stderr: str) -> str:
    """The harness's own one-line reason when it gave one, else the sandbox's."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if reason.startswith("exit code 1") and lines and lines[-1].startswith(REASON_PREFIX):
        return lines[-1][len(REASON_PREFIX) :]
    return reason
