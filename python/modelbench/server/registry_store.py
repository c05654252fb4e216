"""The registry kept in the store (migrations 0005, 0006), so that what a
server serves survives a restart and is the same on every server and
gateway on the database:

- Rows of ``model_versions``: versions (kind ``model``) and upstream
  replicas (kind ``upstream``), each ``active``, ``unloaded`` (an admin
  removed it) or ``failed`` (the admin load that made it failed); every
  change also writes an ``admin_audit`` entry naming who made it.
- The models file seeds it: at start, each entry the store does not know
  yet is added (by ``models-file``); one it knows keeps the state the store
  gives it, so an admin's unload holds across restarts.
- ``POST /v1/admin/models`` (and ``/v1/admin/upstreams``) writes the row
  before the load starts; ``DELETE`` marks it ``unloaded`` first. With the
  store down an admin change is refused (503): it would not survive a restart.
- Every ``registry_poll_s`` each server converges on the rows: it loads the
  active versions it lacks (one at a time, as admin loads), unloads those
  marked unloaded, takes routing and weights, and adds or removes upstream
  replicas. A ``modelbench gateway`` follows the upstreams only.
- ``PATCH /v1/admin/models/{name}`` (routing) and ``{name}:{version}``
  (canary weight) are audited and kept in the rows.

``--registry file`` (``MODELBENCH_REGISTRY=file``) keeps the models file and
the flags the only source: admin loads then last until the process ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbench.config import ModelConfig, ModelsFile
from modelbench.db.tables import AuditEntry, ModelVersionRecord, utcnow
from modelbench.gateway.config import UpstreamConfig
from modelbench.server.errors import APIError
from modelbench.server.registry import ModelHandle, ModelRegistry, ModelState

logger = logging.getLogger("modelbench.server")

SEEDED_BY = "models-file"  # the actor of the rows and audit entries a models file seeds


def upstream_id(name: str, url: str) -> str:
    """The registry id of an upstream replica: its name and a digest of its URL."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    return f"{name}:upstream-{digest}"


def store_unavailable(exc: Exception) -> APIError:
    return APIError(
        503,
        f"the store is unavailable ({type(exc).__name__}), so this change would not survive "
        "a restart and was not made; retry when GET /ready reports the store ready",
        code="store_unavailable",
        type="service_unavailable",
        headers={"Retry-After": "5"},
    )


