"""A sandbox for generated code: each candidate runs in its own process
tree, cut off from the network and from everything of the server's, within
limits, and is killed whole at its deadline.

Isolation (``Sandbox.isolation`` says which ran; every result carries it):

- ``bubblewrap`` (Debian's ``bwrap``, when present and the server runs as
  root): new mount, PID, network, IPC and UTS namespaces; the whole system
  read-only; a private ``/tmp`` (a size-limited tmpfs) holding the
  candidate's writable folder; the server's home, data, model and database
  folders masked by empty tmpfs (the interpreter's own folder bound back,
  read-only); a fresh ``/proc`` that shows only the sandbox's processes; an
  empty environment. Inside, the candidate drops to an unprivileged user of
  its own (one per concurrent slot, ``setpriv``), with no capabilities and
  ``no_new_privs``.
- ``rlimits`` (no bubblewrap, or not root): the same limits, a fresh
  session, an empty environment, and, when run as root, the unprivileged
  slot user (whom file permissions keep out of the server's files). There is
  no network or filesystem isolation beyond that: say so to whoever trusts
  the results.

Limits, either way: CPU seconds, wall seconds, address space, processes
(counted for the slot's user, so a fork bomb stops at the limit), file
size, open files, and output (the stream is cut and the candidate killed
past it). At the deadline, or when the candidate exits, every process left
of the slot's user is killed, so nothing outlives its run.

The candidate is Python run as ``python -I -S``: the standard library only,
no site-packages, no user site, no environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("modelbench.sandbox")

SLOT_UID_BASE = 60100  # the first sandbox user id (root only)
UID_BLOCK = 64  # user ids per Sandbox: slot i of block b runs as SLOT_UID_BASE + 64 b + i
UID_BLOCKS = 256
LOCK_DIR = Path("/run/modelbench-sandbox")  # root's own (0700): candidates cannot touch it
EXCERPT_CHARS = 2000  # of stdout and stderr kept in a result


@dataclass(frozen=True)
class Limits:
    """What one candidate may use."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1024 * 1024**2  # address space of each process
    processes: int = 16  # of the candidate's user at once (threads count)
    file_bytes: int = 16 * 1024**2  # the largest file it may write; also its /tmp's size
    open_files: int = 64
    output_bytes: int = 256 * 1024  # stdout and stderr together


@dataclass
class RunResult:
    """One candidate's run. ``passed``: it exited 0 within every limit.
    ``reason`` says why not ("exit code 1: AssertionError: ...", "timed out
    after 10 s", "CPU time limit", "memory limit", "output limit", ...)."""

    passed: bool
    reason: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: str


def bubblewrap_available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("bwrap", "setpriv", "prlimit"))


def default_masks() -> list[Path]:
    """Folders of the server's that a candidate must not see: the user's
    home and modelbench's data folders, the store's and the keys file's
    folders, the model folders, PostgreSQL's data, the working folder."""
    from platformdirs import user_cache_dir, user_config_dir, user_data_dir

    paths = [
        Path.home(),
        Path(user_data_dir("modelbench")),
        Path(user_config_dir("modelbench")),
        Path(user_cache_dir("modelbench")),
        Path("/var/lib/postgresql"),
        Path.cwd(),
    ]
    for name in ("MODELBENCH_KEYS_FILE", "MODELBENCH_DATABASE_URL"):
        value = os.environ.get(name, "")
        if value.startswith("sqlite:///"):
            value = value[len("sqlite:///") :]
        if value.startswith("/"):
            paths.append(Path(value).parent)
    paths += [Path(p) for p in os.environ.get("MODELBENCH_MODEL_DIRS", "").split(os.pathsep) if p]
    return [p for p in paths if p != Path("/")]


