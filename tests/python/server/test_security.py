"""The security review, an item a test: keys compared in constant time, the
keys file private, failed authentication slowed down per client address,
CORS off unless configured, no stack trace in a 500, and with no keys the
request log served to loopback clients only (X-Forwarded-For believed from
the configured proxies only). Log privacy is tests/python/server/
test_log_privacy.py; slow and greedy clients test_slow_clients.py."""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.cli.main import build_parser, settings_from_args
from modelbench.jobs.worker import INTERNAL_HEADER
from modelbench.server import create_app
from modelbench.server.auth_failures import AuthFailures
from modelbench.server.keys import KeyStore, hash_key

from .test_slow_clients import Served, serve_with_runner, tiny_settings

BODY_PATHS = ("/v1/models", "/v1/requests")


def asgi_get(app, path: str, client: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request to ``app`` as if from the address ``client`` (the ASGI
    scope's client: what uvicorn sets from the connection)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://modelbench") as http:
            return await http.get(path, headers=headers or {})

    return asyncio.run(go())


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# ---- 1. keys compared in constant time ----------------------------------------------


def test_every_key_is_compared_with_compare_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guess is compared with every key's hash by hmac.compare_digest and
    the loop does not stop at a match: the time taken says nothing about how
    close a guess was, nor which key it matched."""
    store = KeyStore(tmp_path / "keys.json")
    made = [store.create(f"k{i}") for i in range(3)]
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    key, secret = made[1]
    other = "A" if secret[-1] != "A" else "B"
    near_misses = [secret[:-1] + other, secret + "x", secret[:-1], other + secret[1:], ""]
    for guess in near_misses:
        calls.clear()
        assert store.verify(guess) is None
        assert sorted(a for a, _ in calls) == sorted(k.hash for k, _ in made)
        assert {b for _, b in calls} == {hash_key(guess)}
    calls.clear()
    found = store.verify(secret)
    assert found is not None and found.id == key.id
    assert len(calls) == len(made)  # the keys after the match were compared too
    store.revoke(key.id)
    assert store.verify(secret) is None


def test_internal_token_is_compared_with_compare_digest(
    tiny_llama_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    keys.create("app")
    app = create_app(tiny_settings(tiny_llama_path, keys_file=keys.path))
    token = app.state.store.internal_token
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    wrong = token[:-1] + ("a" if token[-1] != "a" else "b")
    refused = asgi_get(app, "/v1/models", "127.0.0.1", {INTERNAL_HEADER: wrong})
    assert refused.status_code == 401
    assert (wrong.encode(), token.encode()) in seen
    assert asgi_get(app, "/v1/models", "127.0.0.1", {INTERNAL_HEADER: token}).status_code == 200


# ---- 2. the keys file is private ---------------------------------------------------------


def keys_command(*args: str, umask: int = 0) -> subprocess.CompletedProcess[str]:
    """``modelbench keys ...`` as a user would run it, under ``umask`` (0: the
    loosest, so the modes below are the command's own doing)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "modelbench", "keys", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=lambda: os.umask(umask),
        timeout=120,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_create_writes_a_private_file_in_a_private_folder(tmp_path: Path) -> None:
    keys_file = tmp_path / "new" / "modelbench" / "keys.json"
    created = keys_command("create", "--name", "app", "--keys-file", str(keys_file))
    assert created.returncode == 0, created.stderr
    assert mode(keys_file) == 0o600
    assert mode(keys_file.parent) == 0o700
    assert mode(keys_file.with_suffix(".lock")) == 0o600
    key_id = created.stdout.split()[1]
    revoked = keys_command("revoke", key_id, "--keys-file", str(keys_file))
    assert revoked.returncode == 0, revoked.stderr
    assert mode(keys_file) == 0o600  # rewritten, still private
    assert [p.name for p in keys_file.parent.iterdir() if p.name.startswith(".keys-")] == []


def test_keys_create_refuses_a_folder_anyone_may_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = keys_command("create", "--name", "app", "--keys-file", str(shared / "keys.json"))
    assert refused.returncode != 0
    assert "writable by every user" in refused.stderr and f"chmod o-w {shared}" in refused.stderr
    assert not (shared / "keys.json").exists()


# ---- 3. repeated failed authentication is slowed down ------------------------------------


def test_failed_authentication_from_one_address_is_slowed(
    tiny_llama_path: Path, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    _, secret = store.create("app")
    app = create_app(tiny_settings(tiny_llama_path, keys_file=store.path, auth_max_failures=3))
    attacker, neighbour = "10.0.0.1", "10.0.0.2"
    for guess in ({}, bearer("mb-guess-1"), bearer(secret[:-1])):
        assert asgi_get(app, "/v1/models", attacker, guess).status_code == 401
    for headers in (bearer("mb-guess-4"), bearer(secret)):  # even the right key, for a while
        blocked = asgi_get(app, "/v1/models", attacker, headers)
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        error = blocked.json()["error"]
        assert error["code"] == "too_many_failed_authentications"
        assert "3 in 60 s" in error["message"] and "retry in" in error["message"]
    # another address is not held back by the attacker's failures
    assert asgi_get(app, "/v1/models", neighbour, bearer(secret)).status_code == 200
    assert asgi_get(app, "/v1/models", neighbour, bearer("mb-nope")).status_code == 401


def test_failure_counts_are_windowed_and_bounded() -> None:
    failures = AuthFailures(max_failures=2, window_s=10.0, max_clients=100)
    failures.record("a", now=0.0)
    assert failures.retry_after_s("a", now=1.0) is None
    failures.record("a", now=2.0)
    assert failures.retry_after_s("a", now=3.0) == 7  # until the first leaves the window
    assert failures.retry_after_s("a", now=10.5) is None  # one left: may try again
    failures.record("a", now=11.0)
    assert failures.retry_after_s("a", now=11.0) == 1
    for i in range(10_000):  # many addresses: the oldest are forgotten
        failures.record(f"10.1.{i // 256}.{i % 256}", now=20.0)
    assert len(failures) == 100
    for _ in range(1000):  # many failures from one: at most max_failures times kept
        failures.record("b", now=30.0)
    assert failures.retry_after_s("b", now=30.0) == 10


# ---- 5. CORS off unless configured -----------------------------------------------------


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def asgi(app, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://modelbench") as http:
            return await http.request(method, path, headers=headers)

    return asyncio.run(go())


def test_cors_is_off_by_default(tiny_llama_path: Path) -> None:
    app = create_app(tiny_settings(tiny_llama_path))
    origin = {"Origin": "https://app.example"}
    assert "access-control-allow-origin" not in asgi(app, "GET", "/health", origin).headers
    preflight = asgi(app, "OPTIONS", "/v1/completions", {**origin, **PREFLIGHT})
    assert preflight.status_code >= 400
    assert not any(h.startswith("access-control-") for h in preflight.headers)


def test_cors_allows_the_configured_origins_only(tiny_llama_path: Path) -> None:
    app = create_app(tiny_settings(tiny_llama_path, cors_origins=["https://app.example"]))
    ok = asgi(app, "OPTIONS", "/v1/completions", {"Origin": "https://app.example", **PREFLIGHT})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = asgi(app, "OPTIONS", "/v1/completions", {"Origin": "https://evil.example", **PREFLIGHT})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = asgi(app, "GET", "/health", {"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    foreign = asgi(app, "GET", "/health", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


def test_serve_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(
        ["serve", "--cors-origin", "https://a.example", "--cors-origin", "https://b.example"]
    )
    settings = settings_from_args(args)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.log_text is False
    assert settings_from_args(build_parser().parse_args(["serve", "--log-text"])).log_text


# ---- 7 and 8: an open server on every address --------------------------------------------


def outward_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture(scope="module")
def open_server(
    tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """No keys, listening on every address, with uvicorn's FORWARDED_ALLOW_IPS
    set to trust everyone: the server must not listen to it."""
    root = tmp_path_factory.mktemp("security")
    settings = tiny_settings(
        tiny_llama_path,
        host="0.0.0.0",
        keys_file=root / "keys.json",
        database_url=f"sqlite:///{root / 'store.db'}",
    )
    before = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = "*"
    try:
        with serve_with_runner(settings) as served:
            served.database = root / "store.db"  # type: ignore[attr-defined]
            # /ready is 200 before the store is migrated (inference does not
            # wait for it); these tests write and read its tables.
            deadline = time.monotonic() + 60
            while httpx.get(f"{served.base_url}/ready").json().get("store") != "ready":
                assert time.monotonic() < deadline, "the store was not migrated in 60 s"
                time.sleep(0.05)
            yield served
    finally:
        if before is None:
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = before


def test_an_internal_error_is_a_500_without_a_trace(open_server: Served) -> None:
    """A record the database holds in a shape the code cannot read (written
    by hand here) makes GET /v1/requests/{id} fail inside: the client gets
    OpenAI's error body with the request id, and nothing of the exception."""
    marker = "SECRET-INTERNAL-DETAIL-7f3a"
    with sqlite3.connect(open_server.database) as db:  # type: ignore[attr-defined]
        db.execute(
            "INSERT INTO requests (id, endpoint, task, stream, status, created_at) "
            "VALUES ('req_corrupt', '/v1/completions', 'generate', 0, 'succeeded', ?)",
            (f"not a time {marker}",),
        )
    try:
        response = httpx.get(
            f"{open_server.base_url}/v1/requests/req_corrupt",
            headers={"X-Request-ID": "req-500-a"},
        )
    finally:
        with sqlite3.connect(open_server.database) as db:  # type: ignore[attr-defined]
            db.execute("DELETE FROM requests WHERE id = 'req_corrupt'")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "internal_error" and error["code"] == "internal_error"
    assert "req-500-a" in error["message"] and response.headers["x-request-id"] == "req-500-a"
    for leak in (marker, "Traceback", 'File "', ".py", "ValueError"):
        assert leak not in response.text, leak


def test_request_log_is_loopback_only_without_keys(open_server: Served) -> None:
    # in process: the ASGI scope's client is what uvicorn takes from the connection
    refused = asgi_get(open_server.app, "/v1/requests", "10.0.0.1")
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert "loopback" in message and "modelbench keys create" in message
    assert asgi_get(open_server.app, "/v1/requests/req_x", "10.0.0.1").status_code == 403
    assert asgi_get(open_server.app, "/v1/models", "10.0.0.1").status_code == 200
    # on the wire, from this machine
    local = httpx.get(f"{open_server.base_url}/v1/requests")
    assert local.status_code == 200 and local.json()["object"] == "list"
    # a trusted proxy (loopback) saying the client is elsewhere is believed
    proxied = httpx.get(
        f"{open_server.base_url}/v1/requests", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert proxied.status_code == 403


def test_request_log_refuses_a_remote_client_whatever_it_claims(open_server: Served) -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to connect from")
    url = f"http://{address}:{open_server.port}/v1/requests"
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "::1"}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert refused.json()["error"]["type"] == "permission_error"
    assert httpx.get(f"http://{address}:{open_server.port}/v1/models").status_code == 200
