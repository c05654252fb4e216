"""Bearer JWTs beside API keys: ``Authorization: Bearer <JWT>`` from an
identity provider, verified with PyJWT.

Configured with one key source:

- ``--jwt-jwks-url``: an OIDC provider's JWKS. Fetched on first use and
  every ``jwt_jwks_refresh_s``; a token naming a key id the set lacks makes
  one early refetch (rotation), at most every ``JWKS_MIN_REFETCH_S``. If
  the provider cannot be reached, the keys fetched before keep working
  until they are ``jwt_jwks_max_stale_s`` old; with none, the request gets
  503.
- ``--jwt-public-key`` (a PEM file: RSA, EC or Ed25519) or ``--jwt-secret``
  (HMAC) for local setups.

Only the configured family's algorithms are taken (``none`` never; HMAC
only with a secret), and ``exp`` is required; ``nbf``, ``--jwt-issuer`` and
``--jwt-audience`` are checked. The claims map to what an API key has: the
subject is the caller's id (``jwt:<sub>`` in records, limits and cache
tenancy, so it never meets an API key's id), ``--jwt-admin-claim`` holding
``--jwt-admin-value`` (a string, or one of a list) makes an admin, and the
``rpm`` / ``tpm`` claims (names configurable) set its rate limits, else its
role's (``jwt_role_limits``, the first role of a list that has some), else
the server's defaults. A bad token is a 401 saying why, never echoing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

log = logging.getLogger("modelbench.server")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS + EC_ALGORITHMS + ("EdDSA",)
JWKS_MIN_REFETCH_S = 10.0  # an unknown key id refetches the set at most this often
SUBJECT_PREFIX = "jwt:"


class TokenRejected(Exception):
    """A token that does not authenticate; the message says why (a 401)."""


class ProviderUnavailable(Exception):
    """The JWKS could not be fetched and no keys are cached (a 503)."""


@dataclass(frozen=True)
class TokenIdentity:
    subject: str  # jwt:<sub>
    admin: bool
    rpm: int | None
    tpm: int | None


def looks_like_jwt(secret: str) -> bool:
    """A compact JWS: three base64url parts, a JSON header first."""
    return secret.startswith("eyJ") and secret.count(".") == 2


def configured(settings: Any) -> bool:
    return bool(settings.jwt_jwks_url or settings.jwt_public_key or settings.jwt_secret)


def _algorithms_for(public_key: Any) -> tuple[str, ...]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ValueError(f"--jwt-public-key: unsupported key type {type(public_key).__name__}")


class JwtVerifier:
    """Checks tokens against the settings' key source (see the module's docstring)."""

    def __init__(self, settings: Any) -> None:
        sources = [
            s for s in (settings.jwt_jwks_url, settings.jwt_public_key, settings.jwt_secret) if s
        ]
        if len(sources) != 1:
            raise ValueError(
                "JWT authentication takes exactly one key source: --jwt-jwks-url, --jwt-public-key "
                "or --jwt-secret"
            )
        self.issuer: str | None = settings.jwt_issuer
        self.audience: str | None = settings.jwt_audience
        self.admin_claim: str = settings.jwt_admin_claim
        self.admin_value: str = settings.jwt_admin_value
        self.rpm_claim: str = settings.jwt_rpm_claim
        self.tpm_claim: str = settings.jwt_tpm_claim
        self.role_limits: dict[str, dict[str, int]] = dict(settings.jwt_role_limits or {})
        for role, limits in self.role_limits.items():
            bad = {
                k: v
                for k, v in limits.items()
                if k not in ("rpm", "tpm") or not isinstance(v, int) or v < 1
            }
            if bad:
                raise ValueError(
                    f"jwt_role_limits[{role!r}]: {bad} is not valid; "
                    "give rpm and/or tpm as integers >= 1"
                )
        self.leeway_s: float = settings.jwt_leeway_s
        self.jwks_url: str | None = settings.jwt_jwks_url
        self.refresh_s: float = settings.jwt_jwks_refresh_s
        self.max_stale_s: float = settings.jwt_jwks_max_stale_s
        self._key: Any = None
        self.algorithms: tuple[str, ...]
        if settings.jwt_secret:
            if len(settings.jwt_secret) < 32:
                raise ValueError(
                    "--jwt-secret must be at least 32 characters (HS256 needs 256 bits)"
                )
            self._key, self.algorithms = settings.jwt_secret, HMAC_ALGORITHMS
        elif settings.jwt_public_key:
            path = Path(settings.jwt_public_key)
            try:
                self._key = load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"--jwt-public-key {path}: not a readable PEM public key ({exc})"
                ) from exc
            self.algorithms = _algorithms_for(self._key)
        else:
            self.algorithms = ASYMMETRIC_ALGORITHMS
        # key id -> the key, and the "alg" its JWK names (if any)
        self._jwks: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        self._fetched_at: float | None = None  # monotonic time of the last good fetch
        self._last_try = -float("inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> TokenIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenRejected("the bearer token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected(
                f"the token's algorithm {alg!r} is not accepted; this server takes "
                f"{', '.join(self.algorithms)}"
            )
        key = self._key if self.jwks_url is None else await self._jwk(header.get("kid"), alg)
        required = (
            ["exp", "sub"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired (exp); get a new one") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected(
                f"wrong audience: this server takes tokens for {self.audience!r}"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected(
                f"wrong issuer: this server takes tokens from {self.issuer!r}"
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("bad signature: the token was not signed by a trusted key") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the token is not valid: {type(exc).__name__}") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("the token's 'sub' claim must be a non-empty string")
        role = claims.get(self.admin_claim)
        roles = [r for r in (role if isinstance(role, list) else [role]) if isinstance(r, str)]
        defaults = next((self.role_limits[r] for r in roles if r in self.role_limits), {})
        rpm, tpm = _limit(claims, self.rpm_claim), _limit(claims, self.tpm_claim)
        return TokenIdentity(
            SUBJECT_PREFIX + subject,
            self.admin_value in roles,
            rpm if rpm is not None else defaults.get("rpm"),
            tpm if tpm is not None else defaults.get("tpm"),
        )

    async def _jwk(self, kid: str | None, alg: str) -> Any:
        async with self._lock:
            now = time.monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.refresh_s
            unknown = kid not in self._jwks and not (kid is None and len(self._jwks) == 1)
            if not fresh or (unknown and now - self._last_try >= JWKS_MIN_REFETCH_S):
                await self._refetch(now)
            if self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_stale_s:
                self._jwks = {}
                raise ProviderUnavailable(
                    f"the identity provider's keys ({self.jwks_url}) could not be fetched"
                )
            found: tuple[jwt.PyJWK, str | None] | None
            if kid is None and len(self._jwks) == 1:
                found = next(iter(self._jwks.values()))
            elif kid is None:
                raise TokenRejected(
                    "the token has no 'kid' header and the provider has several keys"
                )
            else:
                found = self._jwks.get(kid)
            if found is None:
                raise TokenRejected(
                    f"unknown key id {kid!r}: the provider's key set does not have it"
                )
            jwk, meant_for = found
            if meant_for is not None and meant_for != alg:
                raise TokenRejected(f"key {jwk.key_id!r} is for {meant_for}; the token says {alg}")
            return jwk.key

    async def _refetch(self, now: float) -> None:
        self._last_try = now
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.jwks_url)  # type: ignore[arg-type]
                response.raise_for_status()
                data = response.json()
                keys = jwt.PyJWKSet.from_dict(data).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning(
                "could not fetch the JWKS at %s (%s); %s",
                self.jwks_url,
                exc,
                "using the keys fetched before" if self._fetched_at is not None else "no keys yet",
            )
            return
        named = {k.get("kid"): k.get("alg") for k in data["keys"] if isinstance(k, dict)}
        self._jwks = {k.key_id: (k, named.get(k.key_id)) for k in keys}
        self._fetched_at = time.monotonic()


def _limit(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None