@dataclass
class Sandbox:
    """Runs candidates; thread-safe, ``concurrency`` at once (each in a slot
    with its own user). ``isolation``: "auto" (bubblewrap when available,
    else rlimits), "bubblewrap" (ValueError when unavailable) or "rlimits"."""

    limits: Limits = field(default_factory=Limits)
    isolation: str = "auto"
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    masks: list[Path] = field(default_factory=default_masks)

    def __post_init__(self) -> None:
        if self.isolation == "auto":
            self.isolation = "bubblewrap" if bubblewrap_available() else "rlimits"
        elif self.isolation == "bubblewrap" and not bubblewrap_available():
            raise ValueError(
                "isolation 'bubblewrap' needs bwrap and setpriv on PATH and a server run as "
                "root; install bubblewrap (apt-get install bubblewrap) or use 'rlimits'"
            )
        elif self.isolation not in ("bubblewrap", "rlimits"):
            raise ValueError(
                f"isolation must be 'auto', 'bubblewrap' or 'rlimits', got {self.isolation!r}"
            )
        if not 1 <= self.concurrency <= UID_BLOCK:
            raise ValueError(f"concurrency must be in [1, {UID_BLOCK}], got {self.concurrency}")
        # Every process of a slot's user is killed after each run, so no two
        # Sandboxes (in this process or another) may share a user: each holds
        # a block of user ids under an exclusive lock for its lifetime.
        self.uid_base = claim_uid_block(self) if os.geteuid() == 0 else None
        if self.isolation == "rlimits" and os.geteuid() == 0:
            become_subreaper()
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.concurrency):
            self._slots.put(slot)
        self.python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()

    def run(self, code: str, limits: Limits | None = None) -> RunResult:
        """Run one Python program; blocks until it ends (or is killed)."""
        slot = self._slots.get()
        try:
            return self._run_in_slot(code, limits or self.limits, slot)
        finally:
            self._slots.put(slot)

    def run_many(
        self,
        programs: Sequence[str],
        limits: Limits | None = None,
        on_done: Callable[[int, RunResult], None] | None = None,
    ) -> list[RunResult]:
        """Run several, ``concurrency`` at a time; results in order.
        ``on_done(i, result)`` is called (from a worker thread) as each ends."""
        results: list[RunResult | None] = [None] * len(programs)
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(programs)):
            todo.put(i)

        errors: list[BaseException] = []

        def work() -> None:
            while not errors:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = result = self.run(programs[i], limits)
                    if on_done is not None:
                        on_done(i, result)
                except BaseException as exc:  # re-raised below: no result goes missing silently
                    errors.append(exc)

        threads = [
            threading.Thread(target=work) for _ in range(min(self.concurrency, len(programs)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    # ---- one run ----------------------------------------------------------

    def _run_in_slot(self, code: str, limits: Limits, slot: int) -> RunResult:
        uid = None if self.uid_base is None else self.uid_base + slot
        workdir = Path(tempfile.mkdtemp(prefix="modelbench-sandbox-"))
        try:
            (workdir / "candidate.py").write_text(code)
            if uid is not None:
                os.chown(workdir, uid, uid)
                os.chown(workdir / "candidate.py", uid, uid)
            argv, cwd = self._argv(workdir, uid, limits)
            return self._execute(argv, cwd, limits, uid)
        finally:
            if uid is not None:
                kill_user(uid)
            shutil.rmtree(workdir, ignore_errors=True)

    def _argv(self, workdir: Path, uid: int | None, limits: Limits) -> tuple[list[str], str]:
        python = [str(self.python), "-I", "-S"]
        if self.isolation == "rlimits":
            return [*python, str(workdir / "candidate.py")], str(workdir)
        argv = ["bwrap", "--ro-bind", "/", "/"]
        for mask in sorted(
            {m.resolve() for m in self.masks if m.exists()}, key=lambda p: len(p.parts)
        ):
            argv += ["--tmpfs", str(mask)]
        for keep in bind_back(self.python, self.masks):
            argv += ["--ro-bind", str(keep), str(keep)]
        argv += [
            "--size", str(limits.file_bytes), "--tmpfs", "/tmp",
            "--bind", str(workdir), "/tmp/work",
            "--dev", "/dev", "--proc", "/proc",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session", "--chdir", "/tmp/work",
            "--setenv", "HOME", "/tmp/work",
        ]  # fmt: skip
        if uid is not None:
            argv += setpriv(uid)
        return [*argv, *python, "/tmp/work/candidate.py"], "/"

    def _execute(self, argv: list[str], cwd: str, limits: Limits, uid: int | None) -> RunResult:
        # Limits through prlimit(1), the user through setpriv(1): no Python
        # runs between fork and exec (preexec_fn is unsafe in a threaded server).
        prlimit = [
            "prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_bytes}",
            f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}", "--core=0",
        ]  # fmt: skip
        if uid is not None:
            prlimit.append(f"--nproc={limits.processes}")  # root is exempt; the slot user is not
            if self.isolation == "rlimits":
                argv = [*setpriv(uid), *argv]
        argv = [*prlimit, "--", *argv]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        out, err, over = read_bounded(proc, limits.output_bytes, started + limits.wall_s)
        timed_out = proc.poll() is None
        if timed_out or over:
            kill_group(proc)
        if uid is not None:
            kill_user(uid)  # children that left the group, or outlived the candidate
        code = proc.wait()
        wall = time.monotonic() - started
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        reason = why(code, stderr, timed_out, over, limits)
        return RunResult(
            passed=reason == "passed",
            reason=reason,
            exit_code=None if timed_out or over else code,
            stdout=stdout[-EXCERPT_CHARS:],
            stderr=stderr[-EXCERPT_CHARS:],
            wall_s=wall,
            isolation=self.isolation,
        )


def claim_uid_block(owner: object) -> int:
    """The first user id of a block no other Sandbox holds; the block's lock
    is released when ``owner`` is collected (or the process ends)."""
    folder = LOCK_DIR if Path("/run").is_dir() else Path(tempfile.gettempdir()) / LOCK_DIR.name
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    for block in range(UID_BLOCKS):
        fd = os.open(folder / f"block-{block}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        weakref.finalize(owner, os.close, fd)
        return SLOT_UID_BASE + block * UID_BLOCK
    raise RuntimeError(f"all {UID_BLOCKS} sandbox user blocks are taken on this host")


def setpriv(uid: int) -> list[str]:
    """Become the slot's user, with no capabilities and no way back."""
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
    ]  # fmt: skip


def bind_back(python: Path, masks: Iterable[Path]) -> list[Path]:
    """The interpreter's installation, when a mask would hide it."""
    prefix = Path(sys.base_prefix).resolve()
    hidden = [m.resolve() for m in masks if m.exists()]
    keep = []
    for path in (prefix, python.parent):
        if any(path == m or m in path.parents for m in hidden) and path not in keep:
            keep.append(path)
    return keep


def read_bounded(
    proc: subprocess.Popen[bytes], cap: int, deadline: float
) -> tuple[bytes, bytes, bool]:
    """stdout and stderr until the process ends, the deadline, or ``cap``
    bytes together (then True: the candidate flooded its output)."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    total = [0]
    over = threading.Event()
    changed = threading.Event()  # a pump finished, or the output passed the cap
    lock = threading.Lock()

    def pump(name: str, stream: Any) -> None:
        try:
            while data := stream.read1(65536):
                with lock:
                    total[0] += len(data)
                    chunks[name].append(data)
                    if total[0] > cap:
                        over.set()
                        return
        finally:
            changed.set()

    threads = [
        threading.Thread(target=pump, args=("out", proc.stdout), daemon=True),
        threading.Thread(target=pump, args=("err", proc.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    while not over.is_set() and any(t.is_alive() for t in threads):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        changed.wait(remaining)
        changed.clear()
    if not over.is_set():
        try:  # the streams are closed; the process may still be running
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    with lock:
        out, err = b"".join(chunks["out"]), b"".join(chunks["err"])
    return out[:cap], err[:cap], over.is_set()


def why(code: int, stderr: str, timed_out: bool, over: bool, limits: Limits) -> str:
    """The reason a run failed, or "passed"."""
    if over:
        return f"output limit: more than {limits.output_bytes} bytes of output"
    if timed_out:
        return f"timed out after {limits.wall_s:g} s"
    if code == 0:
        return "passed"
    if code < 0:
        sig = -code
        named = {
            signal.SIGXCPU: f"CPU time limit ({limits.cpu_s} s)",
            signal.SIGXFSZ: f"file size limit ({limits.file_bytes} bytes)",
            signal.SIGKILL: "killed",
            signal.SIGSEGV: "crashed (segmentation fault)",
        }
        return named.get(sig, f"killed by signal {signal.Signals(sig).name}")  # type: ignore[call-overload]
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if last.startswith("MemoryError"):
        return f"memory limit ({limits.memory_bytes // 1024**2} MiB)"
    if code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):  # bwrap reports its child's signal
        return why(-(code - 128), stderr, False, False, limits)
    if forks_refused(stderr):
        return f"process limit ({limits.processes})"
    return f"exit code {code}: {last[:300]}" if last else f"exit code {code}"


def forks_refused(stderr: str) -> bool:
    """Whether a fork or a new thread met the process limit. Many processes
    write at once then, so the message can sit anywhere in stderr, not last."""
    eagain = ("BlockingIOError" in stderr or "Resource temporarily" in stderr) and "fork" in stderr
    return eagain or "can't start new thread" in stderr


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def user_processes(uid: int) -> list[int]:
    """Live processes of ``uid``; its zombies that are ours to reap are reaped."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                stat = Path(f"/proc/{entry}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state == "Z" and int(ppid) == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry), os.WNOHANG)
                continue
            if state != "Z":
                pids.append(int(entry))
    return pids


