"""Who is asking, and may they: the API-key and rate-limit dependencies.

Every route but ``/health``, ``/ready`` (and ``/metrics`` unless
``MODELBENCH_METRICS_REQUIRE_KEY``) depends on ``authenticate``:

- With no active key in the keys file the server is open (it says so loudly
  at start, and ``modelbench serve`` binds it to loopback addresses only);
  requests are then rate-limited per client address.
- Otherwise a key is required, as ``Authorization: Bearer <key>`` (what the
  openai client sends) or ``X-API-Key``: none, a wrong one or a revoked one
  is a 401; admin routes need an admin key (403 otherwise). Keys are compared
  in constant time (server/keys.py), and a client address with too many
  failures in a window gets 429 for a while (server/auth_failures.py).
- With JWT authentication configured (server/jwt_auth.py), a bearer token
  that is a JWT is verified instead: its subject acts as a key's id
  (``jwt:<sub>``), its role claim may make it an admin, its claims may set
  its rate limits. The server is then never open, keys file or not.
- The in-server batch worker proves itself with the process's internal
  token (compared in constant time) and acts for the batch's owner.

Then the caller's request bucket is charged (429 with ``Retry-After`` when it
is empty, or while its token bucket is in debt). Tokens are charged when the
request ends, from the request log's counts (server/recorder.py). The buckets
are the process's own (server/ratelimit.py), or with ``--redis-url`` shared
by every process using that Redis (server/shared_ratelimit.py).
"""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from modelbench.config import is_loopback
from modelbench.jobs.worker import INTERNAL_HEADER, OWNER_HEADER
from modelbench.server.auth_failures import AuthFailures
from modelbench.server.errors import APIError
from modelbench.server.jwt_auth import (
    ProviderUnavailable,
    TokenRejected,
    looks_like_jwt,
)
from modelbench.server.keys import ApiKey


@dataclass
class Caller:
    key: ApiKey | None  # None: the server is open, or the batch worker
    who: str  # the rate limits' bucket: key id, or client address
    rpm: int | None
    tpm: int | None
    internal: bool = False


def _secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def unauthorized(message: str) -> APIError:
    return APIError(
        401,
        message,
        code="invalid_api_key",
        type="authentication_error",
        headers={"WWW-Authenticate": "Bearer"},
    )


def auth_required(state: Any) -> bool:
    """Whether callers must authenticate: keys exist, or JWTs are configured."""
    return state.keys.has_active_keys() or getattr(state, "jwt", None) is not None


def _refuse_repeat_offenders(state: Any, client: str) -> None:
    failures: AuthFailures = state.auth_failures
    wait_s = failures.retry_after_s(client)
    if wait_s is not None:
        raise APIError(
            429,
            f"too many failed authentications from {client} ({failures.max_failures} in "
            f"{failures.window_s:.0f} s); retry in {wait_s} s with a valid key",
            code="too_many_failed_authentications",
            type="rate_limit_error",
            headers={"Retry-After": str(wait_s)},
        )


def caller_with_key(request: Request, key: ApiKey) -> Caller:
    """The caller a valid key (or token) makes, noted on the request for its record."""
    settings = request.app.state.settings
    state_dict = request.scope.setdefault("state", {})
    state_dict["api_key_id"] = key.id
    state_dict["api_key_store_text"] = key.store_text
    return Caller(
        key,
        key.id,
        key.rpm if key.rpm is not None else settings.rate_limit_rpm,
        key.tpm if key.tpm is not None else settings.rate_limit_tpm,
    )


async def identify_token(request: Request, token: str) -> Caller:
    """A bearer JWT (JWT authentication configured): its identity as a key's."""
    state = request.app.state
    client = request.client.host if request.client else "unknown"
    _refuse_repeat_offenders(state, client)
    try:
        who = await state.jwt.verify(token)
    except TokenRejected as exc:
        state.auth_failures.record(client)
        raise unauthorized(str(exc)) from None
    except ProviderUnavailable as exc:
        raise APIError(
            503,
            f"{exc}; try again shortly",
            code="identity_provider_unavailable",
            type="service_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    key = ApiKey(
        id=who.subject,
        name=who.subject,
        prefix="jwt",
        hash="",
        admin=who.admin,
        rpm=who.rpm,
        tpm=who.tpm,
        store_text=True,
    )
    return caller_with_key(request, key)


