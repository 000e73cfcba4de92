"""The service's long-lived parts, created once per app by the lifespan and closed with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from app.authz.arborist import ArboristAuthorizer, Authorizer, DecisionCache, LocalPolicyAuthorizer
from app.authz.policy import PolicyDocument
from app.authz.tokens import HttpJwks, StaticJwks, TokenVerifier
from app.config import Settings
from app.db import Database
from app.dev import DEV_ISSUER, DevMode, dev_jwks
from app.registry.service import RegistryService

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    http: httpx.AsyncClient
    tokens: TokenVerifier
    authorizer: Authorizer
    registry: RegistryService
    dev: DevMode | None = None
    closers: list = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, *, dev: DevMode | None = None) -> Services:
        db = Database(settings)
        # One pooled client for Arborist and Fence's JWKS; limits sit above the concurrency a
        # replica serves so requests never queue for a connection.
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
            timeout=httpx.Timeout(settings.arborist_timeout),
        )
        if dev is not None:
            tokens = TokenVerifier(
                StaticJwks(dev_jwks(dev)), issuer=DEV_ISSUER, max_entries=settings.cache_max_entries
            )
            authorizer: Authorizer = LocalPolicyAuthorizer(PolicyDocument.load(dev.policy_file))
        else:
            jwks = HttpJwks(
                settings.user_api.rstrip("/") + "/.well-known/jwks",
                http,
                ttl=settings.jwks_cache_ttl,
            )
            tokens = TokenVerifier(
                jwks, issuer=settings.user_api, max_entries=settings.cache_max_entries
            )
            authorizer = ArboristAuthorizer(
                settings.arborist_url,
                http,
                timeout=settings.arborist_timeout,
                decisions=DecisionCache(settings.authz_cache_ttl, settings.cache_max_entries),
            )
        registry = RegistryService(db, endpoint_allowlist=settings.endpoint_allowlist)
        return cls(
            settings=settings,
            db=db,
            http=http,
            tokens=tokens,
            authorizer=authorizer,
            registry=registry,
            dev=dev,
        )

    async def aclose(self) -> None:
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while shutting down")
        await self.http.aclose()
        await self.db.dispose()
