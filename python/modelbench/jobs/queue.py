"""JobQueue: batches and their jobs in the store, and the claim protocol
that lets any number of workers share them.

A worker claims queued jobs (or jobs whose lease expired) with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never take
the same row; each claim sets a lease token and a deadline that the worker
renews while it runs the job. Finishing writes the result and the final
state in one transaction, and only if the worker still holds the lease: a
worker that lost its lease (it stalled, or died and came back) cannot
overwrite the result of the one that took over, so a job is done exactly
once. A failed attempt goes back to the queue after a backoff until
``max_attempts``, then the job fails with its error. On SQLite (one
in-process worker) the same statements run without row locks.

Times come from the database's clock on PostgreSQL (workers on several
machines agree on it) and from this process on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.orm import Session

from modelbench.db.tables import Batch, Job

TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", *TERMINAL)


@dataclass
class NewJob:
    """One request of a new batch; ``error`` set means it failed on arrival
    (a malformed line) and never runs."""

    url: str | None
    body: dict[str, Any] | None
    custom_id: str | None = None
    method: str = "POST"
    error: str | None = None


@dataclass
class ClaimedJob:
    id: str
    batch_id: str
    url: str
    body: dict[str, Any]
    attempts: int
    lease_token: str
    api_key_id: str | None = None  # the batch's owner, whom the job runs for


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class JobQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    # ---- time, from one clock -----------------------------------------

    def _now(self):
        return func.now() if self.is_postgres else datetime.now(timezone.utc)

    def _later(self, seconds: float):
        return self._now() + timedelta(seconds=seconds)

    # ---- batches ------------------------------------------------------

    def create_batch(
        self,
        jobs: list[NewJob],
        api_key_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_attempts: int = 3,
    ) -> str:
        """Write a batch and all its jobs in one transaction; returns its id."""
        batch_id = new_id("batch")
        with Session(self.engine) as session, session.begin():
            session.add(
                Batch(id=batch_id, api_key_id=api_key_id, num_jobs=len(jobs), metadata_=metadata)
            )
            session.flush()
            session.add_all(
                [
                    Job(
                        id=new_id("job"),
                        batch_id=batch_id,
                        position=i,
                        custom_id=j.custom_id,
                        method=j.method,
                        url=j.url or "",
                        body=j.body,
                        max_attempts=max_attempts,
                        status="failed" if j.error else "queued",
                        error=j.error,
                        finished_at=datetime.now(timezone.utc) if j.error else None,
                    )
                    for i, j in enumerate(jobs)
                ]
            )
        return batch_id

    def get_batch(self, batch_id: str) -> Batch | None:
        with Session(self.engine) as session:
            return session.get(Batch, batch_id)

    def get_job(self, job_id: str) -> Job | None:
        with Session(self.engine) as session:
            return session.get(Job, job_id)

    def counts(self, batch_id: str) -> dict[str, int]:
        """Jobs of the batch by status (every status present, zeros included)."""
        return self.counts_of([batch_id])[batch_id]

    def counts_of(self, batch_ids: list[str]) -> dict[str, dict[str, int]]:
        """``counts`` of several batches, in one query."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Job.batch_id, Job.status, func.count())
                .where(Job.batch_id.in_(batch_ids))
                .group_by(Job.batch_id, Job.status)
            ).all()
        counts = {batch_id: dict.fromkeys(STATUSES, 0) for batch_id in batch_ids}
        for batch_id, status, n in rows:
            counts[batch_id][status] = n
        return counts

    def iter_jobs(self, batch_id: str, page: int = 500) -> Iterator[Job]:
        """The batch's jobs in order, read a page at a time."""
        position = -1
        while True:
            with Session(self.engine) as session:
                rows = session.scalars(
                    select(Job)
                    .where(Job.batch_id == batch_id, Job.position > position)
                    .order_by(Job.position)
                    .limit(page)
                ).all()
            yield from rows
            if len(rows) < page:
                return
            position = rows[-1].position

    def list_batches(
        self, api_key_id: str | None, limit: int, after: Batch | None = None
    ) -> tuple[list[Batch], bool]:
        """Batches newest first, those of ``api_key_id`` only unless it is None,
        starting after ``after`` (the last one of the previous page); and whether
        there are more."""
        query = select(Batch)
        if api_key_id is not None:
            query = query.where(Batch.api_key_id == api_key_id)
        if after is not None:
            query = query.where(
                or_(
                    Batch.created_at < after.created_at,
                    and_(Batch.created_at == after.created_at, Batch.id < after.id),
                )
            )
        with Session(self.engine) as session:
            rows = session.scalars(
                query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
            ).all()
        return list(rows[:limit]), len(rows) > limit

    def cancel(self, batch_id: str) -> bool:
        """Cancel what has not started; running jobs finish. False if unknown."""
        with Session(self.engine) as session, session.begin():
            batch = session.get(Batch, batch_id)
            if batch is None:
                return False
            if batch.status != "cancelled":
                batch.status, batch.cancelled_at = "cancelled", datetime.now(timezone.utc)
            session.execute(
                update(Job)
                .where(Job.batch_id == batch_id, Job.status == "queued")
                .values(status="cancelled", finished_at=self._now())
            )
        return True

    # ---- the claim protocol --------------------------------------------

    def claim(self, worker_id: str, limit: int, lease_s: float) -> list[ClaimedJob]:
        """Take up to ``limit`` runnable jobs: queued and due, or running with
        an expired lease (their worker is gone) and attempts left."""
        token = f"{worker_id}/{uuid.uuid4().hex[:12]}"
        now = self._now()
        with Session(self.engine) as session, session.begin():
            # Expired leases with no attempts left fail here, instead of running again.
            session.execute(
                update(Job)
                .where(
                    Job.status == "running",
                    Job.lease_expires_at < now,
                    Job.attempts >= Job.max_attempts,
                )
                .values(
                    status="failed",
                    finished_at=now,
                    lease_owner=None,
                    error=func.coalesce(Job.error, "its worker stopped renewing the lease"),
                )
            )
            runnable = or_(
                and_(Job.status == "queued", Job.run_after <= now),
                and_(
                    Job.status == "running",
                    Job.lease_expires_at < now,
                    Job.attempts < Job.max_attempts,
                ),
            )
            query = (
                select(Job.id).where(runnable).order_by(Job.created_at, Job.position).limit(limit)
            )
            if self.is_postgres:
                query = query.with_for_update(skip_locked=True)
            ids = session.scalars(query).all()
            if not ids:
                return []
            session.execute(
                update(Job)
                .where(Job.id.in_(ids), runnable)
                .values(
                    status="running",
                    lease_owner=token,
                    lease_expires_at=self._later(lease_s),
                    attempts=Job.attempts + 1,
                    started_at=now,
                )
            )
            rows = session.execute(
                select(Job, Batch.api_key_id)
                .join(Batch, Batch.id == Job.batch_id)
                .where(Job.id.in_(ids), Job.lease_owner == token)
            ).all()
            return [
                ClaimedJob(r.id, r.batch_id, r.url, r.body or {}, r.attempts, token, owner)
                for r, owner in rows
            ]

    def renew(self, job: ClaimedJob, lease_s: float) -> bool:
        """Extend the lease; False when it was lost (another worker has the job)."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Job)
                .where(
                    Job.id == job.id, Job.lease_owner == job.lease_token, Job.status == "running"
                )
                .values(lease_expires_at=self._later(lease_s))
            )
        return result.rowcount == 1

    def finish(
        self,
        job: ClaimedJob,
        status: str,
        response_status: int | None,
        result: dict[str, Any] | None,
        error: str | None = None,
    ) -> bool:
        """Record the outcome and the final state in one transaction, if the
        lease is still ours; False (and nothing written) if it is not."""
        assert status in TERMINAL
        error = error.replace("\x00", "\ufffd") if error else error  # PostgreSQL text refuses NUL
        with self.engine.begin() as connection:
            updated = connection.execute(
                update(Job)
                .where(
                    Job.id == job.id, Job.lease_owner == job.lease_token, Job.status == "running"
                )
                .values(
                    status=status,
                    response_status=response_status,
                    result=result,
                    error=error,
                    finished_at=self._now(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return updated.rowcount == 1

    def retry_later(self, job: ClaimedJob, error: str, max_backoff_s: float = 60.0) -> str:
        """Back to the queue after a backoff (1 s, 2 s, 4 s, ...), or failed
        when no attempts are left. Returns the new status ("" if the lease was lost)."""
        backoff = min(max_backoff_s, 2.0 ** (job.attempts - 1))
        error = error.replace("\x00", "\ufffd")
        with self.engine.begin() as connection:
            max_attempts = connection.execute(
                select(Job.max_attempts).where(Job.id == job.id)
            ).scalar_one()
            status = "queued" if job.attempts < max_attempts else "failed"
            values: dict[str, Any] = {
                "status": status,
                "error": error,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if status == "queued":
                values["run_after"] = self._later(backoff)
            else:
                values["finished_at"] = self._now()
            updated = connection.execute(
                update(Job)
                .where(
                    Job.id == job.id, Job.lease_owner == job.lease_token, Job.status == "running"
                )
                .values(**values)
            )
        return status if updated.rowcount == 1 else ""
