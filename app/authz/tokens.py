"""Gen3 access tokens: RS256 JWTs issued by Fence, checked against Fence's JWKS."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import jwt
from cachetools import TTLCache

from app.authz.principals import Principal, token_hash
from app.cache import AsyncCache
from app.errors import DependencyUnavailable, Unauthenticated

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
# No issuer uses key ids this long; such a kid is refused without looking for it.
MAX_KID_LENGTH = 256

__all__ = ["Identity", "TokenVerifier", "require_scopes", "token_hash"]


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
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        """The name recorded in audit rows and access logs: user name, else client id."""
        return self.username or self.client_id or self.subject or "unknown"

    @property
    def principal(self) -> Principal:
        """This token, as Arborist is asked about it."""
        return Principal.of_token(
            self.token, expires_at=self.expires_at, username=self.username, digest=self.token_hash
        )

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def parse_scopes(claim: object) -> frozenset[str]:
    """Fence writes ``scope`` as a list; OAuth2 servers as one space-separated string."""
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list | tuple):
        return frozenset(item for item in claim if isinstance(item, str) and item)
    return frozenset()


def require_scopes(identity: Identity, scopes: Iterable[str]) -> Identity:
    """``identity`` if its token carries every scope in ``scopes``; 401 naming the missing ones."""
    wanted = list(scopes)
    missing = [scope for scope in wanted if scope not in identity.scopes]
    if missing:
        raise Unauthenticated(
            f"the access token lacks the required scope{'s' if len(missing) > 1 else ''}"
            f" {', '.join(repr(scope) for scope in missing)} (needs: {' '.join(wanted)})"
        )
    return identity


class JwksSource(Protocol):
    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The published key with this id (the only key when ``kid`` is None), or None."""
        ...


class HttpJwks:
    """An issuer's JWKS over HTTP, cached, with stale-if-error for the whole grace period.

    An unknown ``kid`` usually means the issuer rotated its keys, so the set is fetched again,
    but a forged ``kid`` must not cost the cached set: a refetch replaces the set only when it
    succeeds, refetches happen at most once per ``min_refresh_interval``, and a kid a successful
    refetch did not contain is remembered as unknown for ``unknown_kid_ttl`` seconds.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        ttl: float,
        min_refresh_interval: float = 5.0,
        unknown_kid_ttl: float = 60.0,
        max_unknown_kids: int = 1024,
        dependency: str = "fence",
        name: str = "jwks",
    ) -> None:
        self.url = url
        self._http = http
        self._dependency = dependency
        self._cache: AsyncCache[str, jwt.PyJWKSet] = AsyncCache(
            name, ttl=ttl, max_entries=1, grace_period=ttl
        )
        self._min_refresh_interval = min_refresh_interval
        self._last_refetch = -math.inf
        self._refetch_lock = asyncio.Lock()
        self._unknown: TTLCache[str, bool] = TTLCache(
            maxsize=max_unknown_kids, ttl=unknown_kid_ttl, timer=time.monotonic
        )
        self.refetches = 0

    async def keys(self) -> jwt.PyJWKSet:
        return await self._cache.get("jwks", self._fetch)

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        found = _find(await self.keys(), kid)
        if found is not None or kid is None or len(kid) > MAX_KID_LENGTH or kid in self._unknown:
            return found
        return await self._refetch_for(kid)

    async def _refetch_for(self, kid: str) -> jwt.PyJWK | None:
        async with self._refetch_lock:
            # Another request may have refetched while this one waited for the lock.
            found = _find(await self.keys(), kid)
            if found is not None or kid in self._unknown:
                return found
            now = time.monotonic()
            if now - self._last_refetch < self._min_refresh_interval:
                return None
            self._last_refetch = now
            self.refetches += 1
            try:
                fresh = await self._fetch()
            except DependencyUnavailable:
                log.warning(
                    "could not refetch the token keys for an unknown kid; keeping the cached set",
                    extra={"dependency": self._dependency},
                )
                return None
            self._cache.set("jwks", fresh)
            found = _find(fresh, kid)
            if found is None:
                self._unknown[kid] = True
            return found

    async def _fetch(self) -> jwt.PyJWKSet:
        try:
            response = await self._http.get(self.url, timeout=5.0)
            response.raise_for_status()
            return jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            raise DependencyUnavailable(
                self._dependency, "token keys (JWKS) are unavailable"
            ) from exc


class StaticJwks:
    """A fixed key set (local development mode)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = jwt.PyJWKSet.from_dict(dict(jwks))

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        return _find(self._keys, kid)


