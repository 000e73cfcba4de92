"""The data path: who may presign what (docs/authorization.md), and the signing calls behind it.

Each decision is logged as one structured line (user, bucket, key, op, allowed or denied and
why, request id) — the commons' centralized access audit. Credentials never appear in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.access.delegation import DEFAULT_METHOD, ROOT_RESOURCE, Delegation, covers, uncovered
from app.access.directory import BucketDirectory
from app.authz.arborist import Authorizer
from app.authz.principals import Principal, PrincipalKind
from app.authz.tokens import Identity
from app.errors import (
    AccessDenied,
    BillingProjectRefused,
    BucketSuspended,
    CredentialsNotOffered,
    DependencyUnavailable,
    InvalidInput,
    RegistryError,
    SecretNotFound,
    SecretUnavailable,
    UnsignedRefused,
)
from app.logs import annotate_request, request_id_var
from app.registry.keys import validate_key, validate_prefix
from app.registry.records import (
    AuthMode,
    BucketRecord,
    BucketStatus,
    Op,
    Provider,
    secret_fingerprint,
)
from app.secrets.base import SCHEMES
from app.storage.base import PresignedRequest
from app.storage.gcs.downscope import DownscopedToken
from app.storage.service import StorageService
from app.storage.session_policy import CredentialOp, scope_problem
from app.storage.unsigned import audit_text
from app.storage.vending import SessionUser, VendedCredentials

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

# What each credential operation is authorized as: a credential that can write can also run
# multipart uploads (IAM has one action for both), so it needs every binding op they need.
CREDENTIAL_AUTHORIZED_AS: Mapping[CredentialOp, tuple[Op, ...]] = {
    CredentialOp.READ: (Op.READ,),
    CredentialOp.LIST: (Op.READ,),
    CredentialOp.WRITE: (Op.WRITE, Op.MULTIPART),
    CredentialOp.DELETE: (Op.DELETE,),
}


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
        return await self._answer(
            (identity.token_hash, method, resource),
            lambda: authorizer.authorize(identity, FENCE_SERVICE, method, resource),
        )

    async def ask_all(
        self,
        authorizer: Authorizer,
        principal: Principal,
        methods: tuple[str, ...],
        resources: tuple[str, ...],
    ) -> bool:
        return await self._answer(
            (principal.cache_key, ",".join(methods), "\n".join(resources)),
            lambda: authorizer.authorize_all(principal, FENCE_SERVICE, methods, resources),
        )

    async def _answer(
        self, question: tuple[str, str, str], ask: Callable[[], Awaitable[bool]]
    ) -> bool:
        answer = self.answers.get(question)
        if answer is None:
            try:
                answer = await ask()
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
        default_billing_project: str | None = None,
    ) -> None:
        self.directory = directory
        self.authorizer = authorizer
        self.storage = storage
        self._count = count
        self.default_billing_project = default_billing_project

    async def authorize(
        self,
        identity: Requester,
        bucket_name: str,
        key: str,
        op: Op,
        *,
        action: str,
        memo: AuthorizationMemo | None = None,
        own_line: bool | None = None,
        is_prefix: bool = False,
        whole_bucket: bool = False,
    ) -> Grant:
        """The bucket and the resource path that grants ``op`` on ``key``, or an error.

        The one per-request decision every data-path endpoint (single, batch, delete) goes
        through. Fails closed: no matching binding, a suspended bucket, an upload to a bucket
        that takes none, a denial, or an Arborist that cannot answer all refuse. Every outcome
        is logged. ``is_prefix``: ``key`` is a prefix (ending in ``/``) covering many keys;
        ``whole_bucket`` lets that prefix be empty. ``own_line`` (default: whether a memo is
        given, i.e. a batch) logs the decision on its own line instead of the request's.
        """
        if own_line is None:
            own_line = memo is not None
        bucket: BucketRecord | None = None
        try:
            if is_prefix:
                if key or not whole_bucket:
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
                own_line=own_line,
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
            own_line=own_line,
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
            if bucket.status is BucketStatus.PENDING:
                raise BucketSuspended(
                    f"bucket {bucket.name!r} is pending: it serves nothing until it validates"
                )
            raise BucketSuspended(f"bucket {bucket.name!r} is {bucket.status.value}")
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
        # One memo for the request: the unsigned check below may ask what authorize asked.
        asked = memo if memo is not None else AuthorizationMemo()
        grant = await self.authorize(
            identity, bucket, key, op, action="presign", memo=asked, own_line=memo is not None
        )
        record = grant.bucket
        if user_project is not None:
            self._check_billing_project(record, user_project)
        keyless_public = op is Op.READ and record.public and not record.has_signing_identity
        if unsigned or keyless_public:
            if user_project is not None:
                raise InvalidInput("user_project needs a signed URL; omit unsigned")
            if not await self.may_read_unsigned(grant, identity, asked):
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
        request_id = None
        if op is Op.READ and names_user_in_urls(record):
            audit, request_id = _url_attribution(identity, audit)
        with self._sealed(record):
            return await self.storage.presign(
                record,
                key,
                op,
                expires_in,
                params=params,
                resumable=resumable,
                audit=audit,
                request_id=request_id,
            )

    def _check_billing_project(self, record: BucketRecord, user_project: str) -> None:
        """A caller may bill only a project the bucket lists, or the configured default: the
        URL is signed by the registry's account, which may be allowed to bill many more."""
        if record.provider is not Provider.GCP:
            raise InvalidInput("user_project applies to gcp buckets only")
        if user_project in record.billing_projects or user_project == self.default_billing_project:
            return
        allowed = sorted({*record.billing_projects, *filter(None, [self.default_billing_project])})
        raise BillingProjectRefused(
            f"user_project {user_project!r} may not be billed for bucket {record.name!r};"
            + (f" allowed: {', '.join(allowed)}" if allowed else " no project may be named")
            + " (an administrator sets the bucket's billing_projects)"
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

    async def vend_credentials(
        self,
        identity: Requester,
        bucket: str,
        prefix: str,
        ops: Sequence[CredentialOp],
        duration: int | None,
    ) -> VendedCredentials | DownscopedToken:
        """Temporary keys (S3) or a downscoped token (gcp) for ``ops`` under ``prefix``, once
        ``identity`` is authorized for every one of them exactly as a presign on the prefix
        would be (an empty prefix needs a binding on the whole bucket). Each decision is logged
        on its own line, and what was issued on one more, by access key id or by service
        account and expiry; the secret parts are never logged."""
        wanted = tuple(dict.fromkeys(ops))
        if not wanted:
            raise InvalidInput("ops: at least one of read, write, delete, list")
        if prefix:
            problem = scope_problem(prefix)
            if problem is not None:
                raise InvalidInput(f"prefix {problem}")
        memo = AuthorizationMemo()
        grant: Grant | None = None
        needs = dict.fromkeys(need for op in wanted for need in CREDENTIAL_AUTHORIZED_AS[op])
        for need in needs:
            grant = await self.authorize(
                identity,
                bucket,
                prefix,
                need,
                action="credentials",
                memo=memo,
                is_prefix=True,
                whole_bucket=True,
            )
        assert grant is not None
        record = grant.bucket
        if not record.credential_vending:
            raise CredentialsNotOffered(
                f"bucket {record.name!r} does not vend temporary credentials (it is not enabled,"
                " or its store has no STS to scope them); use /presign for its objects"
            )
        with self._sealed(record):
            vended = await self.storage.vend_credentials(
                record, prefix, wanted, duration, _session_user(identity)
            )
        issued: dict[str, str]
        if isinstance(vended, DownscopedToken):
            issued = {"provider": "gcp", "service_account": vended.service_account}
        else:
            issued = {
                "access_key_id": vended.access_key_id,
                "source_identity": vended.source_identity,
                "session_name": vended.session_name,
            }
        decisions_log.info(
            "credentials vended",
            extra={
                "user": identity.actor,
                "bucket": record.name,
                "key": prefix,
                "ops": [op.value for op in wanted],
                "action": "credentials",
                "decision": "allowed",
                "reason": f"granted on {grant.resource_path}",
                **issued,
                "expiration": vended.expiration.isoformat(),
            },
        )
        return vended

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


def names_user_in_urls(record: BucketRecord) -> bool:
    """Whether the bucket's download URLs name the user: role buckets with vending on, whose
    signing session carries the registry's SourceIdentity (so CloudTrail names the registry,
    and the URL, in the store's access log, names the user)."""
    return (
        record.credential_vending
        and record.auth_mode is AuthMode.ROLE
        and record.provider.speaks_s3
    )


def _url_attribution(
    requester: Requester, audit: Mapping[str, str] | None
) -> tuple[dict[str, str], str | None]:
    """The audit parameters a URL carries (what a trusted caller sent wins: it is what Fence
    would sign) and the request id signed beside them."""
    user = _session_user(requester)
    named = {
        "username": user.name,
        "user_id": user.user_id,
        "client_id": user.client_id,
    }
    derived = {name: audit_text(value) for name, value in named.items() if value}
    return {**derived, **(audit or {})}, user.request_id


def _session_user(requester: Requester) -> SessionUser:
    """Whom a vended session names: the user, and the trusted caller that relayed them."""
    request_id = request_id_var.get()
    if isinstance(requester, Identity):
        return SessionUser(
            name=requester.actor,
            user_id=requester.subject,
            client_id=requester.client_id,
            request_id=request_id,
        )
    principal = requester.principal
    audit = requester.audit or {}
    if principal.kind is PrincipalKind.ANONYMOUS:
        name = "anonymous"
    elif principal.kind is PrincipalKind.USER:
        name = principal.value or "unknown"
    else:
        # A token principal's value is the token itself: only its user name may be shown.
        name = principal.username or "unknown"
    return SessionUser(
        name=name,
        user_id=audit.get("user_id"),
        client_id=audit.get("client_id"),
        via=requester.caller.subject,
        request_id=request_id,
    )
