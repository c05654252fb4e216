"""Worker: claims batch jobs from the store and runs each one through the
server's own app, in process (an ASGI call, no socket), so a job gets exactly
the validation, routing, limits and recording an HTTP request gets.

It runs inside the server by default, and as ``modelbench worker`` processes
that load the models themselves and share the store (PostgreSQL) with the
server. While a job runs its lease is renewed every third of the lease time;
a worker that loses a lease stops that job and writes nothing for it.

Outcomes: a 2xx response succeeds; 429, 503 and other 5xx are retried after
a backoff (the server was busy or the model not ready); any other 4xx fails
the job with the server's error message, since retrying cannot fix the
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from starlette.types import ASGIApp

from modelbench.jobs.queue import ClaimedJob, JobQueue

logger = logging.getLogger("modelbench.jobs")

JOB_URLS = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/infer")
INTERNAL_HEADER = "x-modelbench-internal"  # the process's token: a job, not a client
OWNER_HEADER = "x-modelbench-api-key-id"  # whom the job runs for (trusted only with the token)
BATCH_HEADER = "x-modelbench-batch-id"
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        app: ASGIApp,
        *,
        worker_id: str | None = None,
        concurrency: int = 8,
        lease_s: float = 30.0,
        poll_s: float = 0.25,
        internal_token: str | None = None,
        is_ready: Callable[[], bool] | None = None,
    ) -> None:
        self.queue = queue
        self.app = app
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.internal_token = internal_token
        # Claim nothing while the app's models are still loading: the jobs
        # would only be refused with 503 and use up their attempts.
        self.is_ready = is_ready or (lambda: True)
        self.num_succeeded = 0
        self.num_failed = 0
        self.num_retried = 0
        self.num_lost = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set; then let the running ones finish."""
        running: set[asyncio.Task] = set()
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://modelbench-worker", timeout=None
        ) as client:
            try:
                while not stop.is_set():
                    free = self.concurrency - len(running)
                    claimed: list[ClaimedJob] = []
                    if free > 0 and self.is_ready():
                        try:
                            claimed = await asyncio.to_thread(
                                self.queue.claim, self.worker_id, free, self.lease_s
                            )
                        except Exception as exc:  # the store is down: try again later
                            logger.error("worker %s cannot claim jobs: %s", self.worker_id, exc)
                    for job in claimed:
                        task = asyncio.create_task(self._run_one(client, job))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if not claimed:
                        waiters = [asyncio.ensure_future(stop.wait()), *running]
                        await asyncio.wait(
                            waiters, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                        )
                        waiters[0].cancel()
            finally:
                if running:
                    await asyncio.gather(*running, return_exceptions=True)

    async def _run_one(self, client: httpx.AsyncClient, job: ClaimedJob) -> None:
        attempt = asyncio.create_task(self._attempt(client, job))
        renewing = asyncio.create_task(self._renew(job, attempt))
        try:
            outcome = await attempt
        except asyncio.CancelledError:
            if not renewing.done() or renewing.result() is not False:
                raise
            self.num_lost += 1
            logger.warning(
                "worker %s lost the lease of job %s; another worker runs it", self.worker_id, job.id
            )
            return
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        try:
            await asyncio.to_thread(self._record, job, *outcome)
        except Exception as exc:  # the lease expires and another attempt runs the job
            logger.error("worker %s could not record job %s: %s", self.worker_id, job.id, exc)

    async def _renew(self, job: ClaimedJob, attempt: asyncio.Task) -> bool:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await asyncio.to_thread(self.queue.renew, job, self.lease_s)
            except Exception as exc:  # the store is down: keep running, try again
                logger.error("worker %s cannot renew job %s: %s", self.worker_id, job.id, exc)
                continue
            if not held:
                attempt.cancel()
                return False

    async def _attempt(
        self, client: httpx.AsyncClient, job: ClaimedJob
    ) -> tuple[int | None, Any, str | None]:
        """(status code, response body, transport error)."""
        headers = {"x-request-id": job.id, BATCH_HEADER: job.batch_id}
        if self.internal_token:
            headers[INTERNAL_HEADER] = self.internal_token
            if job.api_key_id:
                headers[OWNER_HEADER] = job.api_key_id
        body = {**job.body, "stream": False} if "stream" in job.body else job.body
        try:
            response = await client.post(job.url, json=body, headers=headers)
        except Exception as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        try:
            payload = response.json()
        except ValueError:
            payload = {"text": response.text}
        return response.status_code, payload, None

    def _record(
        self, job: ClaimedJob, status_code: int | None, payload: Any, error: str | None
    ) -> None:
        if status_code is not None and 200 <= status_code < 300:
            if self.queue.finish(job, "succeeded", status_code, payload):
                self.num_succeeded += 1
            return
        message = error or error_message(payload) or f"HTTP {status_code}"
        if status_code is None or status_code in RETRY_STATUSES:
            status = self.queue.retry_later(job, message)
            if status == "queued":
                self.num_retried += 1
            elif status == "failed":
                self.num_failed += 1
            return
        if self.queue.finish(job, "failed", status_code, payload, message):
            self.num_failed += 1


def error_message(payload: Any) -> str | None:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return None
