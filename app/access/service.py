"""The data path: who may presign what (docs/authorization.md), and the signing calls behind it.

Each decision is logged as one structured line (user, bucket, key, op, allowed or denied and
why, request id) — the commons' centralized access audit. Credentials never appear in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.access.delegation import DEFAULT_METHOD, ROOT_RESOURCE, Delegation, covers, uncovered
from app.access.directory import BucketDirectory
from app.authz.arborist import Authorizer
from app.authz.principals import Principal
from app.authz.tokens import Identity
from app.errors import (
    AccessDenied,
    BucketSuspended,
    DependencyUnavailable,
    InvalidInput,
    RegistryError,
    SecretNotFound,
    SecretUnavailable,
    UnsignedRefused,
)
from app.logs import annotate_request
from app.registry.keys import validate_key, validate_prefix
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
ARBORIST_METHOD = DEFAULT_METHOD

# Who a data-path request is for: a user calling directly, or a trusted caller acting for one.
Requester = Identity | Delegation


@dataclass(frozen=True, slots=True)
class Grant:
    bucket: BucketRecord
    resource_path: str


@dataclass(frozen=True, slots=True)
class PresignItem:
    """One presign request, whatever carried it (``POST /presign`` or an item of a batch)."""

    bucket: str
    key: str
    op: Op
    expires_in: int | None = None
    user_project: str | None = None
    resumable: bool = False
    unsigned: bool = False
    audit: Mapping[str, str] | None = None


@dataclass(slots=True)
class AuthorizationMemo:
    """Arborist's answers within one batch: each (principal, method, resource) is asked once.

    The principal is part of the key, so one memo stays correct when a batch carries requests
    on behalf of several users. An outage is remembered too: the rest of the batch fails fast.
    Decisions taken with a memo are logged on lines of their own: the request's one
    access-log line holds a single decision.
    """

    answers: dict[tuple[str, str, str], bool | DependencyUnavailable] = field(default_factory=dict)

    async def ask(
        self, authorizer: Authorizer, identity: Identity, method: str, resource: str
    ) -> bool:
        question = (identity.token_hash, method, resource)
        answer = self.answers.get(question)
        if answer is None:
            try:
                answer = await authorizer.authorize(identity, FENCE_SERVICE, method, resource)
            except DependencyUnavailable as exc:
                answer = exc
            self.answers[question] = answer
        if isinstance(answer, DependencyUnavailable):
            raise answer
        return answer

    async def ask_all(
        self,
        authorizer: Authorizer,
        principal: Principal,
        methods: tuple[str, ...],
        resources: tuple[str, ...],
    ) -> bool:
        question = (principal.cache_key, ",".join(methods), "\n".join(resources))
        answer = self.answers.get(question)
        if answer is None:
            try:
                answer = await authorizer.authorize_all(
                    principal, FENCE_SERVICE, methods, resources
                )
            except DependencyUnavailable as exc:
                answer = exc
            self.answers[question] = answer
        if isinstance(answer, DependencyUnavailable):
            raise answer
        return answer


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
        self,
        identity: Requester,
        bucket_name: str,
        key: str,
        op: Op,
        *,
        action: str,
        memo: AuthorizationMemo | None = None,
        is_prefix: bool = False,
    ) -> Grant:
        """The bucket and the resource path that grants ``op`` on ``key``, or an error.

        The one per-request decision every data-path endpoint (single, batch, delete) goes
        through. Fails closed: no matching binding, a suspended bucket, an upload to a bucket
        that takes none, a denial, or an Arborist that cannot answer all refuse. Every outcome
        is logged. ``is_prefix``: ``key`` is a prefix (ending in ``/``) covering many keys.
        """
        bucket: BucketRecord | None = None
        try:
            if is_prefix:
                validate_prefix(key)
            else:
                validate_key(key)
            bucket = await self.directory.get(bucket_name)
            asked = memo or AuthorizationMemo()
            if isinstance(identity, Delegation):
                grant = await self._decide_delegated(identity, bucket, key, op, asked)
            else:
                grant = await self._decide(identity, bucket, key, op, asked)
        except RegistryError as exc:
            self._log(
                identity,
                bucket_name,
                key,
                op,
                action,
                allowed=False,
                reason=exc.message,
                own_line=memo is not None,
            )
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
            own_line=memo is not None,
        )
        return grant

    async def _decide(
        self,
        identity: Identity,
        bucket: BucketRecord,
        key: str,
        op: Op,
        memo: AuthorizationMemo,
    ) -> Grant:
        self._check_bucket(bucket, op)
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
                if await memo.ask(self.authorizer, identity, method, binding.resource_path):
                    return Grant(bucket, binding.resource_path)
            except DependencyUnavailable as exc:
                outage = exc
        if outage is not None:
            raise outage
        raise AccessDenied(
            f"{method} is not granted on any resource bound to this key of {bucket.name!r}"
        )

    @staticmethod
    def _check_bucket(bucket: BucketRecord, op: Op) -> None:
        if not bucket.is_active:
            raise BucketSuspended(f"bucket {bucket.name!r} is suspended")
        if op in (Op.WRITE, Op.MULTIPART) and not bucket.data_upload_allowed:
            # As Fence's ALLOWED_DATA_UPLOAD_BUCKETS: the bucket's own switch, above bindings.
            raise AccessDenied(f"bucket {bucket.name!r} does not accept uploads")

    async def _decide_delegated(
        self,
        delegation: Delegation,
        bucket: BucketRecord,
        key: str,
        op: Op,
        memo: AuthorizationMemo,
    ) -> Grant:
        self._check_bucket(bucket, op)
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
        if not await memo.ask_all(self.authorizer, delegation.principal, methods, delegation.authz):
            raise AccessDenied(
                f"{' and '.join(methods)} not granted on every resource of the record"
            )
        return Grant(bucket, ", ".join(delegation.authz))

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
        identity: Requester,
        bucket: str,
        key: str,
        op: Op,
        expires_in: int | None,
        *,
        user_project: str | None = None,
        resumable: bool = False,
        unsigned: bool = False,
        audit: Mapping[str, str] | None = None,
        memo: AuthorizationMemo | None = None,
    ) -> PresignedRequest:
        """A URL for ``op`` on ``key`` once ``identity`` is authorized.

        ``unsigned`` asks for the plain URL of a public object (read only). A read from a
        public bucket that names no signing identity (imported from ``cred: '*'``) is always
        answered unsigned: there is nothing to sign with, and guessing a region would sign
        for the wrong one. ``audit`` is signed into S3 GET URLs (trusted callers only).
        """
        if unsigned and op is not Op.READ:
            raise InvalidInput("unsigned URLs are for read only")
        grant = await self.authorize(identity, bucket, key, op, action="presign", memo=memo)
        record = grant.bucket
        if user_project is not None and record.provider is not Provider.GCP:
            raise InvalidInput("user_project applies to gcp buckets only")
        keyless_public = op is Op.READ and record.public and not record.has_signing_identity
        if unsigned or keyless_public:
            if user_project is not None:
                raise InvalidInput("user_project needs a signed URL; omit unsigned")
            if not await self.may_read_unsigned(grant, identity, memo or AuthorizationMemo()):
                refused = UnsignedRefused(
                    f"bucket {record.name!r} is not public: unsigned URLs are refused"
                )
                self._log(
                    identity,
                    bucket,
                    key,
                    op,
                    "presign",
                    allowed=False,
                    reason=refused.message,
                    own_line=memo is not None,
                )
                raise refused
            return self.storage.unsigned(record, key)
        params = {"userProject": user_project} if user_project else None
        with self._sealed(record):
            return await self.storage.presign(
                record, key, op, expires_in, params=params, resumable=resumable, audit=audit
            )

    async def may_read_unsigned(
        self, grant: Grant, requester: Requester, memo: AuthorizationMemo
    ) -> bool:
        """Whether an unsigned URL may be handed out: the bucket is public, or (a trusted
        caller's record) Arborist's anonymous policies grant read-storage on every path of the
        record's authz — a public record, as Fence's ``no_force_sign`` serves it."""
        if grant.bucket.public:
            return True
        if isinstance(requester, Delegation) and requester.authz:
            return await memo.ask_all(
                self.authorizer, Principal.anonymous(), ("read-storage",), requester.authz
            )
        return False

    async def presign_batch(
        self, items: Sequence[tuple[Requester, PresignItem] | RegistryError]
    ) -> list[PresignedRequest | RegistryError]:
        """Each item's URL or its error, in order. An item that failed to parse arrives as
        its error and stays one. Arborist is asked once per distinct question in the batch."""
        memo = AuthorizationMemo()
        results: list[PresignedRequest | RegistryError] = []
        for item in items:
            if isinstance(item, RegistryError):
                results.append(item)
                continue
            requester, request = item
            try:
                results.append(
                    await self.presign(
                        requester,
                        request.bucket,
                        request.key,
                        request.op,
                        request.expires_in,
                        user_project=request.user_project,
                        resumable=request.resumable,
                        unsigned=request.unsigned,
                        audit=request.audit,
                        memo=memo,
                    )
                )
            except RegistryError as exc:
                results.append(exc)
        return results

    async def delete_objects(
        self, identity: Requester, bucket: str, *, key: str | None = None, prefix: str | None = None
    ) -> int:
        """Delete ``key`` or everything under ``prefix`` in the store; the number deleted.

        Authorized exactly as a presigned delete (bindings, then Arborist ``delete``) on the
        key or the prefix; each deleted key is logged as its own decision line.
        """
        if (key is None) == (prefix is None):
            raise InvalidInput("give exactly one of key or prefix")
        target = key if key is not None else (prefix or "")
        grant = await self.authorize(
            identity, bucket, target, Op.DELETE, action="delete", is_prefix=prefix is not None
        )
        with self._sealed(grant.bucket):
            deleted = await self.storage.delete_objects(grant.bucket, key=key, prefix=prefix)
        for name in deleted:
            self._log(
                identity,
                bucket,
                name,
                Op.DELETE,
                "delete_object",
                allowed=True,
                reason=f"deleted under {grant.resource_path}",
                own_line=True,
            )
        return len(deleted)

    async def multipart_init(self, identity: Requester, bucket: str, key: str) -> str:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_init")
        with self._sealed(grant.bucket):
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
        with self._sealed(grant.bucket):
            return await self.storage.presign_upload_part(
                grant.bucket, key, upload_id, part_number, expires_in
            )

    async def multipart_presign_parts(
        self,
        identity: Requester,
        bucket: str,
        key: str,
        upload_id: str,
        part_numbers: Sequence[int],
        expires_in: int | None,
    ) -> list[PresignedRequest]:
        """A URL per part of one upload: one decision (and one log line) for all of them."""
        grant = await self.authorize(
            identity, bucket, key, Op.MULTIPART, action="multipart_presign"
        )
        annotate_request(parts=len(part_numbers))
        with self._sealed(grant.bucket):
            return await self.storage.presign_upload_parts(
                grant.bucket, key, upload_id, part_numbers, expires_in
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
        with self._sealed(grant.bucket):
            signer = await self.storage.signer_for(grant.bucket, min_lifetime=1)
            await signer.complete_multipart_upload(key, upload_id, sorted(parts))

    async def multipart_abort(
        self, identity: Requester, bucket: str, key: str, upload_id: str
    ) -> None:
        grant = await self.authorize(identity, bucket, key, Op.MULTIPART, action="multipart_abort")
        with self._sealed(grant.bucket):
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
        own_line: bool = False,
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
        # Inside an HTTP request a single decision rides on the request's one access-log line.
        if own_line or not annotate_request(**fields):
            decisions_log.info("access decision", extra=fields)
