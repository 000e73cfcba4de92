"""The one entry point the API layer uses to sign: cached signers per bucket and credential set."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiobotocore.session import AioSession

from app.cache import AsyncCache, CacheStats
from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput
from app.netguard import NetGuard
from app.registry.records import BucketRecord, Op, Provider
from app.storage.base import (
    HTTP_METHOD_FOR_OP,
    BucketSigner,
    PresignedRequest,
    SignerFactory,
    utcnow,
)
from app.storage.credentials import SecretSource
from app.storage.gcs.downscope import DownscopedToken, GcsTokenVendor
from app.storage.gcs.signer import GcsSignerFactory
from app.storage.s3 import S3BucketSigner, S3SignerFactory, signing_source_identity
from app.storage.session_policy import CredentialOp
from app.storage.sts import StsSessions
from app.storage.sts_clients import StsClients
from app.storage.unsigned import REQUEST_ID_PARAM, audit_text, unsigned_url, validated_audit
from app.storage.vending import (
    MIN_DURATION,
    CredentialVendor,
    SessionUser,
    VendedCredentials,
)

log = logging.getLogger(__name__)

SignerKey = tuple[uuid.UUID, tuple[Hashable, ...]]

# One ListObjectsV2 page and one DeleteObjects call: a prefix delete is all or nothing.
MAX_PREFIX_DELETE = 1000


@dataclass(frozen=True, slots=True)
class StorageStats:
    signers_built: int
    signers_live: int
    assume_count: int
    cache: CacheStats


class StorageService:
    """Hands out a ``BucketSigner`` per bucket, rebuilt when its credentials change or run short.

    Signers are cached per ``(bucket id, credential generation)``: an admin change of the
    secret reference, version, role or endpoint changes the generation, so the next request
    gets a new signer on every replica without waiting for a TTL.
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretSource,
        *,
        clock: Callable[[], datetime] | None = None,
        session: AioSession | None = None,
        sts: StsSessions | None = None,
        factories: Mapping[Provider, SignerFactory] | None = None,
        max_attempts: int = 3,
        observe: Callable[[str, float, bool], None] | None = None,
        netguard: NetGuard | None = None,
        sts_clients: StsClients | None = None,
    ) -> None:
        self._settings = settings
        netguard = netguard or NetGuard(settings.endpoint_allowlist)
        self._now = clock or utcnow
        session = session or AioSession()
        self.sts = sts or StsSessions(
            settings,
            session=session,
            clock=self._now,
            max_attempts=max_attempts,
            observe=observe,
            netguard=netguard.trusting(settings.sts_endpoint_url),
        )
        if factories is None:
            s3 = S3SignerFactory(
                settings,
                secrets,
                self.sts,
                session=session,
                clock=self._now,
                max_attempts=max_attempts,
                netguard=netguard,
            )
            defaults: dict[Provider, SignerFactory] = {
                provider: s3 for provider in Provider if provider.speaks_s3
            }
            defaults[Provider.GCP] = GcsSignerFactory(
                settings,
                secrets,
                gcs_endpoint=settings.gcs_endpoint,
                billing_project=settings.gcp_billing_project,
                clock=self._now,
                max_attempts=max_attempts,
                netguard=netguard.trusting(
                    settings.gcs_endpoint, settings.gcp_iam_credentials_endpoint
                ),
            )
            factories = defaults
        self._factories = dict(factories)
        # The container owns a shared pool and closes it; one built here is closed here.
        self._owns_sts_clients = sts_clients is None
        if sts_clients is None:
            sts_clients = StsClients(
                session,
                netguard,
                trusted_endpoint=settings.sts_endpoint_url,
                max_attempts=max_attempts,
            )
        self.sts_clients = sts_clients
        self.vendor = CredentialVendor(settings, secrets, clients=self.sts_clients, observe=observe)
        gcs = self._factories.get(Provider.GCP)
        self.gcs_vendor = (
            GcsTokenVendor(
                settings,
                secrets,
                apis=gcs.apis,
                pod_tokens=gcs.pod_tokens,
                netguard=netguard,
                clock=self._now,
                observe=observe,
            )
            if isinstance(gcs, GcsSignerFactory)
            else None
        )
        # Signer lifetimes follow credential expiry, a wall-clock instant.
        epoch = self._epoch_seconds
        self._signers: AsyncCache[SignerKey, BucketSigner] = AsyncCache(
            "signers", ttl=0, max_entries=settings.cache_max_entries, clock=epoch
        )
        # Never stores (ttl 0): makes callers that found one signer too short-lived share a rebuild.
        self._rebuilds: AsyncCache[tuple[SignerKey, datetime | None], BucketSigner] = AsyncCache(
            "signer_rebuilds", ttl=0, clock=epoch
        )
        # The signer each bucket currently uses, so a replaced one can release its client.
        self._live: dict[uuid.UUID, tuple[SignerKey, BucketSigner]] = {}
        self._retired: list[BucketSigner] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._signers_built = 0

    def _epoch_seconds(self) -> float:
        return self._now().timestamp()

    @property
    def signer_cache(self) -> AsyncCache[SignerKey, BucketSigner]:
        """The signer cache, for metrics; read its ``stats``, do not write to it."""
        return self._signers

    @property
    def stats(self) -> StorageStats:
        return StorageStats(
            signers_built=self._signers_built,
            signers_live=len(self._live),
            assume_count=self.sts.assume_count,
            cache=self._signers.stats,
        )

    def signing_source_identity(self, bucket: BucketRecord) -> str | None:
        """The SourceIdentity the bucket's signing session carries, if any."""
        return signing_source_identity(bucket, self._settings)

    def clamp_expires_in(self, requested: int | None) -> int:
        """The URL lifetime to use: the default when none is asked, never above the maximum."""
        maximum = self._settings.max_presigned_url_ttl
        if requested is None:
            requested = self._settings.default_presigned_url_ttl
        return max(1, min(requested, maximum))

    async def signer_for(self, bucket: BucketRecord, *, min_lifetime: int) -> BucketSigner:
        """A signer for ``bucket`` whose credentials cover ``min_lifetime`` seconds if they can.

        When even fresh credentials are shorter-lived, the signer shortens the URLs it signs
        (``PresignedRequest.expires_at`` tells the truth).
        """
        factory = self._factory_for(bucket)
        key: SignerKey = (bucket.id, bucket.credential_generation())
        signer = await self._signers.get(
            key, lambda: self._build(factory, bucket, key, min_lifetime), ttl=factory.ttl
        )
        if factory.fresh_enough(signer, bucket, min_lifetime):
            return signer
        fresh = await self._rebuilds.get(
            (key, signer.credentials_expire_at),
            lambda: self._build(factory, bucket, key, min_lifetime),
        )
        if fresh is not signer:
            self._signers.set(key, fresh, ttl=factory.ttl)
        return fresh

    async def presign(
        self,
        bucket: BucketRecord,
        key: str,
        op: Op,
        expires_in: int | None = None,
        *,
        params: Mapping[str, str] | None = None,
        resumable: bool = False,
        audit: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> PresignedRequest:
        """A URL for ``op`` on ``key``; authorization and the key rules are the caller's
        business (``AccessService`` checks both, once per request).

        ``resumable`` signs the POST that starts a GCS resumable upload (write only).
        Requester-pays S3 buckets get ``x-amz-request-payer=requester`` signed in.
        ``audit`` (``user_id``, ``username``, ``client_id``) is signed into S3 GET URLs, as
        Fence does, so the store's access logs name who a download was for; uploads, other
        methods and gcp URLs carry none. ``request_id`` is signed in beside them, as
        ``request_id``, so a store's access-log line joins the registry's decision line.
        """
        method = HTTP_METHOD_FOR_OP.get(op)
        if method is None:
            raise InvalidInput(f"operation {op} cannot be presigned; use the multipart calls")
        if resumable:
            if bucket.provider is not Provider.GCP or op is not Op.WRITE:
                raise InvalidInput("resumable uploads are for write on gcp buckets only")
            method = "POST"
        attribution = dict(validated_audit(audit)) if audit else {}
        if request_id:
            attribution[REQUEST_ID_PARAM] = audit_text(request_id)
        lifetime = self.clamp_expires_in(expires_in)
        signer = await self.signer_for(bucket, min_lifetime=lifetime)
        extra = dict(params or {})
        if bucket.requester_pays and bucket.provider.speaks_s3:
            extra["x-amz-request-payer"] = "requester"
        if method == "GET" and bucket.provider.speaks_s3:
            extra.update(attribution)
        return await self.sign_with(signer, key, method, lifetime, params=extra or None)

    def shortest_credential_duration(self, bucket: BucketRecord) -> int:
        """The shortest ``duration`` ``vend_credentials`` accepts for ``bucket``."""
        if bucket.provider is Provider.GCP:
            return GcsTokenVendor.shortest_duration(bucket, MIN_DURATION)
        return MIN_DURATION

    async def vend_credentials(
        self,
        bucket: BucketRecord,
        prefix: str,
        ops: tuple[CredentialOp, ...],
        duration: int | None,
        user: SessionUser,
    ) -> VendedCredentials | DownscopedToken:
        """A new STS session (S3) or downscoped token (gcp) scoped to ``ops`` under
        ``prefix``; authorization is the caller's business (``AccessService.vend_credentials``)."""
        lifetime = self.vendor.duration_for(bucket, duration)
        if bucket.provider is Provider.GCP:
            if self.gcs_vendor is None:
                raise DependencyUnavailable("storage", "gcp token vending is not available")
            return await self.gcs_vendor.vend(bucket, prefix, ops, lifetime)
        return await self.vendor.vend(bucket, prefix, ops, lifetime, user)

    def unsigned(self, bucket: BucketRecord, key: str) -> PresignedRequest:
        """The plain GET URL of ``key``, for a public bucket: no credentials are looked up."""
        return PresignedRequest(url=unsigned_url(bucket, key), method="GET", expires_at=None)

    async def delete_objects(
        self, bucket: BucketRecord, *, key: str | None = None, prefix: str | None = None
    ) -> list[str]:
        """Delete ``key``, or every object under ``prefix`` (at most ``MAX_PREFIX_DELETE``);
        returns the keys deleted. A prefix holding more deletes nothing (``InvalidInput``)."""
        if bucket.provider is Provider.GCP:
            raise InvalidInput(
                "server-side delete is not available for gcp buckets; presign a delete per key"
            )
        signer = await self.signer_for(bucket, min_lifetime=1)
        if not isinstance(signer, S3BucketSigner):
            raise DependencyUnavailable("storage", f"{bucket.name} has no S3 signer")
        if key is not None:
            return [key] if await signer.delete_object(key) else []
        if prefix is None:
            raise InvalidInput("give a key or a prefix")
        keys = await signer.list_keys(prefix, limit=MAX_PREFIX_DELETE)
        if keys is None:
            raise InvalidInput(
                f"more than {MAX_PREFIX_DELETE} objects under this prefix; nothing was deleted."
                " Delete narrower prefixes"
            )
        await signer.delete_keys(keys)
        return keys

    async def presign_upload_part(
        self,
        bucket: BucketRecord,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int | None = None,
    ) -> PresignedRequest:
        lifetime = self.clamp_expires_in(expires_in)
        signer = await self.signer_for(bucket, min_lifetime=lifetime)
        return signer.presign_upload_part(key, upload_id, part_number, lifetime)

    async def presign_upload_parts(
        self,
        bucket: BucketRecord,
        key: str,
        upload_id: str,
        part_numbers: Sequence[int],
        expires_in: int | None = None,
    ) -> list[PresignedRequest]:
        """One URL per part, all from one signer: the signer is looked up once per call."""
        lifetime = self.clamp_expires_in(expires_in)
        signer = await self.signer_for(bucket, min_lifetime=lifetime)
        return [
            signer.presign_upload_part(key, upload_id, number, lifetime) for number in part_numbers
        ]

    async def sign_with(
        self,
        signer: BucketSigner,
        key: str,
        method: str,
        expires_in: int,
        *,
        params: Mapping[str, str] | None = None,
    ) -> PresignedRequest:
        """``signer.presign``, or ``signer.apresign`` when it has one: signers whose signature
        needs I/O (gcp under Workload Identity signs through IAM signBlob) offer it."""
        apresign = getattr(signer, "apresign", None)
        if apresign is not None:
            signed: PresignedRequest = await apresign(key, method, expires_in, params=params)
            return signed
        return signer.presign(key, method, expires_in, params=params)

    def invalidate_bucket(self, bucket_id: uuid.UUID) -> None:
        """Forget ``bucket_id``'s signers (its credentials changed or it was suspended)."""
        self._signers.invalidate_where(lambda key: key[0] == bucket_id)
        live = self._live.pop(bucket_id, None)
        if live is not None:
            self._retire(live[1])

    async def aclose(self) -> None:
        signers = [signer for _, signer in self._live.values()] + self._retired
        self._live.clear()
        self._retired.clear()
        self._signers.clear()
        await asyncio.gather(*(signer.aclose() for signer in signers), *self._closing)
        for factory in {id(factory): factory for factory in self._factories.values()}.values():
            await factory.aclose()
        await self.sts.aclose()
        if self.gcs_vendor is not None:
            await self.gcs_vendor.aclose()
        if self._owns_sts_clients:
            await self.sts_clients.aclose()

    def _factory_for(self, bucket: BucketRecord) -> SignerFactory:
        factory = self._factories.get(bucket.provider)
        if factory is None:
            raise DependencyUnavailable(
                "storage", f"signing for provider {bucket.provider} is not available"
            )
        return factory

    async def _build(
        self, factory: SignerFactory, bucket: BucketRecord, key: SignerKey, min_lifetime: int
    ) -> BucketSigner:
        live = self._live.get(bucket.id)
        previous = live[1] if live is not None and live[0] == key else None
        signer = await factory.build(bucket, min_lifetime=min_lifetime, previous=previous)
        if signer is previous:
            return signer
        self._signers_built += 1
        self._live[bucket.id] = (key, signer)
        if live is not None:
            self._retire(live[1])
        log.info(
            "signer built",
            extra={
                "bucket": bucket.name,
                "access_key_id": signer.access_key_id,
                "credentials_expire_at": signer.credentials_expire_at,
            },
        )
        return signer

    def _retire(self, signer: BucketSigner) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(signer)
            return
        task = loop.create_task(signer.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
