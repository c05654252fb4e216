"""The sandbox is one: every escape a candidate tries fails, is reported as
a failed candidate with its reason, and leaves the host untouched.

Run under bubblewrap (what the server uses when it can) and, where the
fallback can stop it at all, under rlimits alone (no namespaces: it cannot
keep a candidate off the network or out of a world-writable /tmp, and says
so by its name)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from modelbench.eval.sandbox import (
    SLOT_UID_BASE,
    UID_BLOCK,
    Limits,
    Sandbox,
    bubblewrap_available,
    why,
)

ISOLATIONS = ["bubblewrap", "rlimits"] if bubblewrap_available() else ["rlimits"]
if os.environ.get("CI") == "true" and os.geteuid() == 0:
    assert bubblewrap_available(), "CI installs bubblewrap (scripts/setup.sh): it must run here"

LIMITS = Limits(wall_s=3.0, cpu_s=2, memory_bytes=512 * 1024**2, output_bytes=64 * 1024)


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server folder holding a keys file, masked from candidates."""
    folder = tmp_path_factory.mktemp("server-data")
    (folder / "keys.json").write_text('{"secret": "sk-do-not-leak"}')
    return folder


@pytest.fixture(scope="module", params=ISOLATIONS)
def sandbox(request: pytest.FixtureRequest, secret_dir: Path) -> Sandbox:
    from modelbench.eval.sandbox import default_masks

    return Sandbox(
        limits=LIMITS, isolation=request.param, concurrency=2, masks=[*default_masks(), secret_dir]
    )


def no_slot_processes(sandbox: Sandbox) -> bool:
    assert sandbox.uid_base is not None
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except FileNotFoundError:
                continue
            if sandbox.uid_base <= uid < sandbox.uid_base + UID_BLOCK:
                return False
    return True


def run(sandbox: Sandbox, code: str):
    result = sandbox.run(code)
    assert result.isolation == sandbox.isolation
    if os.geteuid() == 0:
        assert no_slot_processes(sandbox), "a candidate's process outlived its run"
    return result


def test_a_good_candidate_passes_and_a_wrong_one_says_why(sandbox: Sandbox) -> None:
    ok = run(sandbox, "def f(x):\n    return x + 1\nassert f(1) == 2\nprint('fine')")
    assert ok.passed and ok.reason == "passed" and ok.stdout == "fine\n" and ok.exit_code == 0
    bad = run(sandbox, "assert 1 + 1 == 3, 'arithmetic'")
    assert not bad.passed and bad.reason == "exit code 1: AssertionError: arithmetic"
    syntax = run(sandbox, "def f(:\n")
    assert not syntax.passed and "SyntaxError" in syntax.reason


def test_a_fork_bomb_stops_at_the_process_limit(sandbox: Sandbox) -> None:
    if os.geteuid() != 0:
        pytest.skip("per-candidate process limits need the slot users (the server runs as root)")
    started = time.monotonic()
    result = run(sandbox, "import os\nwhile True:\n    os.fork()")
    assert not result.passed and "process limit" in result.reason
    assert time.monotonic() - started < LIMITS.wall_s + 2


def test_the_process_limit_is_named_wherever_its_message_lands() -> None:
    """A fork bomb's processes write at once: the refused fork's message
    need not be stderr's last line (a sibling's "Traceback" header can be)."""
    interleaved = (
        'Traceback (most recent call last):\n  File "<candidate>", line 3, in <module>\n'
        "    os.fork()\nBlockingIOError: [Errno 11] Resource temporarily unavailable\n"
        "Traceback (most recent call last):\n"
    )
    assert why(1, interleaved, False, False, LIMITS) == f"process limit ({LIMITS.processes})"
    threads = "RuntimeError: can't start new thread\n"
    assert why(1, threads, False, False, LIMITS) == f"process limit ({LIMITS.processes})"
    other = "BlockingIOError: [Errno 11] Resource temporarily unavailable\n"  # a socket's EAGAIN
    assert why(1, other, False, False, LIMITS).startswith("exit code 1: BlockingIOError")


def test_memory_past_the_limit_fails(sandbox: Sandbox) -> None:
    result = run(sandbox, "x = bytearray(2 * 1024**3)")
    assert not result.passed and result.reason == "memory limit (512 MiB)"


def test_an_infinite_loop_hits_the_cpu_or_wall_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "while True:\n    pass")
    assert not result.passed
    assert result.reason in ("CPU time limit (2 s)", "timed out after 3 s"), result.reason
    assert time.monotonic() - started < LIMITS.wall_s + 1


def test_sleeping_past_the_deadline_is_killed(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "import time\ntime.sleep(60)")
    assert not result.passed and result.reason == "timed out after 3 s"
    assert time.monotonic() - started < LIMITS.wall_s + 1


def test_filling_the_disk_stops_at_the_file_size_limit(sandbox: Sandbox) -> None:
    result = run(sandbox, "open('big', 'wb').write(b'0' * (64 * 1024**2))")
    assert not result.passed and "File too large" in result.reason


