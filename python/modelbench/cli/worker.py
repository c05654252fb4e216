"""``modelbench worker``: run batch jobs from the store without serving HTTP.

It loads the same models a server would (``--model`` / ``--models-file`` or
the ``MODELBENCH_*`` settings) and claims jobs from the shared store
(``--database-url``). It must be PostgreSQL: on SQLite the server's one
in-process worker runs the jobs, so an SQLite store is refused. Ctrl-C or
SIGTERM stops claiming, lets the running jobs finish, and exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from sqlalchemy.engine import make_url

from modelbench.config import Settings, parse_memory

logger = logging.getLogger("modelbench.jobs")

FLAGS = (
    "model",
    "models_file",
    "served_model_name",
    "max_model_len",
    "kv_cache_memory",
    "max_num_seqs",
    "database_url",
)


async def work(settings: Settings, worker_id: str | None) -> None:
    from modelbench.server.app import create_app

    app = create_app(settings.model_copy(update={"run_worker": False}))
    store = app.state.store
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from modelbench.jobs.worker import Worker
    from modelbench.server.persistence import can_run_jobs

    async with app.router.lifespan_context(app):
        # Claim nothing before the store is migrated and the models are in memory.
        while not stop.is_set() and not (store.is_migrated and can_run_jobs(app)):
            await asyncio.sleep(0.1)

        worker = Worker(
            store.queue,
            app,
            worker_id=worker_id,
            concurrency=settings.worker_concurrency,
            lease_s=settings.job_lease_s,
            internal_token=store.internal_token,
            is_ready=lambda: can_run_jobs(app),
        )
        logger.warning("worker %s: running batch jobs from the store", worker.worker_id)
        await worker.run(stop)
        logger.warning(
            "worker %s: stopped (%d succeeded, %d failed, %d retried)",
            worker.worker_id,
            worker.num_succeeded,
            worker.num_failed,
            worker.num_retried,
        )


def refuse_sqlite(url: str) -> None:
    """A worker process shares the server's store, which only PostgreSQL can
    do: on SQLite the server's one in-process worker runs the jobs."""
    if make_url(url).get_backend_name() == "sqlite":
        raise ValueError(
            f"the store is SQLite ({url}), which runs batch jobs on one in-process worker only: "
            "the server's own. Leave the jobs to `modelbench serve`, or give the server and every "
            "worker the same PostgreSQL (--database-url "
            "postgresql+psycopg://user@host:5432/dbname or MODELBENCH_DATABASE_URL)"
        )


def run(args: argparse.Namespace) -> None:
    given = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
    if args.concurrency is not None:
        given["worker_concurrency"] = args.concurrency
    if args.lease_s is not None:
        given["job_lease_s"] = args.lease_s
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        settings = Settings(**given)
        refuse_sqlite(settings.store_url())
        asyncio.run(work(settings, args.worker_id))
    except ValueError as exc:
        raise SystemExit(f"modelbench worker: {exc}") from exc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("worker", help="run batch jobs from the shared store (no HTTP)")
    p.add_argument("--model", help="Hugging Face folder or .gguf file (default: the default model)")
    p.add_argument("--models-file", help="TOML file declaring several models and versions")
    p.add_argument("--served-model-name", help="the name jobs use as 'model' for --model")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--kv-cache-memory", type=parse_memory)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--database-url", help="the shared store, e.g. postgresql+psycopg://host/db")
    p.add_argument("--concurrency", type=int, help="jobs run at once (default 8)")
    p.add_argument("--lease-s", type=float, help="lease of a claimed job in seconds (default 30)")
    p.add_argument(
        "--worker-id", help="how this worker appears in job leases (default host:pid:random)"
    )
    p.set_defaults(func=run)
