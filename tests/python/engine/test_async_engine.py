"""run_on_own_thread: the work runs on a new thread that has ended by the time
its result is back (so that its OpenMP pool, if it made one, is gone), the
result and errors come back to the awaiting coroutine, the event loop is
free meanwhile, and a cancelled caller leaves the work to finish alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelbench.engine.async_engine import run_on_own_thread


def test_the_work_runs_on_a_thread_that_has_ended_when_it_returns() -> None:
    async def main() -> tuple[threading.Thread, threading.Thread]:
        ran_on = await run_on_own_thread(threading.current_thread)
        return threading.current_thread(), ran_on

    loop_thread, ran_on = asyncio.run(main())
    assert ran_on is not loop_thread
    assert ran_on.name == "modelbench-current_thread"
    ran_on.join(timeout=5)  # it has already returned; at most the thread's own exit remains
    assert not ran_on.is_alive()
    assert ran_on not in threading.enumerate()


def test_a_new_thread_for_each_call_with_the_arguments_passed() -> None:
    together = threading.Barrier(4, timeout=10)  # passes only if four threads wait at once

    def wait_and_add(*numbers: int) -> int:
        together.wait()
        return sum(numbers)

    async def main() -> list[int]:
        return list(
            await asyncio.gather(*(run_on_own_thread(wait_and_add, i, 10) for i in range(4)))
        )

    assert asyncio.run(main()) == [10, 11, 12, 13]


def test_the_error_reaches_the_caller() -> None:
    def fail(message: str) -> None:
        raise ValueError(message)

    with pytest.raises(ValueError, match="prompt is empty"):
        asyncio.run(run_on_own_thread(fail, "prompt is empty"))


def test_the_event_loop_runs_while_the_work_does() -> None:
    release = threading.Event()

    async def main() -> int:
        ticks = 0
        work = asyncio.ensure_future(run_on_own_thread(release.wait, 10))
        while ticks < 20:  # the loop keeps turning while the work blocks its thread
            await asyncio.sleep(0.001)
            ticks += 1
        assert not work.done()
        release.set()
        assert await work is True
        return ticks

    assert asyncio.run(main()) == 20


def test_a_cancelled_caller_leaves_the_work_to_finish() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "late"

    async def main() -> None:
        task = asyncio.ensure_future(run_on_own_thread(work))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        while not finished.is_set():  # its result arrives on a settled future: dropped
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the loop runs the late callback without an error

    asyncio.run(main())
    assert finished.is_set()