def identify(request: Request, secret: str | None) -> Caller:
    """The caller of a request with an API key (``secret``, from ``_secret``), the
    batch worker, or anyone when the server is open."""
    state = request.app.state
    settings = state.settings
    store = getattr(state, "store", None)
    token = request.headers.get(INTERNAL_HEADER)
    if (
        token is not None
        and store is not None
        and hmac.compare_digest(token.encode(), store.internal_token.encode())
    ):
        owner = request.headers.get(OWNER_HEADER) or None
        request.scope.setdefault("state", {})["api_key_id"] = owner
        return Caller(None, "internal", None, None, internal=True)
    keys = state.keys
    client = request.client.host if request.client else "unknown"
    if not auth_required(state):
        return Caller(None, f"ip:{client}", settings.rate_limit_rpm, settings.rate_limit_tpm)
    failures: AuthFailures = state.auth_failures
    _refuse_repeat_offenders(state, client)
    if secret is None:
        failures.record(client)
        raise unauthorized(
            "an API key is required: send it as 'Authorization: Bearer <key>' "
            "(modelbench keys create makes one)"
        )
    key = keys.verify(secret)
    if key is None:
        failures.record(client)
        raise unauthorized("the API key is not valid or has been revoked")
    return caller_with_key(request, key)


async def authenticate(request: Request) -> Caller:
    secret = _secret(request)
    if (
        getattr(request.app.state, "jwt", None) is not None
        and secret is not None
        and looks_like_jwt(secret)
        and request.headers.get(INTERNAL_HEADER) is None
    ):
        caller = await identify_token(request, secret)
    else:
        caller = identify(request, secret)
    request.scope.setdefault("state", {})["caller"] = caller
    if caller.internal:
        return caller
    shared = request.app.state.shared_limiter  # several processes, one budget
    if shared is not None:
        refusal = await shared.admit(caller.who, caller.rpm, caller.tpm)
    else:
        refusal = request.app.state.limiter.admit(caller.who, caller.rpm, caller.tpm)
    if refusal is not None:
        raise APIError(
            429,
            f"rate limit of {refusal.value} {refusal.limit} reached; retry in "
            f"{refusal.retry_after_s} s",
            code="rate_limit_exceeded",
            type="rate_limit_error",
            headers={"Retry-After": str(refusal.retry_after_s)},
        )
    return caller


async def require_admin(
    request: Request, caller: Annotated[Caller, Depends(authenticate)]
) -> Caller:
    """Admin routes need an admin key. With no keys configured they are
    disabled (403 saying how to enable them), unless the server was started
    with ``allow_open_admin`` on a loopback address and the caller is local.
    Batch jobs (the internal caller) never reach them."""
    if caller.key is not None:
        if caller.key.admin:
            return caller
        jwt = getattr(request.app.state, "jwt", None)
        if caller.key.prefix == "jwt" and jwt is not None:
            raise APIError(
                403,
                f"{caller.key.id} is not an admin: admin routes need a token whose "
                f"{jwt.admin_claim!r} claim holds {jwt.admin_value!r}",
                code="forbidden",
                type="permission_error",
            )
        raise APIError(
            403,
            f"key {caller.key.id} is not an admin key; admin routes need one "
            "(modelbench keys create --name NAME --admin)",
            code="forbidden",
            type="permission_error",
        )
    settings = request.app.state.settings
    client = request.client.host if request.client else ""
    if (
        not caller.internal
        and settings.allow_open_admin
        and is_loopback(settings.host)
        and is_loopback(client)
    ):
        return caller
    raise APIError(
        403,
        "admin routes are disabled: no API keys are configured, and they always need an admin "
        "key. Create one with `modelbench keys create --name NAME --admin` and send it as "
        "'Authorization: Bearer <key>'; or, on a loopback address only, start the server with "
        "--allow-open-admin (MODELBENCH_ALLOW_OPEN_ADMIN=true)",
        code="admin_disabled",
        type="permission_error",
    )


ApiKeyDep = Annotated[Caller, Depends(authenticate)]
AdminKeyDep = Annotated[Caller, Depends(require_admin)]


def charge_tokens(scope: MutableMapping[str, Any], tokens: int) -> None:
    """After a request: its prompt and generated tokens against its caller's budget."""
    caller: Caller | None = scope.get("state", {}).get("caller")
    app = scope.get("app")
    if caller is None or caller.internal or app is None:
        return
    limiter = getattr(app.state, "shared_limiter", None) or app.state.limiter
    limiter.charge_tokens(caller.who, caller.tpm, tokens)
