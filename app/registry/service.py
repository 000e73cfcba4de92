"""The admin side of the registry: queries, validated mutations and their audit trail.

Every mutation writes its ``bucket_audit`` row in the same transaction as the change, bumps the
bucket's ``version``, and announces the change (PostgreSQL ``NOTIFY`` inside the transaction, so
other replicas hear of it exactly when it commits; local listeners after the commit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import (
    BucketNotFound,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from app.registry.models import Bucket, BucketAudit, BucketPolicyBinding, BucketPrefix, utcnow
from app.registry.records import (
    BUCKET_FIELDS,
    AuthMode,
    BindingRecord,
    BucketRecord,
    BucketStatus,
    Op,
    Provider,
)
from app.registry.schemas import BindingCreate, BucketCreate, BucketUpdate
from app.registry.validation import (
    validate_allowed_ops,
    validate_bucket_spec,
    validate_resource_path,
)
from app.signing.keys import validate_prefix

NOTIFY_CHANNEL = "bucket_registry"

SPEC_FIELDS = BUCKET_FIELDS


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, for the audit trail."""

    name: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class BucketChange:
    bucket_id: uuid.UUID
    name: str
    action: str


@dataclass(slots=True)
class BucketFilter:
    status: BucketStatus | None = None
    owner_project: str | None = None
    provider: Provider | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Any]
    next_cursor: str | None


def _fingerprint(ref: str | None) -> str | None:
    """What the audit trail keeps of a secret reference: that it changed, not where it points."""
    if ref is None:
        return None
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()[:12]


def audit_view(values: dict[str, Any]) -> dict[str, Any]:
    view = {key: values[key] for key in SPEC_FIELDS if key in values}
    if "secret_ref" in view:
        view["secret_ref"] = _fingerprint(view["secret_ref"])
    for key, value in view.items():
        if hasattr(value, "value"):
            view[key] = value.value
    return view


def row_values(bucket: Bucket) -> dict[str, Any]:
    return {key: getattr(bucket, key) for key in SPEC_FIELDS}


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key: str, kind: type) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)[key]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidInput("cursor: not a cursor returned by this API") from None
    if not isinstance(value, kind):
        raise InvalidInput("cursor: not a cursor returned by this API")
    return value


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header asks for (None when absent or ``*``)."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not tag.isdigit():
        raise InvalidInput('If-Match: expected the ETag returned by GET, such as "3"')
    return int(tag)


def to_record(
    bucket: Bucket, bindings: Sequence[tuple[BucketPolicyBinding, str | None]]
) -> BucketRecord:
    return BucketRecord(
        id=bucket.id,
        name=bucket.name,
        provider=Provider(bucket.provider),
        region=bucket.region,
        endpoint=bucket.endpoint,
        auth_mode=AuthMode(bucket.auth_mode),
        role_arn=bucket.role_arn,
        external_id=bucket.external_id,
        secret_ref=bucket.secret_ref,
        secret_version=bucket.secret_version,
        owner_project=bucket.owner_project,
        labels=dict(bucket.labels or {}),
        status=BucketStatus(bucket.status),
        data_upload_allowed=bucket.data_upload_allowed,
        is_default_upload=bucket.is_default_upload,
        version=bucket.version,
        created_at=bucket.created_at,
        updated_at=bucket.updated_at,
        requester_pays=bucket.requester_pays,
        service_account=bucket.service_account,
        bindings=tuple(
            BindingRecord(
                id=binding.id,
                bucket_id=binding.bucket_id,
                prefix_id=binding.prefix_id,
                prefix=prefix or "",
                resource_path=binding.resource_path,
                allowed_ops=frozenset(Op(op) for op, on in binding.allowed_ops.items() if on),
            )
            for binding, prefix in bindings
        ),
    )


SecretRefCheck = Callable[[str, str | None], object]
ChangeListener = Callable[[BucketChange], Awaitable[None] | None]


