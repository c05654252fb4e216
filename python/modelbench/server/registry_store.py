"""The admin registry kept in the store (migration 0005), so that what an
admin loads survives a restart and is seen by every server on the database:

- ``POST /v1/admin/models`` writes the checked models-file entry as a row of
  ``model_versions`` (state ``active``) and an ``admin_audit`` entry before
  the load starts; ``DELETE`` marks it ``unloaded`` (and audits it) before
  the version goes. With the store down an admin change is refused (503):
  it would not survive a restart.
- At start, once the store is migrated, the server loads every ``active``
  row it does not serve already, one at a time, as admin loads; then it
  keeps checking (every ``registry_poll_s``), so that a version loaded or
  unloaded through another server on the same database is loaded or
  unloaded here within seconds.
- ``PATCH /v1/admin/models/{name}`` (routing) and ``{name}:{version}``
  (canary weight) are audited, and kept in the rows of admin-loaded versions.
- ``GET /v1/admin/audit`` lists the trail, newest first.

``--registry file`` (``MODELBENCH_REGISTRY=file``) keeps the models file and
the flags the only source: admin loads then last until the process ends, as
before the registry was kept.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbench.config import ModelConfig
from modelbench.db.tables import AuditEntry, ModelVersionRecord, utcnow
from modelbench.server.errors import APIError
from modelbench.server.registry import ModelRegistry

logger = logging.getLogger("modelbench.server")


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

    def __init__(self, store: Any) -> None:
        self.store = store

    def _write_sync(
        self,
        action: str,
        model_id: str,
        actor: str | None,
        config: ModelConfig | None,
        routing: str | None,
        weight: float | None,
    ) -> None:
        """One admin change: its rows, and its audit entry, in one transaction."""
        detail: dict[str, Any] = {}
        with Session(self.store.engine) as session, session.begin():
            if action == "load" and config is not None:
                row = session.get(ModelVersionRecord, model_id)
                if row is None:
                    row = ModelVersionRecord(
                        id=model_id, name=config.name, version=config.version, created_by=actor
                    )
                    session.add(row)
                row.config, row.state, row.routing = (
                    config.model_dump(mode="json"),
                    "active",
                    routing,
                )
                rows = [row]
                detail = {"path": config.path, "tasks": list(config.tasks)}
            elif action == "unload":
                row = session.get(ModelVersionRecord, model_id)
                rows = [row] if row is not None else []
                for one in rows:
                    one.state = "unloaded"
            else:  # route: the name's policy; the weight of the version named, or of all
                name = model_id.partition(":")[0]
                query = select(ModelVersionRecord).filter_by(name=name)
                rows = list(session.scalars(query))
                for one in rows:
                    if routing is not None:
                        one.routing = routing
                    if weight is not None and (one.id == model_id or ":" not in model_id):
                        one.config = {**one.config, "weight": weight}
            for one in rows:
                one.updated_by, one.updated_at = actor, utcnow()
            if routing is not None:
                detail["routing"] = routing
            if weight is not None:
                detail["weight"] = weight
            session.add(
                AuditEntry(actor=actor, action=action, model_id=model_id, detail=detail or None)
            )

    async def record(
        self,
        action: str,
        model_id: str,
        actor: str | None,
        config: ModelConfig | None = None,
        routing: str | None = None,
        weight: float | None = None,
    ) -> None:
        """Write an admin change (load, unload, route); 503 when the store cannot take it."""
        if not self.store.is_migrated:
            raise store_unavailable(RuntimeError("not migrated yet"))
        try:
            await asyncio.to_thread(
                self._write_sync, action, model_id, actor, config, routing, weight
            )
        except Exception as exc:
            raise store_unavailable(exc) from exc

    def _rows_sync(self) -> list[ModelVersionRecord]:
        with Session(self.store.engine) as session:
            return list(session.scalars(select(ModelVersionRecord)))

    async def audit(self, limit: int) -> list[AuditEntry]:
        def read() -> list[AuditEntry]:
            with Session(self.store.engine) as session:
                query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
                return list(session.scalars(query))

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:
            raise store_unavailable(exc) from exc

    async def follow(self, registry: ModelRegistry, poll_s: float, stop: asyncio.Event) -> None:
        """Load the active rows this server lacks, take their routing and
        weights, and unload the versions an admin loaded whose rows say
        unloaded: now and every ``poll_s``."""
        while not stop.is_set():
            if self.store.is_migrated:
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
            handle = registry.get(row.id)
            if row.state == "active" and handle is None and not registry.loading():
                try:
                    config = ModelConfig.model_validate(row.config)
                    registry.begin_load(config)
                except Exception as exc:
                    logger.error("registry: cannot load %s from the store: %s", row.id, exc)
                    continue
                if row.routing:
                    registry.set_policy(config.name, row.routing)  # type: ignore[arg-type]
                logger.info("registry: loading %s (from the store)", row.id)
            elif row.state == "active" and handle is not None and not handle.declared:
                # routing or weight changed through another server
                if row.routing and registry.policy(row.name) != row.routing:
                    registry.set_policy(row.name, row.routing)  # type: ignore[arg-type]
                weight = row.config.get("weight")
                if isinstance(weight, int | float) and weight != handle.config.weight:
                    handle.config = handle.config.model_copy(update={"weight": float(weight)})
            elif row.state == "unloaded" and handle is not None and not handle.declared:
                if handle.state.value in ("ready", "failed"):
                    logger.info("registry: unloading %s (unloaded in the store)", row.id)
                    await registry.unload(row.id)


def actor(request: Request) -> str:
    """Who makes an admin change, for the audit trail: the key's id (``jwt:<sub>``
    for a token), or "local" (open admin on loopback)."""
    caller = request.scope.get("state", {}).get("caller")
    key = getattr(caller, "key", None)
    return key.id if key is not None else "local"
