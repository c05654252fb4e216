"""The request log: ``GET /v1/requests`` lists recorded inference requests,
newest first, filtered by model, version, task, status, API key and time
range, a page at a time (``limit``, and ``cursor`` from the previous page's
``next_cursor``); ``GET /v1/requests/{id}`` returns one.

Records hold prompts and outputs, so a server with no API key (open to
whoever reaches it) serves them to loopback clients only: the client address
is the connection's, or with a proxy in ``forwarded_allow_ips`` the one its
X-Forwarded-For names; nobody else's X-Forwarded-For is believed."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from modelbench.config import is_loopback
from modelbench.db.tables import RequestRecord
from modelbench.server.auth import auth_required
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.protocol_fields import CONFLICTING_FIELDS, INVALID_CURSOR
from modelbench.server.routes.batch import epoch, get_store


async def loopback_when_open(request: Request) -> None:
    """With no API key, the request log is served to this machine only."""
    caller = request.scope.get("state", {}).get("caller")
    if getattr(caller, "key", None) is not None or getattr(caller, "internal", False):
        return
    client = request.client.host if request.client else ""
    if auth_required(request.app.state) or is_loopback(client):
        return
    raise APIError(
        403,
        "the request log holds stored prompts and outputs; with no API key configured it is "
        "served to loopback clients only: create a key (modelbench keys create --name NAME "
        "--admin) and send it as 'Authorization: Bearer <key>'",
        code="forbidden",
        type="permission_error",
    )


router = APIRouter(
    tags=["requests"],
    dependencies=[Depends(loopback_when_open)],
    responses=error_responses(403),  # loopback_when_open; a plain key asking for another's
)

FIELDS = [c.name for c in RequestRecord.__table__.columns]


def owner_filter(request: Request) -> str | None:
    """The key id a caller is confined to: its own, unless it is an admin key
    (or the server is open)."""
    caller = request.scope.get("state", {}).get("caller")
    key = getattr(caller, "key", None)
    return key.id if key is not None and not key.admin else None


def record_object(record: RequestRecord) -> dict[str, Any]:
    out = {name: getattr(record, name) for name in FIELDS}
    out["object"] = "request"
    out["created_at"] = epoch(record.created_at)
    out["finished_at"] = epoch(record.finished_at)
    return out


def parse_time(value: str | None, param: str) -> datetime | None:
    """Unix seconds or ISO 8601 (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), timezone.utc)
    except (ValueError, OverflowError, OSError):  # not a number, or no time a clock has
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise APIError(
            400,
            f"{param} must be Unix seconds or ISO 8601 like 2026-11-24T10:00:00Z, got {value!r}",
            param=param,
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def encode_cursor(record: RequestRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, record_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        moment = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(
            400,
            "cursor is not one this server gave out; pass next_cursor from the previous page",
            param="cursor",
            code=INVALID_CURSOR,
        ) from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), record_id


# A time in the spec: ISO 8601 (as RFC 3339 writes it), or Unix seconds.
TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]{1,11}([.][0-9]{1,6})?$"},
    ]
}


@router.get("/v1/requests")
async def list_requests(
    request: Request,
    model: str | None = None,
    version: str | None = None,
    task: str | None = None,
    status: str | None = None,
    api_key_id: str | None = None,
    batch_id: str | None = None,
    since: str | None = Query(None, description="Unix seconds or ISO 8601", json_schema_extra=TIME),
    until: str | None = Query(None, description="Unix seconds or ISO 8601", json_schema_extra=TIME),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = None,
) -> dict[str, Any]:
    store = get_store(request)
    conditions = []
    owner = owner_filter(request)
    if owner is not None:  # a plain key sees its own requests only
        if api_key_id is not None and api_key_id != owner:
            raise APIError(
                403,
                "a key that is not an admin key lists only its own requests",
                param="api_key_id",
                code="forbidden",
                type="permission_error",
            )
        api_key_id = owner
    if model is not None:
        name, _, tag = model.partition(":")
        conditions.append(RequestRecord.model_name == name)
        version = version or tag or None
    if version is not None:
        conditions.append(RequestRecord.model_version == version)
    for column, value in (
        (RequestRecord.task, task),
        (RequestRecord.status, status),
        (RequestRecord.api_key_id, api_key_id),
        (RequestRecord.batch_id, batch_id),
    ):
        if value is not None:
            conditions.append(column == value)
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if start is not None:
        conditions.append(RequestRecord.created_at >= start)
    if end is not None:
        conditions.append(RequestRecord.created_at < end)
    if start is not None and end is not None and start >= end:
        raise APIError(400, "since must be before until", param="since", code=CONFLICTING_FIELDS)
    if cursor is not None:
        created, record_id = decode_cursor(cursor)
        conditions.append(
            or_(
                RequestRecord.created_at < created,
                and_(RequestRecord.created_at == created, RequestRecord.id < record_id),
            )
        )
    query = (
        select(RequestRecord)
        .where(*conditions)
        .order_by(RequestRecord.created_at.desc(), RequestRecord.id.desc())
        .limit(limit + 1)
    )

    def run() -> list[RequestRecord]:
        with Session(store.engine) as session:
            return list(session.scalars(query).all())

    rows = await asyncio.to_thread(run)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return {
        "object": "list",
        "data": [record_object(r) for r in rows],
        "has_more": has_more,
        "next_cursor": encode_cursor(rows[-1]) if has_more else None,
    }


@router.get("/v1/requests/{record_id}")
async def get_request(record_id: str, request: Request) -> dict[str, Any]:
    store = get_store(request)

    def run() -> RequestRecord | None:
        with Session(store.engine) as session:
            return session.get(RequestRecord, record_id)

    record = await asyncio.to_thread(run)
    owner = owner_filter(request)
    if record is None or (owner is not None and record.api_key_id != owner):
        raise APIError(
            404,
            f"request {record_id!r} is not on record",
            param="id",
            code="request_not_found",
            type="not_found_error",
        )
    return record_object(record)
