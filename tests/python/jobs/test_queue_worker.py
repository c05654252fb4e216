"""The claim protocol and the worker, against a stand-in app whose handler
counts how often each job runs and whether two runs ever overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from modelbench.db import make_engine, upgrade
from modelbench.jobs.queue import JobQueue, NewJob
from modelbench.jobs.worker import Worker


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.runs: Counter[str] = Counter()
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/infer")
        async def infer(request: Request) -> JSONResponse:
            job_id = request.headers["x-request-id"]
            body = await request.json()
            with self.lock:
                if job_id in self.in_flight:
                    self.overlaps.append(job_id)
                self.in_flight.add(job_id)
                self.runs[job_id] += 1
            try:
                await asyncio.sleep(body.get("sleep", self.delay_s))
                if body.get("fail") == "client":
                    return JSONResponse({"error": {"message": "text is required"}}, status_code=400)
                if body.get("fail") == "busy":
                    return JSONResponse({"error": {"message": "queue full"}}, status_code=429)
                return JSONResponse({"success": True, "result": body["text"].upper()})
            finally:
                with self.lock:
                    self.in_flight.discard(job_id)

        return app


def queue_for(url: str) -> JobQueue:
    upgrade(url)
    return JobQueue(make_engine(url))


async def run_until_done(
    queue: JobQueue, batch_id: str, workers: list[Worker], timeout_s: float = 60
) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                counts = await asyncio.to_thread(queue.counts, batch_id)
                if counts["queued"] == 0 and counts["running"] == 0:
                    break
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def test_two_workers_1000_jobs_each_done_exactly_once(postgresql_url: str) -> None:
    queue = queue_for(postgresql_url)
    other = JobQueue(make_engine(postgresql_url))  # a second worker with its own connections
    recorder = Recorder(delay_s=0.002)
    app = recorder.app()
    batch_id = queue.create_batch([NewJob("/v1/infer", {"text": f"t{i}"}) for i in range(1000)])
    workers = [
        Worker(queue, app, worker_id="a", concurrency=16, poll_s=0.02),
        Worker(other, app, worker_id="b", concurrency=16, poll_s=0.02),
    ]
    asyncio.run(run_until_done(queue, batch_id, workers))
    assert queue.counts(batch_id)["succeeded"] == 1000
    assert len(recorder.runs) == 1000 and set(recorder.runs.values()) == {1}
    assert recorder.overlaps == []
    assert workers[0].num_succeeded > 100 and workers[1].num_succeeded > 100  # both took part
    jobs = list(queue.iter_jobs(batch_id))
    assert [j.position for j in jobs] == list(range(1000))
    assert jobs[5].result == {"success": True, "result": "T5"} and jobs[5].attempts == 1


def test_outcomes_retry_and_fail(database_url: str) -> None:
    queue = queue_for(database_url)
    recorder = Recorder()
    batch_id = queue.create_batch(
        [
            NewJob("/v1/infer", {"text": "ok"}),
            NewJob("/v1/infer", {"text": "x", "fail": "client"}),
            NewJob("/v1/infer", {"text": "x", "fail": "busy"}),
            NewJob(None, None, custom_id="line-4", error="line 4: not valid JSON"),
        ],
        max_attempts=2,
    )
    worker = Worker(queue, recorder.app(), poll_s=0.02)
    asyncio.run(run_until_done(queue, batch_id, [worker], timeout_s=30))
    jobs = list(queue.iter_jobs(batch_id))
    assert [j.status for j in jobs] == ["succeeded", "failed", "failed", "failed"]
    assert (
        jobs[1].attempts == 1
        and jobs[1].error == "text is required"
        and jobs[1].response_status == 400
    )
    assert jobs[2].attempts == 2 and jobs[2].error == "queue full"  # retried once after a backoff
    assert jobs[3].attempts == 0 and jobs[3].custom_id == "line-4"


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(database_url: str) -> None:
    queue = queue_for(database_url)
    batch_id = queue.create_batch([NewJob("/v1/infer", {"text": "a"})])
    (stale,) = queue.claim("dead", 10, lease_s=0.05)
    time.sleep(0.2)
    (fresh,) = queue.claim("live", 10, lease_s=30)
    assert fresh.id == stale.id and fresh.attempts == 2
    assert not queue.renew(stale, 30) and not queue.finish(stale, "succeeded", 200, {"late": True})
    assert queue.finish(fresh, "succeeded", 200, {"ok": True})
    assert queue.get_job(fresh.id).result == {"ok": True}
    assert queue.counts(batch_id)["succeeded"] == 1


def test_cancel_leaves_running_jobs_alone(database_url: str) -> None:
    queue = queue_for(database_url)
    batch_id = queue.create_batch([NewJob("/v1/infer", {"text": str(i)}) for i in range(5)])
    claimed = queue.claim("w", 2, lease_s=30)
    assert queue.cancel(batch_id) and not queue.cancel("batch_nope")
    counts = queue.counts(batch_id)
    assert counts["cancelled"] == 3 and counts["running"] == 2
    assert queue.claim("w", 10, lease_s=30) == []
    assert all(queue.finish(job, "succeeded", 200, {}) for job in claimed)
    assert queue.get_batch(batch_id).status == "cancelled"