def become_subreaper() -> None:
    """Orphans of our candidates come to this process, not to PID 1, so
    that ``user_processes`` reaps them (an init that never reaps, as in some
    containers, would leave zombies that count against the slot's process
    limit). Under bubblewrap the sandbox's own PID namespace reaps them."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def kill_user(uid: int, patience_s: float = 10.0) -> None:
    """Kill every process of ``uid`` (a slot's user owns nothing else).

    Killing pids one by one loses to a fork bomb (each kill frees a slot for
    another fork), so the user kills its own: ``kill -KILL -1`` as ``uid``
    signals all of them in one pass of the kernel's process list. A killed
    process with a large address space takes a while to go on a busy host:
    this waits up to ``patience_s`` for the last one, then gives up with a
    warning (its slot's next candidate may then find fewer processes)."""
    deadline = time.monotonic() + patience_s
    while user_processes(uid):
        if time.monotonic() > deadline:
            logger.warning(
                "sandbox user %d still has processes %s after %.0f s",
                uid,
                user_processes(uid),
                patience_s,
            )
            return
        subprocess.run(
            [*setpriv(uid), "kill", "-s", "KILL", "--", "-1"],
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        time.sleep(0.01)


__all__ = ["Limits", "RunResult", "Sandbox", "bubblewrap_available", "default_masks"]
