"""The data path: who may presign what (SPEC §5), and the signing calls behind it.

Each decision is logged as one structured line (user, bucket, key, op, allowed or denied and
why, request id) — the commons' centralized access audit. Credentials never appear in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.access.directory import BucketDirectory
from app.authz.arborist import Authorizer
from app.authz.tokens import Identity
from app.errors import (
    AccessDenied,
    BucketSuspended,
    DependencyUnavailable,
    InvalidInput,
    RegistryError,
    SecretNotFound,
    SecretUnavailable,
)
from app.logs import annotate_request
from app.registry.keys import validate_key
from app.registry.records import BucketRecord, Op, Provider, secret_fingerprint
from app.secrets.base import SCHEMES
from app.storage.base import PresignedRequest
from app.storage.service import StorageService

log = logging.getLogger(__name__)
decisions_log = logging.getLogger("bucket_registry.decisions")


def _mentions(message: str, ref: str, bucket: str) -> bool:
    """Whether ``message`` quotes ``ref`` or a recognisable piece of it (a name, a path) other
    than what callers know anyway (the bucket's name, the backend's scheme)."""
    public = {bucket, *SCHEMES, "secret", "secrets", "secretsmanager"}
    pieces = [p for p in re.split(r"[:/#@?=]+", ref) if len(p) >= 4 and p not in public]
    return ref in message or any(piece in message for piece in pieces)


# The actions Fence checks today, so existing user.yaml policies keep working.
FENCE_SERVICE = "fence"
ARBORIST_METHOD = {
    Op.READ: "read-storage",
    Op.WRITE: "write-storage",
    Op.MULTIPART: "write-storage",
    Op.DELETE: "delete",
}


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
        self, identity: Identity, bucket_name: str, key: str, op: Op, *, action: str
    ) -> Grant:
        """The bucket and the resource path that grants ``op`` on ``key``, or an error.

        Fails closed: no matching binding, a suspended bucket, a denial, or an Arborist that
        cannot answer all refuse. Every outcome is logged.
        """
        bucket: BucketRecord | None = None
        try:
            validate_key(key)
            bucket = await self.directory.get(bucket_name)
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
        seen: set[str] = set()
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

    @contextmanager
    def _sealed(self, bucket: BucketRecord) -> Iterator[None]:
        """Errors behind an authorized data-path call, with the bucket's secret reference kept
        for admins and the log: a caller sees a fingerprint, never the ARN, path or name."""
        try:
            yield
        except RegistryError as exc:
            ref = bucket.secret_ref
            if not ref or not (
                isinstance(exc, SecretNotFound | SecretUnavailable)
                or getattr(exc, "dependency", None) == "secrets"
                or _mentions(exc.message, ref, bucket.name)
            ):
                raise
            log.warning(
                "bucket %s: its secret is not usable: %s",
                bucket.name,
                exc.message,
                extra={"bucket": bucket.name},
            )
            generic = (
                f"bucket {bucket.name!r} cannot be used now: its storage credentials are not"
                f" usable (secret {secret_fingerprint(ref)}); an administrator can check them"
                f" with POST /admin/buckets/{bucket.name}/validate"
            )
            exc.message, exc.args, exc.details = generic, (generic,), None
            raise exc from None

    async def presign(
        self,
        identity: Identity,
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
        with self._sealed(grant.bucket):
            return await self.storage.presign(
                grant.bucket, key, op, expires_in, params=params, resumable=resumable
            )

    async def multipart_init(self, identity: Identity, bucket: str, key: str) -> str:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_init")
        with self._sealed(grant.bucket):
            signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
            return await signer.create_multipart_upload(key)

    async def multipart_presign(
        self,
        identity: Identity,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int | None,
    ) -> PresignedRequest:
        grant = await self.authorize(
            identity, bucket, key, Op.MULTIPART, action="multipart_presign"
        )
        with self._sealed(grant.bucket):
            return await self.storage.presign_upload_part(
                grant.bucket, key, upload_id, part_number, expires_in
            )

    async def multipart_complete(
        self,
        identity: Identity,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
    ) -> None:
        grant = await self.authorize(
            identity, bucket, key, Op.MULTIPART, action="multipart_complete"
        )
        with self._sealed(grant.bucket):
            signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
            await signer.complete_multipart_upload(key, upload_id, sorted(parts))

    async def multipart_abort(
        self, identity: Identity, bucket: str, key: str, upload_id: str
    ) -> None:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_abort")
        with self._sealed(grant.bucket):
            signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
            await signer.abort_multipart_upload(key, upload_id)

    @staticmethod
    def _log(
        identity: Identity,
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