def test_flooding_stdout_is_cut_at_the_output_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "while True:\n    print('x' * 1000)")
    assert not result.passed and result.reason.startswith("output limit")
    assert len(result.stdout) <= 2000 and time.monotonic() - started < LIMITS.wall_s


def test_a_child_left_running_is_killed(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "still-alive"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(1.5)
        open({str(marker)!r}, "w").write("escaped")
        os._exit(0)
    os._exit(0)
print("parent done")
"""
    result = run(sandbox, code)
    assert result.passed  # the candidate itself exits 0...
    time.sleep(2)
    assert not marker.exists()  # ...and its orphan died with it


def test_killing_its_parent_harms_nobody(sandbox: Sandbox) -> None:
    result = run(
        sandbox,
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)",
    )
    assert not result.passed
    assert os.getpid() > 0 and sandbox.run("print(1)").passed  # the host goes on serving


def test_secrets_of_the_server_are_out_of_reach(sandbox: Sandbox, secret_dir: Path) -> None:
    os.environ["MODELBENCH_TEST_SECRET"] = "sk-env-secret"
    try:
        code = f"""
import os
leaks = []
try:
    leaks.append(open({str(secret_dir / "keys.json")!r}).read())
except OSError as e:
    print("keys:", type(e).__name__)
try:
    leaks.append(open("/proc/{os.getpid()}/environ", "rb").read().decode())
except OSError as e:
    print("environ:", type(e).__name__)
leaks.append(str(dict(os.environ)))
assert not any("sk-" in leak for leak in leaks), leaks
"""
        result = run(sandbox, code)
    finally:
        del os.environ["MODELBENCH_TEST_SECRET"]
    assert result.passed, result.stderr
    assert "keys:" in result.stdout and "environ:" in result.stdout


@pytest.mark.skipif("bubblewrap" not in ISOLATIONS, reason="needs bubblewrap")
def test_under_bubblewrap_no_network_and_nothing_written_outside(tmp_path: Path) -> None:
    sandbox = Sandbox(limits=LIMITS, isolation="bubblewrap", concurrency=1)
    listener = socket.create_server(("127.0.0.1", 0))  # the host's loopback, listening
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    local = sandbox.run(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
    )
    assert not local.passed and "Connection refused" in local.reason  # its own empty loopback
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing reached the host's
    listener.close()
    net = sandbox.run("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)")
    assert not net.passed and "Network is unreachable" in net.reason
    outside = tmp_path / "written-from-the-sandbox"
    for target in ("/etc/modelbench-escape", "/usr/lib/modelbench-escape", str(outside)):
        result = sandbox.run(f"open({target!r}, 'w').write('x')")
        assert not result.passed and "Error" in result.reason, (target, result.reason)
    assert not Path("/etc/modelbench-escape").exists() and not outside.exists()
    ps = sandbox.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert ps.passed and len(eval(ps.stdout)) <= 3  # only the sandbox's own processes


def test_candidates_run_in_parallel_each_in_its_own_slot(sandbox: Sandbox) -> None:
    """Candidates overlap in time (read from their own clocks, so a busy
    machine cannot fail this as an elapsed-time bound would)."""
    code = "import time\nstart = time.time()\ntime.sleep(1)\nprint({i}, start, time.time())"
    results = sandbox.run_many([code.format(i=i) for i in range(4)])
    spans = [r.stdout.split() for r in results]
    assert [s[0] for s in spans] == ["0", "1", "2", "3"]
    intervals = [(float(s[1]), float(s[2])) for s in spans]
    overlapping = [
        (a, b)
        for a in range(4)
        for b in range(a + 1, 4)
        if max(intervals[a][0], intervals[b][0]) < min(intervals[a][1], intervals[b][1])
    ]
    assert overlapping, intervals  # at least two ran at once


def test_two_sandboxes_never_share_a_user(tmp_path: Path) -> None:
    """Each kills its users' processes after every run: two sharing users
    (two servers, or a server and an eval run) would kill each other's."""
    if os.geteuid() != 0:
        pytest.skip("sandbox users need root")
    import gc

    gc.collect()  # blocks of earlier tests' dropped sandboxes come free now, not mid-test
    first, second = Sandbox(concurrency=2), Sandbox(concurrency=2)
    assert first.uid_base != second.uid_base
    assert SLOT_UID_BASE <= min(first.uid_base, second.uid_base)  # type: ignore[type-var]
    slow = "import time\ntime.sleep(1.5)\nprint('survived')"
    import threading

    results = []
    worker = threading.Thread(target=lambda: results.append(first.run(slow)))
    worker.start()
    time.sleep(0.3)
    assert second.run("print(1)").passed  # its cleanup must not touch the first's candidate
    worker.join()
    assert results[0].passed and results[0].stdout == "survived\n"
    base = second.uid_base
    del second
    gc.collect()
    assert Sandbox(concurrency=1).uid_base == base  # the block came free (the lowest free one)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="isolation must be"):
        Sandbox(isolation="docker")
    with pytest.raises(ValueError, match=r"concurrency must be in \[1, 64\]"):
        Sandbox(concurrency=0)
