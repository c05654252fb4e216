"""The store's tables (SQLAlchemy 2 declarative), the same on SQLite and
PostgreSQL. The schema changes only through migrations (db/migrations/).

- ``requests``: every inference request the server answered or refused
  after routing: who, which model version, what was asked, what came back,
  and how long each stage took.
- ``batches`` and ``jobs``: asynchronous batch work; a job is one request of
  a batch, claimed by a worker under a lease.
- ``bench_runs`` and ``bench_requests``: benchmark runs and their
  per-request records.
- ``eval_runs`` and ``eval_results``: evaluation runs (HumanEval) and each
  sample's outcome in the sandbox.
- ``model_versions`` and ``admin_audit``: the versions admins loaded (a
  restarted server loads them again) and who loaded, unloaded or rerouted what.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class RequestRecord(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the X-Request-ID's record id
    http_request_id: Mapped[str | None] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))  # "/v1/chat/completions", ...
    model_name: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))  # generate | summarize | ... | embed
    stream: Mapped[bool] = mapped_column(default=False)
    prompt: Mapped[str | None] = mapped_column(Text)  # None when text is not stored
    messages: Mapped[list | None] = mapped_column(JSON)
    parameters: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # succeeded | failed | aborted
    http_status: Mapped[int | None] = mapped_column(Integer)
    output_text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    queue_time_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(String(64))
    upstream: Mapped[str | None] = mapped_column(String(512))  # the gateway's upstream URL
    attempts: Mapped[list | None] = mapped_column(JSON)  # the gateway's tries, with breaker states
    compare_id: Mapped[str | None] = mapped_column(String(64))
    # The response cache: hit-exact | hit-semantic | miss | bypass (None: off), and for
    # a hit the id of the request whose answer it served.
    cache_result: Mapped[str | None] = mapped_column(String(16))
    cache_source_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_requests_created_at", "created_at"),
        Index("ix_requests_model_created", "model_name", "created_at"),
        Index("ix_requests_task_status", "task", "status"),
        Index("ix_requests_compare_id", "compare_id"),
    )


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(
        String(16), default="queued"
    )  # queued | cancelled (counts say the rest)
    num_jobs: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # its place in the batch
    custom_id: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8), default="POST")
    url: Mapped[str] = mapped_column(String(64))  # the endpoint it runs, e.g. /v1/chat/completions
    body: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # queued | running | succeeded | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)  # backoff: not claimed before
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_claim", "status", "run_after"),
        Index("ix_jobs_batch", "batch_id", "position"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )


class BenchRun(Base):
    __tablename__ = "bench_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict | None] = mapped_column(JSON)
    environment: Mapped[dict | None] = mapped_column(JSON)
    summary: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BenchRequest(Base):
    __tablename__ = "bench_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("bench_runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    success: Mapped[bool]
    prompt_len: Mapped[int | None] = mapped_column(Integer)
    output_len: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    itl_ms: Mapped[list | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    benchmark: Mapped[str] = mapped_column(String(64))  # "humaneval"
    model: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict | None] = mapped_column(JSON)
    summary: Mapped[dict | None] = mapped_column(JSON)  # pass@k, isolation, times
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalResult(Base):
    __tablename__ = "eval_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    sample: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)
    run_s: Mapped[float | None] = mapped_column(Float)
    completion: Mapped[str | None] = mapped_column(Text)


class ModelVersionRecord(Base):
    """An entry of the registry: a version (``kind`` "model": its checked
    models-file entry, seeded from a models file or loaded by an admin) or
    an upstream replica (``kind`` "upstream": its [[upstreams]] entry), so
    that a restarted server, or another one on the same database, serves it
    again while its state is ``active`` (``unloaded``: removed by an admin;
    ``failed``: the admin load that made it failed)."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(600), primary_key=True)  # name:version
    name: Mapped[str] = mapped_column(String(520))
    version: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)  # the ModelConfig as loaded
    routing: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # active | unloaded | failed
    kind: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    created_by: Mapped[str | None] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(160))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who loaded, unloaded or rerouted what, and when."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(160))  # key id, jwt:<sub>, or "local"
    action: Mapped[str] = mapped_column(String(16))  # load | unload | route | fail
    model_id: Mapped[str] = mapped_column(String(600))
    detail: Mapped[dict | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_admin_audit_at", "at"),)
