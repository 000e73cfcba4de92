"""The service's long-lived parts, created once per app by the lifespan and closed with it."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiobotocore.session import AioSession

from app.access.directory import BucketDirectory
from app.access.service import AccessService
from app.authz.arborist import ArboristAuthorizer, Authorizer, DecisionCache, LocalPolicyAuthorizer
from app.authz.callers import Authenticator, ServiceTokenVerifier
from app.authz.policy import PolicyDocument
from app.authz.tokens import HttpJwks, StaticJwks, TokenVerifier
from app.cache import AsyncCache
from app.config import Settings
from app.db import Database
from app.dev import DEV_ISSUER, DevMode, dev_jwks
from app.fence_config.source import FenceConfigSecrets, FenceConfigSource
from app.health.probe import BucketProbe
from app.health.selfservice import SelfService
from app.metrics import Metrics
from app.netguard import NetGuard, guarded_transport
from app.registry.notify import NotifyListener
from app.registry.service import BucketChange, RegistryService
from app.secrets.owned import OwnedSecrets
from app.secrets.store import SecretStore
from app.storage.service import StorageService
from app.storage.sts_clients import StsClients

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    http: httpx.AsyncClient
    tokens: TokenVerifier
    authenticator: Authenticator
    authorizer: Authorizer
    registry: RegistryService
    secrets: SecretStore
    storage: StorageService
    sts_clients: StsClients
    directory: BucketDirectory
    access: AccessService
    probe: BucketProbe
    metrics: Metrics
    netguard: NetGuard
    selfservice: SelfService
    listener: NotifyListener | None = None
    dev: DevMode | None = None
    # Its own client when the service token issuer's keys need a CA of their own.
    service_http: httpx.AsyncClient | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        metrics: Metrics,
        dev: DevMode | None = None,
        listen: bool = True,
    ) -> Services:
        """Build every long-lived part; ``listen=False`` for one-shot commands that need no
        cross-replica invalidation."""
        db = Database(settings, observe=metrics.observe_dependency)
        # One pooled client for Arborist and Fence's JWKS; limits sit above the concurrency a
        # replica serves so requests never queue for a connection.
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
            timeout=httpx.Timeout(settings.arborist_timeout),
        )
        service_tokens: ServiceTokenVerifier | None = None
        service_http: httpx.AsyncClient | None = None
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
                jwks,
                issuer=settings.user_api,
                audience=settings.token_audience,
                max_entries=settings.cache_max_entries,
            )
            if settings.service_token_issuer and settings.service_token_jwks_url:
                if settings.service_token_ca_file is not None:
                    service_http = httpx.AsyncClient(
                        verify=trusting(settings.service_token_ca_file),
                        timeout=httpx.Timeout(5.0),
                    )
                service_tokens = ServiceTokenVerifier(
                    HttpJwks(
                        settings.service_token_jwks_url,
                        service_http or http,
                        ttl=settings.jwks_cache_ttl,
                        dependency="service token issuer",
                        name="service_jwks",
                    ),
                    issuer=settings.service_token_issuer,
                    audience=settings.service_token_audience,
                    trusted=settings.trusted_callers,
                    max_entries=settings.cache_max_entries,
                )
            authorizer = ArboristAuthorizer(
                settings.arborist_url,
                http,
                timeout=settings.arborist_timeout,
                decisions=DecisionCache(settings.authz_cache_ttl, settings.cache_max_entries),
                observe=metrics.observe_dependency,
            )
        secrets = SecretStore(settings, observe=metrics.observe_dependency)
        netguard = NetGuard(settings.endpoint_allowlist)
        registry = RegistryService(
            db,
            endpoint_allowlist=settings.endpoint_allowlist,
            netguard=netguard,
            check_secret_ref=secrets.check,
        )
        # Served only while the registry holds no bucket (docs/migration.md); a malformed file
        # stops startup.
        fallback = (
            FenceConfigSource.load(
                settings.fence_config, endpoint_allowlist=settings.endpoint_allowlist
            )
            if settings.fence_config is not None
            else None
        )
        # One STS client per endpoint, region and signing identity, reused by every vend.
        sts_clients = StsClients(AioSession(), netguard, trusted_endpoint=settings.sts_endpoint_url)
        storage = StorageService(
            settings,
            FenceConfigSecrets(secrets, fallback) if fallback is not None else secrets,
            observe=metrics.observe_dependency,
            netguard=netguard,
            sts_clients=sts_clients,
        )
        directory = BucketDirectory(
            registry,
            ttl=settings.bucket_cache_ttl,
            max_entries=settings.cache_max_entries,
            fallback=fallback,
        )
        # The probe sends requests to admin-chosen endpoints: its own client, guarded.
        probe = BucketProbe(
            secrets,
            storage,
            httpx.AsyncClient(transport=guarded_transport(netguard), trust_env=False),
        )
        services = cls(
            settings=settings,
            db=db,
            http=http,
            tokens=tokens,
            authenticator=Authenticator(tokens, service_tokens),
            authorizer=authorizer,
            registry=registry,
            secrets=secrets,
            storage=storage,
            sts_clients=sts_clients,
            directory=directory,
            access=AccessService(
                directory,
                authorizer,
                storage,
                count=metrics.count_decision,
                default_billing_project=settings.gcp_billing_project,
            ),
            probe=probe,
            netguard=netguard,
            selfservice=SelfService(
                registry,
                probe,
                secrets,
                storage,
                OwnedSecrets(
                    settings.self_service_secrets,
                    default_backend=settings.secrets_backend,
                    file_dir=settings.file_secrets_dir,
                    gcp_project=settings.gcp_project,
                ),
                approval=settings.self_service_approval,
            ),
            metrics=metrics,
            service_http=service_http,
            dev=dev,
        )
        registry.listeners.append(services.forget)
        if listen and db.engine.dialect.name == "postgresql":
            # Other replicas' changes arrive by NOTIFY; on SQLite there is only this process.
            services.listener = NotifyListener(
                settings.database_url,
                services.forget,
                directory.forget_everything,
                origin=registry.origin,
            )
            services.listener.start()
        services._watch()
        return services

    def _watch(self) -> None:
        metrics = self.metrics
        caches: list[AsyncCache[Any, Any]] = [
            self.directory.buckets,
            self.directory.unknown,
            self.directory.names,
            self.directory.defaults,
            self.secrets.cache,
            self.tokens.cache,
            *([self.authenticator.services.cache] if self.authenticator.services else []),
            self.storage.sts.session_cache,
            self.storage.signer_cache,
        ]
        decisions = getattr(self.authorizer, "decisions", None)
        if decisions is not None:
            caches.append(decisions.cache)
        for cache in caches:
            metrics.watch_cache(cache)
        metrics.watch_counter(
            "secret_fetches_total",
            "Calls to secrets backends",
            lambda: {(scheme,): s.fetch_count for scheme, s in self.secrets.backend_stats.items()},
            ["backend"],
        )
        metrics.watch_counter(
            "secret_fetch_errors_total",
            "Failed calls to secrets backends",
            lambda: {
                (scheme, kind): getattr(s, kind)
                for scheme, s in self.secrets.backend_stats.items()
                for kind in ("not_found", "unavailable", "other_errors")
            },
            ["backend", "kind"],
        )
        metrics.watch_counter(
            "sts_assume_role_total",
            "STS AssumeRole calls",
            lambda: {(): self.storage.sts.assume_count},
        )
        metrics.watch_counter(
            "change_notifications_received_total",
            "Registry change notifications received from PostgreSQL",
            lambda: {(): self.listener.received if self.listener else 0},
        )

    def forget(self, change: BucketChange) -> None:
        """Drop every cached thing a registry change makes stale, on this replica."""
        previous = self.directory.forget(change)
        self.storage.invalidate_bucket(change.bucket_id)
        if previous is not None and previous.secret_ref:
            self.secrets.invalidate(previous.secret_ref)

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await self.storage.aclose()
        await self.sts_clients.aclose()
        await self.secrets.aclose()
        await self.http.aclose()
        if self.service_http is not None:
            await self.service_http.aclose()
        await self.probe.http.aclose()
        await self.db.dispose()


def trusting(ca_file: Path) -> ssl.SSLContext:
    """The public roots plus ``ca_file``; a missing or unreadable bundle stops the start."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"service_token_ca_file {str(ca_file)!r} is not a readable PEM bundle"
            f" ({type(exc).__name__})"
        ) from None
    return context
