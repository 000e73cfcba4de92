"""Gen3 access tokens: RS256 JWTs issued by Fence, checked against Fence's JWKS."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

from app.cache import AsyncCache
from app.errors import DependencyUnavailable, Unauthenticated

ALGORITHMS = ["RS256"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as proven by a verified access token."""

    token: str
    token_hash: str
    subject: str | None
    username: str | None
    client_id: str | None
    expires_at: float
    claims: Mapping[str, Any]

    @property
    def actor(self) -> str:
        """The name recorded in audit rows and access logs: user name, else client id."""
        return self.username or self.client_id or self.subject or "unknown"

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class JwksSource(Protocol):
    async def keys(self, *, refresh: bool = False) -> jwt.PyJWKSet: ...


class HttpJwks:
    """Fence's JWKS over HTTP, cached, refreshed at most once per ``min_refresh_interval``."""

    def __init__(
        self, url: str, http: httpx.AsyncClient, *, ttl: float, min_refresh_interval: float = 5.0
    ) -> None:
        self.url = url
        self._http = http
        self._cache: AsyncCache[str, jwt.PyJWKSet] = AsyncCache(
            "jwks", ttl=ttl, max_entries=1, grace_period=ttl
        )
        self._min_refresh_interval = min_refresh_interval
        self._last_forced = 0.0

    async def keys(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        now = time.monotonic()
        if refresh and now - self._last_forced >= self._min_refresh_interval:
            # An unknown kid usually means Fence rotated its keys; look again, but never let
            # forged kids turn every request into a JWKS fetch.
            self._last_forced = now
            self._cache.invalidate("jwks")
        return await self._cache.get("jwks", self._fetch)

    async def _fetch(self) -> jwt.PyJWKSet:
        try:
            response = await self._http.get(self.url, timeout=5.0)
            response.raise_for_status()
            return jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            raise DependencyUnavailable("fence", "token keys (JWKS) are unavailable") from exc


class StaticJwks:
    """A fixed key set (local development mode)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = jwt.PyJWKSet.from_dict(dict(jwks))

    async def keys(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        return self._keys


class TokenVerifier:
    """Verifies access tokens and remembers verified ones until they expire."""

    def __init__(
        self, jwks: JwksSource, *, issuer: str, max_entries: int = 10_000, leeway: float = 0
    ) -> None:
        self._jwks = jwks
        self.issuer = issuer.rstrip("/")
        self._leeway = leeway
        self._verified: AsyncCache[str, Identity] = AsyncCache(
            "tokens", ttl=0, max_entries=max_entries
        )

    @property
    def cache(self) -> AsyncCache[str, Identity]:
        return self._verified

    async def verify(self, token: str) -> Identity:
        digest = token_hash(token)
        identity = self._verified.peek(digest)
        if identity is not None:
            return identity
        identity = await self._verify(token, digest)
        self._verified.set(digest, identity, ttl=identity.seconds_left())
        return identity

    async def _verify(self, token: str, digest: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is not a valid JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("the access token must be signed with RS256")
        kid = header.get("kid")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the access token was not issued by this commons") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the access token is invalid: {exc}") from None
        if claims.get("pur") != "access":
            raise Unauthenticated("an access token is required (pur must be 'access')")
        user = (claims.get("context") or {}).get("user") or {}
        return Identity(
            token=token,
            token_hash=digest,
            subject=str(claims["sub"]) if claims.get("sub") is not None else None,
            username=user.get("name") if isinstance(user, dict) else None,
            client_id=claims.get("azp") or None,
            expires_at=float(claims["exp"]),
            claims=claims,
        )

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        keys = await self._jwks.keys()
        key = _find(keys, kid)
        if key is None:
            key = _find(await self._jwks.keys(refresh=True), kid)
        if key is None:
            raise Unauthenticated("the access token was signed by an unknown key")
        return key


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    if kid is None:
        return keys.keys[0] if len(keys.keys) == 1 else None
    return next((key for key in keys.keys if key.key_id == kid), None)