async def decode_verified(
    token: str,
    jwks: JwksSource,
    *,
    algorithms: Collection[str],
    issuer: str,
    audience: str | None,
    leeway: float = 0,
    what: str = "the access token",
) -> dict[str, Any]:
    """The claims of ``token`` once its signature, issuer, expiry and audience hold; else 401."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthenticated(f"{what} is not a valid JWT") from None
    alg = header.get("alg")
    if alg not in algorithms:
        raise Unauthenticated(f"{what} must be signed with {' or '.join(algorithms)}")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthenticated(f"{what} has a malformed key id")
    key = await jwks.key(kid)
    # The key decides the algorithm: an RSA key never checks an ES256 signature, or vice versa.
    if key is None or key.algorithm_name != alg:
        raise Unauthenticated(f"{what} was signed by an unknown key")
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={
                "require": ["exp", "iss"] + (["aud"] if audience else []),
                "verify_aud": audience is not None,
            },
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(f"{what} has expired") from None
    except jwt.InvalidIssuerError:
        raise Unauthenticated(f"{what} was not issued by this commons") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated(f"{what} is not meant for this service (aud)") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"{what} is invalid: {exc}") from None


class TokenVerifier:
    """Verifies access tokens and remembers verified ones until they expire.

    ``audience``, when set, must appear in the token's ``aud``; ``verify(scopes=...)`` also
    requires those scopes (checked on every call, cached tokens included).
    """

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str | None = None,
        max_entries: int = 10_000,
        leeway: float = 0,
    ) -> None:
        self._jwks = jwks
        self.issuer = issuer.rstrip("/")
        self.audience = audience or None
        self._leeway = leeway
        self._verified: AsyncCache[str, Identity] = AsyncCache(
            "tokens", ttl=0, max_entries=max_entries
        )

    @property
    def cache(self) -> AsyncCache[str, Identity]:
        return self._verified

    async def verify(
        self, token: str, *, scopes: Iterable[str] = (), digest: str | None = None
    ) -> Identity:
        digest = digest or token_hash(token)
        identity = self._verified.peek(digest)
        if identity is None:
            identity = await self._verify(token, digest)
            self._verified.set(digest, identity, ttl=identity.seconds_left())
        return require_scopes(identity, scopes)

    async def _verify(self, token: str, digest: str) -> Identity:
        claims = await decode_verified(
            token,
            self._jwks,
            algorithms=ALGORITHMS,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self._leeway,
        )
        if claims.get("pur") != "access":
            raise Unauthenticated("an access token is required (pur must be 'access')")
        context = claims.get("context")
        user = context.get("user") if isinstance(context, dict) else None
        name = user.get("name") if isinstance(user, dict) else None
        azp = claims.get("azp")
        return Identity(
            token=token,
            token_hash=digest,
            subject=str(claims["sub"]) if claims.get("sub") is not None else None,
            username=name if isinstance(name, str) and name else None,
            client_id=azp if isinstance(azp, str) and azp else None,
            expires_at=float(claims["exp"]),
            claims=claims,
            scopes=parse_scopes(claims.get("scope")),
        )


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    if kid is None:
        return keys.keys[0] if len(keys.keys) == 1 else None
    return next((key for key in keys.keys if key.key_id == kid), None)