class RegistryService:
    """Reads and writes bucket registrations; the only code that touches the bucket tables."""

    def __init__(
        self,
        db: Database,
        *,
        endpoint_allowlist: Sequence[str] = (),
        check_secret_ref: SecretRefCheck | None = None,
    ) -> None:
        self.db = db
        self.endpoint_allowlist = list(endpoint_allowlist)
        self._check_secret_ref = check_secret_ref
        self.listeners: list[ChangeListener] = []
        # Tags this replica's notifications, so it can skip its own echo (it has already
        # invalidated locally; a late echo would only evict freshly reloaded entries).
        self.origin = uuid.uuid4().hex

    # ----- reads -------------------------------------------------------------------------

    async def list_buckets(self, filters: BucketFilter, limit: int, cursor: str | None) -> Page:
        """A page of bucket rows (plain rows, not ORM objects: listing must stay cheap at
        10,000 buckets), ordered by name, with the cursor of the next page."""
        table = Bucket.__table__  # type: ignore[attr-defined]
        query = sa.select(*table.c).order_by(table.c.name).limit(limit + 1)
        if cursor:
            query = query.where(table.c.name > decode_cursor(cursor, "after", str))
        if filters.status is not None:
            query = query.where(table.c.status == filters.status.value)
        if filters.owner_project is not None:
            query = query.where(table.c.owner_project == filters.owner_project)
        if filters.provider is not None:
            query = query.where(table.c.provider == filters.provider.value)
        for key, value in filters.labels.items():
            query = query.where(table.c.labels[key].as_string() == value)
        async with self.db.transaction() as session:
            rows = list((await session.execute(query)).all())
        next_cursor = encode_cursor({"after": rows[limit - 1].name}) if len(rows) > limit else None
        return Page(rows[:limit], next_cursor)

    async def get_bucket(self, name: str) -> Bucket:
        async with self.db.transaction() as session:
            return await self._get(session, name)

    async def load_record(self, name: str) -> BucketRecord:
        """The bucket and its bindings (with their prefixes) in one query, as a snapshot."""
        query = (
            select(Bucket, BucketPolicyBinding, BucketPrefix.prefix)
            .outerjoin(BucketPolicyBinding, col(BucketPolicyBinding.bucket_id) == col(Bucket.id))
            .outerjoin(BucketPrefix, col(BucketPrefix.id) == col(BucketPolicyBinding.prefix_id))
            .where(col(Bucket.name) == name)
        )
        async with self.db.transaction() as session:
            rows = (await session.execute(query)).all()
        if not rows:
            raise BucketNotFound(f"bucket {name!r} is not registered")
        bucket = rows[0][0]
        bindings = [(binding, prefix) for _, binding, prefix in rows if binding is not None]
        return to_record(bucket, bindings)

    async def default_upload_bucket(self, owner_project: str | None) -> str | None:
        """Name of the default upload bucket for a project, else the global default."""
        query = (
            select(Bucket.name, Bucket.owner_project)
            .where(col(Bucket.is_default_upload).is_(True))
            .where(
                sa.or_(
                    col(Bucket.owner_project) == owner_project, col(Bucket.owner_project).is_(None)
                )
                if owner_project
                else col(Bucket.owner_project).is_(None)
            )
        )
        async with self.db.transaction() as session:
            rows = (await session.execute(query)).all()
        by_project = {project: name for name, project in rows}
        return (
            by_project.get(owner_project) if owner_project in by_project else by_project.get(None)
        )

    async def count_buckets(self) -> int:
        async with self.db.transaction() as session:
            return int(
                (await session.execute(sa.select(sa.func.count()).select_from(Bucket))).scalar_one()
            )

    async def list_prefixes(self, name: str) -> list[BucketPrefix]:
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            query = select(BucketPrefix).where(col(BucketPrefix.bucket_id) == bucket.id)
            return list((await session.execute(query.order_by(col(BucketPrefix.prefix)))).scalars())

    async def list_bindings(self, name: str) -> list[tuple[BucketPolicyBinding, str | None]]:
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            query = (
                select(BucketPolicyBinding, BucketPrefix.prefix)
                .outerjoin(BucketPrefix, col(BucketPrefix.id) == col(BucketPolicyBinding.prefix_id))
                .where(col(BucketPolicyBinding.bucket_id) == bucket.id)
                .order_by(col(BucketPolicyBinding.created_at), col(BucketPolicyBinding.id))
            )
            return [(binding, prefix) for binding, prefix in (await session.execute(query)).all()]

    async def audit(
        self,
        *,
        bucket_name: str | None = None,
        since: datetime | None = None,
        actor: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Audit rows, newest first."""
        query = select(BucketAudit).order_by(col(BucketAudit.id).desc()).limit(limit + 1)
        async with self.db.transaction() as session:
            if bucket_name is not None:
                bucket = await self._get(session, bucket_name)
                query = query.where(col(BucketAudit.bucket_id) == bucket.id)
            if cursor:
                query = query.where(col(BucketAudit.id) < decode_cursor(cursor, "before", int))
            if since is not None:
                query = query.where(col(BucketAudit.at) >= since)
            if actor is not None:
                query = query.where(col(BucketAudit.actor) == actor)
            rows = list((await session.execute(query)).scalars())
        next_cursor = encode_cursor({"before": rows[limit - 1].id}) if len(rows) > limit else None
        return Page(rows[:limit], next_cursor)

    # ----- mutations ---------------------------------------------------------------------

    async def create_bucket(self, data: BucketCreate, actor: Actor) -> Bucket:
        spec = self._validated(data.model_dump(mode="json"))
        bucket = Bucket(**spec)
        try:
            async with self.db.transaction() as session:
                session.add(bucket)
                await session.flush()
                await self._record(
                    session, bucket, actor, "create", None, audit_view(row_values(bucket))
                )
        except IntegrityError as exc:
            raise self._conflict(exc, spec) from None
        await self._announce(BucketChange(bucket.id, bucket.name, "create"))
        return bucket

    async def update_bucket(
        self, name: str, patch: BucketUpdate, actor: Actor, *, if_match: int | None
    ) -> Bucket:
        changes = patch.model_dump(mode="json", exclude_unset=True)
        return await self._versioned_update(name, actor, "update", if_match, lambda _row: changes)

    async def set_status(self, name: str, status: BucketStatus, actor: Actor) -> Bucket:
        action = "suspend" if status is BucketStatus.SUSPENDED else "resume"
        return await self._versioned_update(
            name, actor, action, None, lambda _row: {"status": status.value}
        )

    async def _versioned_update(
        self,
        name: str,
        actor: Actor,
        action: str,
        if_match: int | None,
        compute: Callable[[Bucket], dict[str, Any]],
    ) -> Bucket:
        # Optimistic concurrency: the UPDATE only applies to the version we read, so two writers
        # cannot both win; with If-Match the caller's version must be the current one.
        for _attempt in range(5):
            try:
                async with self.db.transaction() as session:
                    row = await self._get(session, name)
                    if if_match is not None and row.version != if_match:
                        raise PreconditionFailed(
                            f"bucket {name!r} is at version {row.version}, not {if_match}"
                        )
                    before = row_values(row)
                    changes = compute(row)
                    merged = self._validated({**before, **changes})
                    changed = {k: v for k, v in merged.items() if before.get(k) != v}
                    if not changed:
                        return row
                    result = await session.execute(
                        sa.update(Bucket)
                        .where(col(Bucket.id) == row.id, col(Bucket.version) == row.version)
                        .values(**changed, version=row.version + 1, updated_at=utcnow())
                    )
                    if result.rowcount == 0:  # type: ignore[attr-defined]
                        if if_match is not None:
                            raise PreconditionFailed(
                                f"bucket {name!r} changed concurrently; it is no longer at"
                                f" version {if_match}"
                            )
                        continue
                    await self._record(
                        session,
                        row,
                        actor,
                        action,
                        audit_view({k: before[k] for k in changed}),
                        audit_view(changed),
                    )
                    await session.refresh(row)
            except IntegrityError as exc:
                raise self._conflict(exc, {**before, **changes}) from None
            await self._announce(BucketChange(row.id, row.name, action))
            return row
        raise Conflict(f"bucket {name!r} is being changed concurrently; retry")

    async def add_prefix(self, name: str, prefix: str, actor: Actor) -> BucketPrefix:
        prefix = validate_prefix(prefix)
        try:
            async with self.db.transaction() as session:
                bucket = await self._get(session, name)
                row = BucketPrefix(bucket_id=bucket.id, prefix=prefix)
                session.add(row)
                await self._bump(session, bucket)
                await self._record(session, bucket, actor, "add_prefix", None, {"prefix": prefix})
        except IntegrityError:
            raise Conflict(f"prefix {prefix!r} is already registered on {name!r}") from None
        await self._announce(BucketChange(bucket.id, bucket.name, "add_prefix"))
        return row

    async def remove_prefix(self, name: str, prefix_id: uuid.UUID, actor: Actor) -> None:
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            prefix = await session.get(BucketPrefix, prefix_id)
            if prefix is None or prefix.bucket_id != bucket.id:
                raise NotFound(f"prefix {prefix_id} is not registered on {name!r}")
            bindings = (
                (
                    await session.execute(
                        select(BucketPolicyBinding).where(
                            col(BucketPolicyBinding.prefix_id) == prefix_id
                        )
                    )
                )
                .scalars()
                .all()
            )
            removed = [self._binding_view(b, prefix.prefix) for b in bindings]
            for binding in bindings:
                await session.delete(binding)
            await session.delete(prefix)
            await self._bump(session, bucket)
            await self._record(
                session,
                bucket,
                actor,
                "remove_prefix",
                {"prefix": prefix.prefix, "id": str(prefix.id), "bindings": removed},
                None,
            )
        await self._announce(BucketChange(bucket.id, bucket.name, "remove_prefix"))

    async def add_binding(
        self, name: str, data: BindingCreate, actor: Actor
    ) -> BucketPolicyBinding:
        resource_path = validate_resource_path(data.resource_path)
        allowed_ops = validate_allowed_ops(data.allowed_ops.model_dump())
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            prefix_id = None
            if data.prefix is not None:
                prefix = (
                    await session.execute(
                        select(BucketPrefix).where(
                            col(BucketPrefix.bucket_id) == bucket.id,
                            col(BucketPrefix.prefix) == data.prefix,
                        )
                    )
                ).scalar_one_or_none()
                if prefix is None:
                    raise InvalidInput(
                        f"prefix: {data.prefix!r} is not registered on bucket {name!r};"
                        " add it with POST /admin/buckets/{name}/prefixes first"
                    )
                prefix_id = prefix.id
            binding = BucketPolicyBinding(
                bucket_id=bucket.id,
                prefix_id=prefix_id,
                resource_path=resource_path,
                allowed_ops=allowed_ops,
            )
            session.add(binding)
            await session.flush()
            await self._bump(session, bucket)
            await self._record(
                session, bucket, actor, "bind", None, self._binding_view(binding, data.prefix)
            )
        await self._announce(BucketChange(bucket.id, bucket.name, "bind"))
        return binding

    async def remove_binding(self, name: str, binding_id: uuid.UUID, actor: Actor) -> None:
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            binding = await session.get(BucketPolicyBinding, binding_id)
            if binding is None or binding.bucket_id != bucket.id:
                raise NotFound(f"binding {binding_id} is not registered on {name!r}")
            prefix = (
                await session.get(BucketPrefix, binding.prefix_id) if binding.prefix_id else None
            )
            view = self._binding_view(binding, prefix.prefix if prefix else None)
            await session.delete(binding)
            await self._bump(session, bucket)
            await self._record(session, bucket, actor, "unbind", view, None)
        await self._announce(BucketChange(bucket.id, bucket.name, "unbind"))

    # ----- helpers -----------------------------------------------------------------------

    def _validated(self, spec: dict[str, Any]) -> dict[str, Any]:
        spec = validate_bucket_spec(dict(spec), self.endpoint_allowlist)
        if spec.get("secret_ref") and self._check_secret_ref is not None:
            self._check_secret_ref(spec["secret_ref"], spec.get("secret_version"))
        return spec

    @staticmethod
    def _binding_view(binding: BucketPolicyBinding, prefix: str | None) -> dict[str, Any]:
        return {
            "id": str(binding.id),
            "prefix": prefix,
            "resource_path": binding.resource_path,
            "allowed_ops": binding.allowed_ops,
        }

    @staticmethod
    async def _get(session: AsyncSession, name: str) -> Bucket:
        bucket = (
            await session.execute(select(Bucket).where(col(Bucket.name) == name))
        ).scalar_one_or_none()
        if bucket is None:
            raise BucketNotFound(f"bucket {name!r} is not registered")
        return bucket

    @staticmethod
    async def _bump(session: AsyncSession, bucket: Bucket) -> None:
        # Prefix and binding changes change what the bucket allows: its version (ETag) moves too.
        await session.execute(
            sa.update(Bucket)
            .where(col(Bucket.id) == bucket.id)
            .values(version=Bucket.version + 1, updated_at=utcnow())
        )

    async def _record(
        self,
        session: AsyncSession,
        bucket: Bucket,
        actor: Actor,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        diff = {"before": before, "after": after}
        session.add(
            BucketAudit(
                bucket_id=bucket.id,
                bucket_name=bucket.name,
                actor=actor.name,
                action=action,
                diff=json.loads(json.dumps(diff, default=str)),
                request_id=actor.request_id,
            )
        )
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # Delivered to every listening replica when (and only if) this transaction commits.
            payload = json.dumps(
                {"id": str(bucket.id), "name": bucket.name, "action": action, "origin": self.origin}
            )
            await session.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, payload)))

    async def _announce(self, change: BucketChange) -> None:
        for listener in list(self.listeners):
            result = listener(change)
            if result is not None:
                await result

    @staticmethod
    def _conflict(exc: IntegrityError, spec: dict[str, Any]) -> Exception:
        # PostgreSQL names the violated index; SQLite names the indexed columns.
        text = str(exc.orig).lower()
        if any(hint in text for hint in ("default_upload", "bucket.owner_project")):
            scope = spec.get("owner_project") or "the whole commons (no owner_project)"
            return Conflict(f"another bucket is already the default upload bucket for {scope}")
        if any(hint in text for hint in ("ix_bucket_name", "bucket.name")):
            return Conflict(f"bucket {spec.get('name')!r} is already registered")
        return Conflict("the change conflicts with the current registry state")