class RegistryStore:
    """Reads and writes the registry's tables through the store's engine."""

    def __init__(self, store: Any, follow_models: bool = True) -> None:
        self.store = store
        self.follow_models = follow_models  # False: a gateway, which loads no version itself
        self._unseeded: ModelsFile | None = None  # a models file not yet seeded (store down)
        self._seeding = asyncio.Lock()  # start and the follower seed once between them
        self._watching: set[asyncio.Task[None]] = set()  # admin loads not yet ended

    # ---- writing -------------------------------------------------------

    def _write_sync(
        self,
        action: str,
        row_id: str,
        actor: str | None,
        entry: ModelConfig | UpstreamConfig | None,
        routing: str | None,
        weight: float | None,
        error: str | None,
    ) -> None:
        """One change: its rows, and its audit entry, in one transaction."""
        detail: dict[str, Any] = {}
        with Session(self.store.engine) as session, session.begin():
            if action == "load" and entry is not None:
                detail = self._put(session, row_id, actor, entry, routing)
                rows = []
            elif action in ("unload", "fail"):
                row = session.get(ModelVersionRecord, row_id)
                rows = [row] if row is not None else []
                for one in rows:
                    one.state = "unloaded" if action == "unload" else "failed"
                if error is not None:
                    detail["error"] = error
            else:  # route: the name's policy; the weight of the version named, or of all
                name = row_id.partition(":")[0]
                query = select(ModelVersionRecord).filter_by(name=name, kind="model")
                rows = list(session.scalars(query))
                for one in rows:
                    if routing is not None:
                        one.routing = routing
                    if weight is not None and (one.id == row_id or ":" not in row_id):
                        one.config = {**one.config, "weight": weight}
            for one in rows:
                one.updated_by, one.updated_at = actor, utcnow()
            if routing is not None:
                detail["routing"] = routing
            if weight is not None:
                detail["weight"] = weight
            session.add(
                AuditEntry(actor=actor, action=action, model_id=row_id, detail=detail or None)
            )

    @staticmethod
    def _put(
        session: Session,
        row_id: str,
        actor: str | None,
        entry: ModelConfig | UpstreamConfig,
        routing: str | None,
    ) -> dict[str, Any]:
        """Write (or make active again) the row of a version or a replica; its audit detail."""
        row = session.get(ModelVersionRecord, row_id)
        upstream = isinstance(entry, UpstreamConfig)
        if row is None:
            name, _, version = row_id.partition(":")
            row = ModelVersionRecord(id=row_id, name=name, version=version, created_by=actor)
            session.add(row)
        row.kind = "upstream" if upstream else "model"
        row.config, row.state, row.routing = entry.model_dump(mode="json"), "active", routing
        row.updated_by, row.updated_at = actor, utcnow()
        if isinstance(entry, UpstreamConfig):
            return {"url": entry.url, "model": entry.upstream_model}
        return {"path": entry.path, "tasks": list(entry.tasks)}

    async def record(
        self,
        action: str,
        row_id: str,
        actor: str | None,
        entry: ModelConfig | UpstreamConfig | None = None,
        routing: str | None = None,
        weight: float | None = None,
        error: str | None = None,
    ) -> None:
        """Write a change (load, unload, route, fail); 503 when the store cannot take it."""
        if not self.store.is_migrated:
            raise store_unavailable(RuntimeError("not migrated yet"))
        try:
            await asyncio.to_thread(
                self._write_sync, action, row_id, actor, entry, routing, weight, error
            )
        except Exception as exc:
            raise store_unavailable(exc) from exc

    def watch(self, handle: ModelHandle, actor: str | None) -> None:
        """``watch_load`` in the background (held here until it ends)."""
        task = asyncio.create_task(self.watch_load(handle, actor))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def watch_load(self, handle: ModelHandle, actor: str | None) -> None:
        """Mark the row failed when the admin load that made it fails (a restart,
        or another server, then does not try it again until an admin does)."""
        if handle.load_task is not None:
            await asyncio.gather(handle.load_task, return_exceptions=True)
        if handle.state == ModelState.FAILED:
            try:
                await self.record("fail", handle.id, actor, error=handle.error)
            except APIError:
                logger.error("registry: could not mark %s failed in the store", handle.id)

    # ---- seeding from the models file ------------------------------------

    async def seed(self, declared: ModelsFile, wait_s: float = 10.0) -> set[str]:
        async with self._seeding:
            return await self._seed(declared, wait_s)

    async def _seed(self, declared: ModelsFile, wait_s: float) -> set[str]:
        """Add the models file's entries the store does not know (once it is
        migrated, waiting up to ``wait_s``); the ids of those it knows as
        unloaded or failed, which this server then does not load. With the
        store unreachable (a migration attempt failed) the models file is
        served as it is, and the next converge applies the store's word."""
        self._unseeded = declared
        deadline = time.monotonic() + wait_s
        while not self.store.is_migrated:
            if self.store.migration_failed or time.monotonic() > deadline:
                logger.warning(
                    "registry: the store is not ready; serving the models file as it is until it is"
                )
                return set()
            await asyncio.sleep(0.05)
        entries: list[tuple[str, ModelConfig | UpstreamConfig]] = [
            (upstream_id(u.name, u.url), u) for u in declared.upstreams
        ]
        if self.follow_models:
            entries += [(m.id, m) for m in declared.models]

        def run() -> set[str]:
            skip: set[str] = set()
            with Session(self.store.engine) as session, session.begin():
                for row_id, entry in entries:
                    row = session.get(ModelVersionRecord, row_id)
                    if row is not None:
                        if row.state != "active":
                            skip.add(row_id)
                        continue
                    name = entry.name
                    routing = declared.routing.get(name) if isinstance(entry, ModelConfig) else None
                    detail = self._put(session, row_id, SEEDED_BY, entry, routing)
                    session.add(
                        AuditEntry(actor=SEEDED_BY, action="load", model_id=row_id, detail=detail)
                    )
            return skip

        try:
            skip = await asyncio.to_thread(run)
        except Exception as exc:
            logger.warning("registry: could not seed the store (%s); serving the models file", exc)
            return set()
        self._unseeded = None
        for row_id in sorted(skip):
            logger.info("registry: not serving %s: the store says it was unloaded", row_id)
        return skip

    # ---- reading -------------------------------------------------------

    def _rows_sync(self) -> list[ModelVersionRecord]:
        with Session(self.store.engine) as session:
            return list(session.scalars(select(ModelVersionRecord)))

    async def rows(self) -> list[ModelVersionRecord] | None:
        """Every row, or None when the store cannot be read now (the admin
        listings then show this server's state alone)."""
        if not self.store.is_migrated:
            return None
        try:
            return await asyncio.to_thread(self._rows_sync)
        except Exception as exc:
            logger.warning("registry: could not read the store (%s)", exc)
            return None

    async def audit(self, limit: int) -> list[AuditEntry]:
        def read() -> list[AuditEntry]:
            with Session(self.store.engine) as session:
                query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
                return list(session.scalars(query))

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:
            raise store_unavailable(exc) from exc

    # ---- following -----------------------------------------------------

    async def follow(self, registry: ModelRegistry, poll_s: float, stop: asyncio.Event) -> None:
        """Converge on the rows now and every ``poll_s`` until ``stop``."""
        while not stop.is_set():
            if self.store.is_migrated:
                if self._unseeded is not None:  # the store was down at start
                    async with self._seeding:
                        if self._unseeded is not None:
                            await self._seed(self._unseeded, wait_s=0)
                try:
                    await self._converge(registry)
                except Exception as exc:  # the store went away: try again later
                    logger.warning("registry: could not read the store (%s)", exc)
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except TimeoutError:
                pass

    async def _converge(self, registry: ModelRegistry) -> None:
        for row in await asyncio.to_thread(self._rows_sync):
            if row.kind == "upstream":
                await self._converge_upstream(registry, row)
            elif self.follow_models:
                await self._converge_model(registry, row)

    async def _converge_model(self, registry: ModelRegistry, row: ModelVersionRecord) -> None:
        handle = registry.get(row.id)
        if row.state == "active" and handle is None and not registry.loading():
            try:
                config = ModelConfig.model_validate(row.config)
                registry.begin_load(config)
            except Exception as exc:
                logger.error("registry: cannot load %s from the store: %s", row.id, exc)
                return
            if row.routing:
                registry.set_policy(config.name, row.routing)  # type: ignore[arg-type]
            logger.info("registry: loading %s (from the store)", row.id)
        elif row.state == "active" and handle is not None:
            # routing or weight changed through another server
            if row.routing and registry.policy(row.name) != row.routing:
                registry.set_policy(row.name, row.routing)  # type: ignore[arg-type]
            weight = row.config.get("weight")
            if isinstance(weight, int | float) and weight != handle.config.weight:
                handle.config = handle.config.model_copy(update={"weight": float(weight)})
        elif row.state == "unloaded" and handle is not None:
            if handle.state in (ModelState.READY, ModelState.FAILED):
                logger.info("registry: unloading %s (unloaded in the store)", row.id)
                await registry.unload(row.id)
                registry.undeclare_if_empty(row.name)

    @staticmethod
    async def _converge_upstream(registry: ModelRegistry, row: ModelVersionRecord) -> None:
        gateway = registry.gateway
        if gateway is None:
            return
        try:
            config = UpstreamConfig.model_validate(row.config)
        except Exception as exc:
            logger.error("registry: upstream %s in the store is invalid: %s", row.id, exc)
            return
        replica = gateway.find(config.name, config.url)
        if row.state == "active" and replica is None:
            if registry.versions(config.name):
                logger.error(
                    "registry: upstream %s (%s) not added: %s is a local model here",
                    row.id,
                    config.url,
                    config.name,
                )
                return
            try:
                replica = gateway.add_upstream(config)
            except ValueError as exc:  # its key's variable is not set in this process
                logger.error("registry: upstream %s not added: %s", row.id, exc)
                return
            logger.info("registry: upstream %s (%s) added (from the store)", row.id, config.url)
            await gateway.check_new(replica)
        elif row.state == "active" and replica is not None:
            replica.weight = config.weight
        elif row.state != "active" and replica is not None:
            gateway.remove_upstream(config.name, config.url)
            logger.info("registry: upstream %s (%s) removed (in the store)", row.id, config.url)


def actor(request: Request) -> str:
    """Who makes an admin change, for the audit trail: the key's id (``jwt:<sub>``
    for a token), or "local" (open admin on loopback)."""
    caller = request.scope.get("state", {}).get("caller")
    key = getattr(caller, "key", None)
    return key.id if key is not None else "local"
