"""Bearer JWTs beside API keys (server/jwt_auth.py): tokens signed with test
keys, checked against a JWKS served by a real local HTTP server (key
rotation, the provider going away), a PEM public key and an HMAC secret;
and end to end on a served tiny model: the same routes, records, admin
rule and rate limits as API keys, and 401s that say why without echoing
the token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from modelbench.config import Settings
from modelbench.server import jwt_auth
from modelbench.server.jwt_auth import JwtVerifier, ProviderUnavailable, TokenRejected
from modelbench.server.keys import KeyStore

from .conftest import MODEL_NAME, run_server, tiny_settings
from .jwks_server import JwksServer, SigningKey
from .test_records import record_of

ISSUER = "https://id.example.test"
AUDIENCE = "modelbench"


def options(**kwargs: object) -> SimpleNamespace:
    base = {
        name: field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
        if name.startswith("jwt_")
    }
    return SimpleNamespace(**{**base, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, **kwargs})


def claims(**kwargs: object) -> dict[str, object]:
    return {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, **kwargs}


def verify(verifier: JwtVerifier, token: str):
    return asyncio.run(verifier.verify(token))


@pytest.fixture()
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def test_a_token_from_the_providers_keys_acts_as_a_key(jwks: JwksServer) -> None:
    key = SigningKey("k1")
    jwks.keys = [key.jwk]
    verifier = JwtVerifier(options(jwt_jwks_url=jwks.url))
    who = verify(verifier, key.token(claims(role="admin", rpm=7)))
    assert (who.subject, who.admin, who.rpm, who.tpm) == ("jwt:alice", True, 7, None)
    who = verify(verifier, key.token(claims(role=["reader", "admin"])))
    assert who.admin
    assert not verify(verifier, key.token(claims(role="reader"))).admin
    assert jwks.fetches == 1  # the set is cached


def test_limits_come_from_claims_else_the_roles_defaults(jwks: JwksServer) -> None:
    key = SigningKey("k1")
    jwks.keys = [key.jwk]
    limits = {"free": {"rpm": 10, "tpm": 5000}, "pro": {"rpm": 600}}
    verifier = JwtVerifier(options(jwt_jwks_url=jwks.url, jwt_role_limits=limits))
    free = verify(verifier, key.token(claims(role="free")))
    assert (free.rpm, free.tpm) == (10, 5000)
    pro = verify(verifier, key.token(claims(role=["staff", "pro"], tpm=99)))
    assert (pro.rpm, pro.tpm) == (600, 99)  # a claim wins over the role's default
    nobody = verify(verifier, key.token(claims()))
    assert (nobody.rpm, nobody.tpm) == (None, None)  # the server's defaults
    with pytest.raises(ValueError, match=r"jwt_role_limits\['free'\]"):
        JwtVerifier(options(jwt_jwks_url=jwks.url, jwt_role_limits={"free": {"rpm": 0}}))


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"exp": -120}, "expired"),  # times: seconds from when the test runs
        ({"nbf": 600}, "not valid yet"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "https://evil.test"}, "wrong issuer"),
        ({"sub": None}, "no 'sub' claim"),
    ],
)
def test_bad_claims_are_refused_saying_why(jwks: JwksServer, change: dict, reason: str) -> None:
    key = SigningKey("k1")
    jwks.keys = [key.jwk]
    verifier = JwtVerifier(options(jwt_jwks_url=jwks.url))
    now = int(time.time())
    change = {k: now + v if k in ("exp", "nbf") else v for k, v in change.items()}
    body = {k: v for k, v in {**claims(), **change}.items() if v is not None}
    with pytest.raises(TokenRejected, match=reason):
        verify(verifier, key.token(body))


def test_signatures_key_ids_and_algorithms_are_checked(jwks: JwksServer) -> None:
    key, impostor = SigningKey("k1"), SigningKey("k1")  # same key id, another key
    jwks.keys = [key.jwk]
    verifier = JwtVerifier(options(jwt_jwks_url=jwks.url))
    with pytest.raises(TokenRejected, match="bad signature"):
        verify(verifier, impostor.token(claims()))
    with pytest.raises(TokenRejected, match="unknown key id 'k9'"):
        verify(verifier, key.token(claims(), kid="k9"))
    unsigned = jwt.encode(claims(exp=int(time.time()) + 60), None, algorithm="none")
    with pytest.raises(TokenRejected, match="algorithm 'none' is not accepted"):
        verify(verifier, unsigned)
    hmac = jwt.encode(claims(exp=int(time.time()) + 60), "x" * 40, algorithm="HS256")
    with pytest.raises(TokenRejected, match="algorithm 'HS256' is not accepted"):
        verify(verifier, hmac)  # a public key set never takes a secret's algorithm
    with pytest.raises(TokenRejected, match="not a well-formed JWT"):
        verify(verifier, "eyJhbGciOi.broken.token")


def test_keys_rotate_and_survive_the_provider_going_away(jwks: JwksServer, monkeypatch) -> None:
    monkeypatch.setattr(jwt_auth, "JWKS_MIN_REFETCH_S", 0.0)
    old, new = SigningKey("2026-01"), SigningKey("2026-02", kind="EC")
    jwks.keys = [old.jwk]
    verifier = JwtVerifier(
        options(jwt_jwks_url=jwks.url, jwt_jwks_refresh_s=0.2, jwt_jwks_max_stale_s=1.0)
    )
    assert verify(verifier, old.token(claims())).subject == "jwt:alice"
    jwks.keys = [old.jwk, new.jwk]  # rotation: a token with the new key id refetches the set
    assert verify(verifier, new.token(claims(sub="bob"))).subject == "jwt:bob"
    jwks.up = False  # the provider is unreachable: the cached keys keep working ...
    time.sleep(0.3)
    assert verify(verifier, new.token(claims())).subject == "jwt:alice"
    time.sleep(1.0)  # ... until they are older than jwt_jwks_max_stale_s
    with pytest.raises(ProviderUnavailable, match="could not be fetched"):
        verify(verifier, new.token(claims()))
    jwks.up = True
    assert verify(verifier, old.token(claims())).subject == "jwt:alice"


def test_a_pem_public_key_or_a_secret_for_local_setups(tmp_path: Path) -> None:
    key = SigningKey("local", kind="EC")
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    verifier = JwtVerifier(options(jwt_public_key=pem))
    assert verifier.algorithms == ("ES256", "ES384", "ES512")
    assert verify(verifier, key.token(claims(), kid=None)).subject == "jwt:alice"
    with pytest.raises(TokenRejected, match="'RS256' is not accepted"):
        verify(verifier, SigningKey("r").token(claims()))
    secret = "s" * 40
    verifier = JwtVerifier(options(jwt_secret=secret))
    assert (
        verify(verifier, jwt.encode({**claims(), "exp": int(time.time()) + 60}, secret)).admin
        is False
    )
    with pytest.raises(TokenRejected, match="bad signature"):
        verify(verifier, jwt.encode({**claims(), "exp": int(time.time()) + 60}, "t" * 40))
    with pytest.raises(ValueError, match="at least 32 characters"):
        JwtVerifier(options(jwt_secret="short"))
    with pytest.raises(ValueError, match="exactly one key source"):
        JwtVerifier(options(jwt_secret=secret, jwt_public_key=pem))
    with pytest.raises(ValueError, match="not a readable PEM public key"):
        JwtVerifier(options(jwt_public_key=tmp_path / "missing.pem"))


@pytest.fixture(scope="module")
def served(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("jwt")
    jwks = JwksServer()
    key = SigningKey("k1")
    jwks.keys = [key.jwk]
    store = KeyStore(root / "keys.json")
    _, api_secret = store.create("app")  # API keys keep working beside tokens
    settings = tiny_settings(
        tiny_llama_path,
        root,
        jwt_jwks_url=jwks.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        auth_max_failures=1000,
    )
    with run_server(settings, tiny_llama_path) as running:
        yield running, key, api_secret
    jwks.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BODY = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2, "temperature": 0}


def test_served_tokens_use_the_same_routes_records_and_admin_rule(served) -> None:
    running, key, api_secret = served
    url = running.base_url
    alice = bearer(key.token(claims()))
    ok = httpx.post(f"{url}/v1/completions", json=BODY, headers=alice, timeout=60)
    assert ok.status_code == 200, ok.text
    assert record_of(running, ok, alice)["api_key_id"] == "jwt:alice"  # her own record
    other = httpx.get(
        f"{url}/v1/requests/{ok.headers['x-modelbench-record-id']}",
        headers=bearer(key.token(claims(sub="mallory"))),
        timeout=30,
    )
    assert other.status_code == 404  # another subject's record is not there for them
    by_key = httpx.post(f"{url}/v1/completions", json=BODY, headers=bearer(api_secret), timeout=60)
    assert by_key.status_code == 200
    # an admin route: past the admin check, the cache (off here) answers 409
    admin = httpx.delete(
        f"{url}/v1/admin/cache", headers=bearer(key.token(claims(role="admin"))), timeout=30
    )
    assert admin.status_code == 409, admin.text
    plain = httpx.delete(f"{url}/v1/admin/cache", headers=bearer(key.token(claims())), timeout=30)
    assert (
        plain.status_code == 403
        and "jwt:alice is not an admin: admin routes need a token whose 'role' claim holds 'admin'"
        in plain.json()["error"]["message"]
    )


def test_served_bad_tokens_are_401_saying_why_without_the_token(served) -> None:
    running, key, _ = served
    for token, reason in [
        (key.token(claims(exp=int(time.time()) - 300)), "expired"),
        (key.token(claims(aud="other")), "wrong audience"),
        (key.token(claims(), kid="nope"), "unknown key id"),
        (SigningKey("k1").token(claims()), "bad signature"),
    ]:
        r = httpx.post(
            f"{running.base_url}/v1/completions", json=BODY, headers=bearer(token), timeout=30
        )
        assert r.status_code == 401 and reason in r.json()["error"]["message"], r.text
        assert token not in r.text and token.split(".")[1] not in r.text
        assert r.headers["www-authenticate"] == "Bearer"
    none = httpx.post(f"{running.base_url}/v1/completions", json=BODY, timeout=30)
    assert none.status_code == 401  # JWTs configured: the server is never open


def test_served_rate_limit_from_the_token(served) -> None:
    running, key, _ = served
    token = key.token(claims(sub="limited", rpm=2))
    codes = [
        httpx.post(
            f"{running.base_url}/v1/completions", json=BODY, headers=bearer(token), timeout=60
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
