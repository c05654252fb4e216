"""modelbench on Ray Serve: N replicas of the server (the OpenAI, task and
admin routes) behind Ray Serve's HTTP proxy, each replica one process with
its own engine, autoscaling on the requests in flight.

Install the extra (``pip install 'modelbench[ray]'``), then::

    serve run modelbench.deploy.ray_app:app                  # 1 replica, the default model
    serve run modelbench.deploy.ray_app:build num_replicas=2 \\
        models_file=/srv/models.toml database_url=postgresql+psycopg://...
    serve run modelbench.deploy.ray_app:build min_replicas=1 max_replicas=4 \\
        target_ongoing_requests=8

or from Python::

    from ray import serve
    from modelbench.deploy.ray_app import deployment
    serve.run(deployment(num_replicas=2, num_cpus=4, model="/models/llama"))

Each replica builds the app on its own node (``create_app``: the models load
in the replica, never pickled), runs its lifespan (loading, the store, the
registry) and answers with ``X-Modelbench-Replica`` naming itself. Every
other argument is a ``Settings`` field (``MODELBENCH_*`` in the replicas'
environment works too); replicas share what the settings point at: the
store (give them one PostgreSQL ``database_url`` so every request is on one
record), Redis for rate limits, the registry in the store.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.config import AutoscalingConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPLICA_HEADER = b"x-modelbench-replica"


class ReplicaApp:
    """The server's app on a replica (plain ASGI): every response names the
    replica (``X-Modelbench-Replica``), and the replica reports started to
    Ray only once the models it was started with have loaded (or failed),
    so Serve's proxy never routes to a replica still loading: Ray's
    counterpart of the readiness probe on ``/ready``."""

    def __init__(self, app: FastAPI, replica: str) -> None:
        self.app = app
        self.replica = replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._started_when_loaded(send))
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER, self.replica)]
            await send(message)

        await self.app(scope, receive, named if scope["type"] == "http" else send)

    def _started_when_loaded(self, send: Send) -> Send:
        registry = self.app.state.registry

        async def started(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                while registry.is_starting():
                    await asyncio.sleep(0.1)
            await send(message)

        return started


def build_replica_app(settings: dict[str, Any], num_cpus: float) -> ASGIApp:
    """The app of one replica, built on the replica (Ray calls this there)."""
    import torch

    from modelbench.config import Settings
    from modelbench.server import create_app

    torch.set_num_threads(max(1, int(num_cpus)))  # its share of the node, not every core
    context = serve.get_replica_context()
    replica = context.replica_id.unique_id if context is not None else "local"
    return ReplicaApp(create_app(Settings(**settings)), replica)


class Replica:
    """One replica: its settings, and the app Ray builds on it after ``__init__``."""

    def __init__(self, settings: dict[str, Any], num_cpus: float) -> None:
        self.settings, self.num_cpus = settings, num_cpus

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return build_replica_app(self.settings, self.num_cpus)


def deployment(
    num_replicas: int | None = 1,
    num_cpus: float = 1.0,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_ongoing_requests: float = 4.0,
    max_ongoing_requests: int = 64,
    name: str = "modelbench",
    **settings: Any,
) -> serve.Application:
    """A bound Ray Serve application of ``num_replicas`` replicas, or, with
    ``max_replicas``, autoscaling between ``min_replicas`` and it on the
    requests in flight per replica (``target_ongoing_requests``). Each
    replica takes ``num_cpus`` CPUs; ``settings`` are Settings fields."""
    from modelbench.config import Settings

    Settings(**settings)  # a bad field or value fails here, not in every replica
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": {"num_cpus": num_cpus},
        "max_ongoing_requests": max_ongoing_requests,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": float(settings.get("drain_timeout_s", 30.0)),
    }
    if max_replicas is not None:
        options["autoscaling_config"] = AutoscalingConfig(
            min_replicas=min_replicas if min_replicas is not None else 1,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
        )
    else:
        options["num_replicas"] = num_replicas
    ingress = serve.deployment(**options)(serve.ingress()(Replica))
    return ingress.bind(settings, num_cpus)


def build(args: dict[str, str]) -> serve.Application:
    """``serve run modelbench.deploy.ray_app:build key=value ...``: deployment
    arguments and Settings fields, as text (numbers are converted)."""
    typed: dict[str, Any] = {}
    for key, value in args.items():
        if key in ("num_replicas", "min_replicas", "max_replicas", "max_ongoing_requests"):
            typed[key] = int(value)
        elif key in ("num_cpus", "target_ongoing_requests"):
            typed[key] = float(value)
        else:
            typed[key] = value  # Settings parses its own fields from text
    return deployment(**typed)


app = build({})
