"""The data path: who may presign what (docs/authorization.md), and the signing calls behind it.

Each decision is logged as one structured line (user, bucket, key, op, allowed or denied and
why, request id) — the commons' centralized access audit. Credentials never appear in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.access.delegation import DEFAULT_METHOD, ROOT_RESOURCE, Delegation, covers, uncovered
from app.access.directory import BucketDirectory
from app.authz.arborist import Authorizer
from app.authz.tokens import Identity
from app.errors import (
    AccessDenied,
    BucketSuspended,
    DependencyUnavailable,
    InvalidInput,
    RegistryError,
)
from app.logs import annotate_request
from app.registry.keys import validate_key
from app.registry.records import BucketRecord, Op, Provider
from app.storage.base import PresignedRequest
from app.storage.service import StorageService

decisions_log = logging.getLogger("bucket_registry.decisions")

# The actions Fence checks today, so existing user.yaml policies keep working.
FENCE_SERVICE = "fence"
ARBORIST_METHOD = DEFAULT_METHOD

# Who a data-path request is for: a user calling directly, or a trusted caller acting for one.
Requester = Identity | Delegation


@dataclass(frozen=True, slots=True)
class Grant:
    bucket: BucketRecord
    resource_path: str


class AccessService:
    def __init__(
        self,
        directory: BucketDirectory,
        authorizer: Authorizer,
        storage: StorageService,
        *,
        count: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.authorizer = authorizer
        self.storage = storage
        self._count = count

    async def authorize(
        self, identity: Requester, bucket_name: str, key: str, op: Op, *, action: str
    ) -> Grant:
        """The bucket and the resource path that grants ``op`` on ``key``, or an error.

        Fails closed: no matching binding, a suspended bucket, a denial, or an Arborist that
        cannot answer all refuse. Every outcome is logged.
        """
        bucket: BucketRecord | None = None
        try:
            validate_key(key)
            bucket = await self.directory.get(bucket_name)
            if isinstance(identity, Delegation):
                grant = await self._decide_delegated(identity, bucket, key, op)
            else:
                grant = await self._decide(identity, bucket, key, op)
        except RegistryError as exc:
            self._log(identity, bucket_name, key, op, action, allowed=False, reason=exc.message)
            if self._count is not None:
                provider = bucket.provider.value if bucket is not None else "unknown"
                self._count(provider, op.value, exc.code)
            raise
        if self._count is not None:
            self._count(grant.bucket.provider.value, op.value, "allowed")
        self._log(
            identity,
            bucket_name,
            key,
            op,
            action,
            allowed=True,
            reason=f"granted on {grant.resource_path}",
        )
        return grant

    async def _decide(self, identity: Identity, bucket: BucketRecord, key: str, op: Op) -> Grant:
        if not bucket.is_active:
            raise BucketSuspended(f"bucket {bucket.name!r} is suspended")
        bindings = bucket.bindings_for(key, op)
        if not bindings:
            raise AccessDenied(f"no binding on bucket {bucket.name!r} allows {op} on this key")
        method = ARBORIST_METHOD[op]
        outage: DependencyUnavailable | None = None
        # Arborist holds no resource at "/": a root binding serves trusted callers' records only.
        seen: set[str] = {ROOT_RESOURCE}
        for binding in bindings:
            if binding.resource_path in seen:
                continue
            seen.add(binding.resource_path)
            try:
                if await self.authorizer.authorize(
                    identity, FENCE_SERVICE, method, binding.resource_path
                ):
                    return Grant(bucket, binding.resource_path)
            except DependencyUnavailable as exc:
                outage = exc
        if outage is not None:
            raise outage
        raise AccessDenied(
            f"{method} is not granted on any resource bound to this key of {bucket.name!r}"
        )

    async def _decide_delegated(
        self, delegation: Delegation, bucket: BucketRecord, key: str, op: Op
    ) -> Grant:
        if not bucket.is_active:
            raise BucketSuspended(f"bucket {bucket.name!r} is suspended")
        bindings = bucket.bindings_for(key, op)
        if delegation.legacy is not None:
            needed = delegation.legacy.resource
            if not any(covers(binding.resource_path, needed) for binding in bindings):
                raise AccessDenied(
                    f"no binding on bucket {bucket.name!r} serves {op} on this key for"
                    f" {delegation.legacy.value}-rule records (it needs one covering {needed})"
                )
            return Grant(bucket, f"legacy rule {delegation.legacy.value}, decided by the caller")
        missing = uncovered(bindings, delegation.authz)
        if missing:
            raise AccessDenied(
                f"bucket {bucket.name!r} does not serve {op} on this key for"
                f" {', '.join(missing)}: no binding covers it"
            )
        methods = delegation.methods_for(op)
        if not await self.authorizer.authorize_all(
            delegation.principal, FENCE_SERVICE, methods, delegation.authz
        ):
            raise AccessDenied(
                f"{' and '.join(methods)} not granted on every resource of the record"
            )
        return Grant(bucket, ", ".join(delegation.authz))

    async def presign(
        self,
        identity: Requester,
        bucket: str,
        key: str,
        op: Op,
        expires_in: int | None,
        *,
        user_project: str | None = None,
        resumable: bool = False,
    ) -> PresignedRequest:
        grant = await self.authorize(identity, bucket, key, op, action="presign")
        if user_project is not None and grant.bucket.provider is not Provider.GCP:
            raise InvalidInput("user_project applies to gcp buckets only")
        params = {"userProject": user_project} if user_project else None
        return await self.storage.presign(
            grant.bucket, key, op, expires_in, params=params, resumable=resumable
        )

    async def multipart_init(self, identity: Requester, bucket: str, key: str) -> str:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_init")
        signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
        return await signer.create_multipart_upload(key)

    async def multipart_presign(
        self,
        identity: Requester,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int | None,
    ) -> PresignedRequest:
        grant = await self.authorize(
            identity, bucket, key, Op.MULTIPART, action="multipart_presign"
        )
        return await self.storage.presign_upload_part(
            grant.bucket, key, upload_id, part_number, expires_in
        )

    async def multipart_complete(
        self,
        identity: Requester,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
    ) -> None:
        grant = await self.authorize(
            identity, bucket, key, Op.MULTIPART, action="multipart_complete"
        )
        signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
        await signer.complete_multipart_upload(key, upload_id, sorted(parts))

    async def multipart_abort(
        self, identity: Requester, bucket: str, key: str, upload_id: str
    ) -> None:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_abort")
        signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
        await signer.abort_multipart_upload(key, upload_id)

    @staticmethod
    def _log(
        identity: Requester,
        bucket: str,
        key: str,
        op: Op,
        action: str,
        *,
        allowed: bool,
        reason: str,
    ) -> None:
        fields = {
            "user": identity.actor,
            "bucket": bucket,
            "key": key,
            "op": op.value,
            "action": action,
            "decision": "allowed" if allowed else "denied",
            "reason": reason,
        }
        # Inside an HTTP request the decision rides on the request's one access-log line.
        if not annotate_request(**fields):
            decisions_log.info("access decision", extra=fields)
