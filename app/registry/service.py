"""The admin side of the registry: queries, validated mutations and their audit trail.

Every mutation writes its ``bucket_audit`` row in the same transaction as the change, bumps the
bucket's ``version``, and announces the change (PostgreSQL ``NOTIFY`` inside the transaction, so
other replicas hear of it exactly when it commits; local listeners after the commit).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from app.netguard import DestinationRefused, NetGuard
from app.registry.changes import BindingSpec, BucketWrite, RegisteredBucket
from app.registry.keys import validate_prefix
from app.registry.models import Bucket, BucketAudit, BucketPolicyBinding, BucketPrefix, utcnow
from app.registry.paging import Page, decode_cursor, encode_cursor
from app.registry.records import (
    BUCKET_FIELDS,
    SELF_SERVICE_FIELDS,
    BindingRecord,
    BucketRecord,
    BucketStatus,
    Op,
    Provider,
    secret_fingerprint,
)
from app.registry.schemas import BindingCreate, BucketCreate, BucketUpdate
from app.registry.selfservice import (
    confine_binding,
    registrant_create,
    registrant_update,
    with_owner_project,
)
from app.registry.validation import (
    validate_allowed_ops,
    validate_binding_path,
    validate_bucket_spec,
    validate_endpoint,
)

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "bucket_registry"


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
    # Only buckets of these project paths (or below them); None: every bucket.
    project_resources: tuple[str, ...] | None = None


# What the audit trail keeps of a secret reference: that it changed, not where it points.
_fingerprint = secret_fingerprint


def audit_view(values: dict[str, Any]) -> dict[str, Any]:
    view = {key: values[key] for key in (*BUCKET_FIELDS, *SELF_SERVICE_FIELDS) if key in values}
    if "secret_ref" in view:
        view["secret_ref"] = _fingerprint(view["secret_ref"])
    for key, value in view.items():
        if hasattr(value, "value"):
            view[key] = value.value
    return view


def row_values(bucket: Bucket) -> dict[str, Any]:
    return {key: getattr(bucket, key) for key in (*BUCKET_FIELDS, *SELF_SERVICE_FIELDS)}


def _under(column: Any, paths: Sequence[str]) -> Any:
    """``column`` names one of ``paths`` or a path below one (whole segments, no wildcards)."""
    if not paths:
        return sa.false()
    return sa.or_(
        *(sa.or_(column == path, column.startswith(path + "/", autoescape=True)) for path in paths)
    )


def to_record(
    bucket: Bucket, bindings: Sequence[tuple[BucketPolicyBinding, str | None]]
) -> BucketRecord:
    return BucketRecord.of(
        row_values(bucket),
        id=bucket.id,
        version=bucket.version,
        created_at=bucket.created_at,
        updated_at=bucket.updated_at,
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


@dataclass(frozen=True, slots=True)
class ValidationHealth:
    """What the stored validations say: buckets whose last validation failed, and active
    buckets not validated since a cut-off (or never), each a bounded list plus its count."""

    failing: Sequence[Any]
    failing_total: int
    stale: Sequence[Any]
    stale_total: int


SecretRefCheck = Callable[[str, str | None], object]
ChangeHook = Callable[[BucketChange], Awaitable[None] | None]


class RegistryService:
    """Reads and writes bucket registrations; the only code that touches the bucket tables."""

    def __init__(
        self,
        db: Database,
        *,
        endpoint_allowlist: Sequence[str] = (),
        check_secret_ref: SecretRefCheck | None = None,
        netguard: NetGuard | None = None,
    ) -> None:
        self.db = db
        self.endpoint_allowlist = list(endpoint_allowlist)
        self.netguard = netguard or NetGuard(self.endpoint_allowlist)
        self._check_secret_ref = check_secret_ref
        self.listeners: list[ChangeHook] = []
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
        if filters.project_resources is not None:
            query = query.where(_under(table.c.project_resource, filters.project_resources))
        async with self.db.transaction() as session:
            rows = list((await session.execute(query)).all())
        next_cursor = encode_cursor({"after": rows[limit - 1].name}) if len(rows) > limit else None
        return Page(rows[:limit], next_cursor)

    async def validation_health(
        self,
        *,
        stale_before: datetime,
        limit: int,
        project_resources: tuple[str, ...] | None = None,
    ) -> ValidationHealth:
        """Read from each bucket's stored ``validation`` (every replica sees the same, and a
        restart forgets nothing): buckets, except rejected ones, whose last validation
        failed, by name; active buckets last validated before ``stale_before`` or never,
        least recently validated first. With ``project_resources``, only buckets of those
        projects. Rows are plain rows with ``name``, ``status``, ``owner_project``,
        ``validation`` and ``secret_ref`` (to redact it from the reasons, never to show)."""
        table = Bucket.__table__  # type: ignore[attr-defined]
        ok = table.c.validation["ok"].as_boolean()
        at = table.c.validation["at"].as_string()
        scope = (
            []
            if project_resources is None
            else [_under(table.c.project_resource, project_resources)]
        )
        failing = sa.and_(ok == sa.false(), table.c.status != BucketStatus.REJECTED.value, *scope)
        stale = sa.and_(
            table.c.status == BucketStatus.ACTIVE.value,
            sa.or_(at.is_(None), at < stale_before.astimezone(UTC).isoformat()),
            *scope,
        )
        columns = (
            table.c.name,
            table.c.status,
            table.c.owner_project,
            table.c.validation,
            table.c.secret_ref,
        )
        count = sa.func.count()
        async with self.db.transaction() as session:
            failing_rows = (
                await session.execute(
                    sa.select(*columns).where(failing).order_by(table.c.name).limit(limit)
                )
            ).all()
            stale_rows = (
                await session.execute(
                    sa.select(*columns)
                    .where(stale)
                    .order_by(at.asc().nulls_first(), table.c.name)
                    .limit(limit)
                )
            ).all()
            failing_total = (await session.execute(sa.select(count).where(failing))).scalar_one()
            stale_total = (await session.execute(sa.select(count).where(stale))).scalar_one()
        return ValidationHealth(failing_rows, int(failing_total), stale_rows, int(stale_total))

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

    async def bucket_names(self) -> frozenset[str]:
        """Every registered bucket name, whatever its status, in one query."""
        async with self.db.transaction() as session:
            return frozenset((await session.execute(select(Bucket.name))).scalars())

    async def count_buckets(self) -> int:
        async with self.db.transaction() as session:
            return int(
                (await session.execute(sa.select(sa.func.count()).select_from(Bucket))).scalar_one()
            )

    async def snapshot(self, names: Iterable[str] | None = None) -> dict[str, RegisteredBucket]:
        """Buckets (all, or those named) with their prefixes and bindings, in three queries."""
        query = select(Bucket).order_by(col(Bucket.name))
        wanted = None if names is None else sorted(set(names))
        if wanted is not None:
            query = query.where(col(Bucket.name).in_(wanted))
        async with self.db.transaction() as session:
            rows = list((await session.execute(query)).scalars())
            ids = [row.id for row in rows]
            prefixes: Sequence[BucketPrefix] = []
            bindings: Sequence[BucketPolicyBinding] = []
            if ids:
                prefixes = (
                    (
                        await session.execute(
                            select(BucketPrefix).where(col(BucketPrefix.bucket_id).in_(ids))
                        )
                    )
                    .scalars()
                    .all()
                )
                bindings = (
                    (
                        await session.execute(
                            select(BucketPolicyBinding)
                            .where(col(BucketPolicyBinding.bucket_id).in_(ids))
                            .order_by(
                                col(BucketPolicyBinding.created_at), col(BucketPolicyBinding.id)
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
        by_id = {row.id: RegisteredBucket(row, {}, []) for row in rows}
        prefix_names: dict[uuid.UUID, str] = {}
        for prefix in prefixes:
            by_id[prefix.bucket_id].prefixes[prefix.prefix] = prefix.id
            prefix_names[prefix.id] = prefix.prefix
        for binding in bindings:
            ops = frozenset(op for op, on in binding.allowed_ops.items() if on)
            prefix_name = prefix_names.get(binding.prefix_id) if binding.prefix_id else None
            by_id[binding.bucket_id].bindings.append((prefix_name, binding.resource_path, ops))
        return {current.row.name: current for current in by_id.values()}

    async def default_upload_holders(self) -> dict[str | None, str]:
        """Scope (owner_project, None = global) → the bucket that is its default upload bucket."""
        query = select(Bucket.name, Bucket.owner_project).where(
            col(Bucket.is_default_upload).is_(True)
        )
        async with self.db.transaction() as session:
            return {project: name for name, project in (await session.execute(query)).all()}

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
        project_resources: tuple[str, ...] | None = None,
    ) -> Page:
        """Audit rows, newest first; with ``project_resources``, only rows of buckets of those
        projects."""
        query = select(BucketAudit).order_by(col(BucketAudit.id).desc()).limit(limit + 1)
        if project_resources is not None:
            visible = sa.select(col(Bucket.id)).where(
                _under(col(Bucket.project_resource), project_resources)
            )
            query = query.where(col(BucketAudit.bucket_id).in_(visible))
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

    async def create_bucket(
        self, data: BucketCreate, actor: Actor, *, registrant: bool = False
    ) -> Bucket:
        """Register a bucket. ``registrant``: the caller is a project member, not an admin:
        the self-service rules apply (``registry.selfservice``) and the bucket starts pending;
        the audit row's action is ``register``."""
        spec = data.model_dump(mode="json")
        if registrant:
            spec = registrant_create(spec, data.model_fields_set)
        spec = self.validate_spec(with_owner_project(spec))
        await self.check_destination(spec.get("endpoint"))
        bucket = Bucket(**spec)
        action = "register" if registrant else "create"
        try:
            async with self.db.transaction() as session:
                session.add(bucket)
                await session.flush()
                await self._record(
                    session, bucket, actor, action, None, audit_view(row_values(bucket))
                )
        except IntegrityError as exc:
            raise self._conflict(exc, spec) from None
        await self._announce(BucketChange(bucket.id, bucket.name, action))
        return bucket

    async def update_bucket(
        self,
        name: str,
        patch: BucketUpdate,
        actor: Actor,
        *,
        if_match: int | None,
        registrant: bool = False,
    ) -> Bucket:
        changes = patch.model_dump(mode="json", exclude_unset=True)
        if changes.get("endpoint"):
            await self.check_destination(
                validate_endpoint(changes["endpoint"], self.endpoint_allowlist)
            )
        if registrant:
            return await self._versioned_update(
                name,
                actor,
                "update",
                if_match,
                lambda row: registrant_update(row_values(row), changes),
            )
        return await self._versioned_update(name, actor, "update", if_match, lambda _row: changes)

    async def set_status(
        self, name: str, status: BucketStatus, actor: Actor, *, action: str | None = None
    ) -> Bucket:
        if action is None:
            action = "suspend" if status is BucketStatus.SUSPENDED else "resume"
        return await self._versioned_update(
            name, actor, action, None, lambda _row: {"status": status.value}
        )

    async def change(
        self,
        name: str,
        actor: Actor,
        action: str,
        compute: Callable[[Bucket], dict[str, Any]],
        *,
        audit_extra: dict[str, Any] | None = None,
    ) -> Bucket:
        """Apply what ``compute`` derives from the current row, as one versioned, audited and
        announced change (the self-service transitions: validate, approve, reject, rotate).
        ``audit_extra`` is added to the audit row's ``after`` (it must hold no secret)."""
        return await self._versioned_update(
            name, actor, action, None, compute, audit_extra=audit_extra
        )

    async def note(self, name: str, actor: Actor, action: str, after: dict[str, Any]) -> None:
        """An audit row for something done to a bucket outside its row (e.g. old secret
        versions pruned); the bucket itself, its version and caches are untouched."""
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            session.add(
                BucketAudit(
                    bucket_id=bucket.id,
                    bucket_name=bucket.name,
                    actor=actor.name,
                    action=action,
                    diff={"before": None, "after": json.loads(json.dumps(after, default=str))},
                    request_id=actor.request_id,
                )
            )

    async def store_validation(self, name: str, result: dict[str, Any]) -> None:
        """Keep a validation's result on the bucket, nothing else: no version, audit or
        notification (the data path never reads it, and an admin's If-Match stays valid)."""
        async with self.db.transaction() as session:
            await session.execute(
                sa.update(Bucket)
                .where(col(Bucket.name) == name)
                .values(validation=result)
                .execution_options(synchronize_session=False)
            )

    async def _versioned_update(
        self,
        name: str,
        actor: Actor,
        action: str,
        if_match: int | None,
        compute: Callable[[Bucket], dict[str, Any]],
        *,
        audit_extra: dict[str, Any] | None = None,
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
                    merged = self.validate_spec({**before, **changes})
                    changed = {k: v for k, v in merged.items() if before.get(k) != v}
                    for extra in ("validation",):
                        if extra in changes:
                            changed[extra] = changes[extra]
                    if not changed or set(changed) <= {"validation"}:
                        if changed:
                            await session.execute(
                                sa.update(Bucket)
                                .where(col(Bucket.id) == row.id)
                                .values(**changed)
                                .execution_options(synchronize_session=False)
                            )
                            await session.refresh(row)
                        return row
                    if not await self._update_row(session, row.id, row.version, changed):
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
                        audit_view({k: before[k] for k in changed if k in before}),
                        {**audit_view(changed), **(audit_extra or {})},
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
        self, name: str, data: BindingCreate, actor: Actor, *, registrant: bool = False
    ) -> BucketPolicyBinding:
        """Bind the bucket (or a prefix). ``registrant``: only to the bucket's project path
        or below it."""
        resource_path = validate_binding_path(data.resource_path)
        allowed_ops = validate_allowed_ops(data.allowed_ops.model_dump())
        async with self.db.transaction() as session:
            bucket = await self._get(session, name)
            if registrant:
                confine_binding(bucket.project_resource, resource_path)
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

    async def remove_bucket(
        self, name: str, actor: Actor, *, statuses: Iterable[BucketStatus]
    ) -> Bucket:
        """Delete a bucket with its prefixes and bindings for good, so its name is free again.

        Only a bucket in one of ``statuses`` is removed (``Conflict`` otherwise, checked under
        a row lock, so a concurrent resume wins or loses cleanly). The audit trail keeps every
        row, plus one ``remove`` row with what was deleted; replicas hear of it by NOTIFY.
        """
        allowed = {status.value for status in statuses}
        async with self.db.transaction() as session:
            bucket = (
                await session.execute(
                    select(Bucket).where(col(Bucket.name) == name).with_for_update()
                )
            ).scalar_one_or_none()
            if bucket is None:
                raise BucketNotFound(f"bucket {name!r} is not registered")
            if bucket.status not in allowed:
                raise Conflict(
                    f"bucket {name!r} is {bucket.status}; only {' or '.join(sorted(allowed))}"
                    " buckets can be removed (suspend it first)"
                )
            bindings = (
                await session.execute(
                    select(BucketPolicyBinding, BucketPrefix.prefix)
                    .outerjoin(
                        BucketPrefix, col(BucketPrefix.id) == col(BucketPolicyBinding.prefix_id)
                    )
                    .where(col(BucketPolicyBinding.bucket_id) == bucket.id)
                )
            ).all()
            prefixes = (
                (
                    await session.execute(
                        select(BucketPrefix).where(col(BucketPrefix.bucket_id) == bucket.id)
                    )
                )
                .scalars()
                .all()
            )
            removed = {
                **audit_view(row_values(bucket)),
                "prefixes": sorted(prefix.prefix for prefix in prefixes),
                "bindings": [self._binding_view(binding, prefix) for binding, prefix in bindings],
            }
            # Children first: SQLite does not enforce the cascading foreign keys.
            for binding, _prefix in bindings:
                await session.delete(binding)
            for prefix in prefixes:
                await session.delete(prefix)
            await session.flush()
            await session.delete(bucket)
            await self._record(session, bucket, actor, "remove", removed, None)
        await self._announce(BucketChange(bucket.id, bucket.name, "remove"))
        return bucket

    async def apply_batch(
        self, writes: Sequence[BucketWrite], actor: Actor, *, action: str
    ) -> list[BucketChange]:
        """Apply every write in one transaction (one ``action`` audit row each), all or nothing.

        Rows must already be validated (``validate_spec``). A bucket that is no longer at the
        version its write was planned against fails the whole batch with ``Conflict``.
        """
        # A default upload bucket that moves must leave its old bucket before it lands on the
        # new one: the unique indexes are checked statement by statement.
        ordered = sorted(writes, key=_batch_order)
        for write in ordered:
            new_endpoint = write.diff.get("endpoint", (None, write.row.get("endpoint")))[1]
            await self.check_destination(new_endpoint)
        changes: list[BucketChange] = []
        try:
            async with self.db.transaction() as session:
                for write in ordered:
                    if write.creates:
                        bucket = await self._create_in_batch(session, write, actor, action)
                    else:
                        bucket = await self._update_in_batch(session, write, actor, action)
                    changes.append(BucketChange(bucket.id, bucket.name, action))
        except IntegrityError as exc:
            taken = {"default_upload": "default upload bucket", "name": "bucket name"}.get(
                self._violated(exc) or "", "constraint"
            )
            raise Conflict(
                f"the {action} conflicts with the current registry ({taken} taken"
                " meanwhile); nothing was written. Plan again."
            ) from None
        for change in changes:
            await self._announce(change)
        return changes

    async def _create_in_batch(
        self, session: AsyncSession, write: BucketWrite, actor: Actor, action: str
    ) -> Bucket:
        bucket = Bucket(**write.row)
        session.add(bucket)
        await session.flush()
        _before, extra = await self._attach(session, bucket, write, {})
        await self._record(
            session, bucket, actor, action, None, {**audit_view(row_values(bucket)), **extra}
        )
        return bucket

    async def _update_in_batch(
        self, session: AsyncSession, write: BucketWrite, actor: Actor, action: str
    ) -> Bucket:
        bucket = await session.get(Bucket, write.bucket_id)
        stale = (
            f"bucket {write.name!r} changed since the {action} was planned; nothing was"
            " written. Plan again."
        )
        if bucket is None or write.version is None or bucket.version != write.version:
            raise Conflict(stale)
        changed = {key: after for key, (_before, after) in write.diff.items()}
        if not await self._update_row(session, bucket.id, write.version, changed):
            raise Conflict(stale)
        existing = {
            prefix.prefix: prefix.id
            for prefix in (
                await session.execute(
                    select(BucketPrefix).where(col(BucketPrefix.bucket_id) == bucket.id)
                )
            ).scalars()
        }
        before_extra, extra = await self._attach(session, bucket, write, existing)
        await self._record(
            session,
            bucket,
            actor,
            action,
            {
                **audit_view({key: before for key, (before, _after) in write.diff.items()}),
                **before_extra,
            },
            {**audit_view(changed), **extra},
        )
        return bucket

    @staticmethod
    async def _attach(
        session: AsyncSession,
        bucket: Bucket,
        write: BucketWrite,
        prefix_ids: dict[str, uuid.UUID],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Add the write's prefixes and bindings, set the operations of the bindings it
        changes; returns the audit view before and after."""
        prefix_ids = dict(prefix_ids)
        for prefix in write.add_prefixes:
            row = BucketPrefix(bucket_id=bucket.id, prefix=prefix)
            session.add(row)
            prefix_ids[prefix] = row.id
        if write.add_prefixes:
            # The tables have no ORM relationships, so the flush order is ours to give.
            await session.flush()
        for binding in write.add_bindings:
            session.add(
                BucketPolicyBinding(
                    bucket_id=bucket.id,
                    prefix_id=prefix_ids[binding.prefix] if binding.prefix else None,
                    resource_path=binding.resource_path,
                    allowed_ops=binding.allowed_ops,
                )
            )
        for _ops, binding in write.set_bindings:
            prefix_id = prefix_ids[binding.prefix] if binding.prefix else None
            await session.execute(
                sa.update(BucketPolicyBinding)
                .where(
                    col(BucketPolicyBinding.bucket_id) == bucket.id,
                    col(BucketPolicyBinding.resource_path) == binding.resource_path,
                    col(BucketPolicyBinding.prefix_id).is_(None)
                    if prefix_id is None
                    else col(BucketPolicyBinding.prefix_id) == prefix_id,
                )
                .values(allowed_ops=binding.allowed_ops)
                .execution_options(synchronize_session=False)
            )
        await session.flush()
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        if write.add_prefixes:
            after["prefixes"] = list(write.add_prefixes)
        if write.set_bindings:
            before["bindings"] = [
                _spec_view(binding, {op: True for op in sorted(ops)})
                for ops, binding in write.set_bindings
            ]
        if write.add_bindings or write.set_bindings:
            after["bindings"] = [
                _spec_view(binding, binding.allowed_ops)
                for binding in [*write.add_bindings, *(b for _, b in write.set_bindings)]
            ]
        return before, after

    # ----- helpers -----------------------------------------------------------------------

    async def check_destination(self, endpoint: str | None) -> None:
        """Refuse an endpoint whose name resolves to an address the policy refuses.

        A name that does not resolve now is accepted: every connection checks it again, which
        is also what stops a name re-pointed after registration.
        """
        if not endpoint:
            return
        try:
            await self.netguard.check_url(endpoint)
        except DestinationRefused as exc:
            raise InvalidInput(f"endpoint: {exc.message}") from None
        except OSError:
            log.info(
                "endpoint %s does not resolve now; checked again on every connection", endpoint
            )

    def validate_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A whole registration checked by every rule (including its secret reference's form),
        with values normalised; ``InvalidInput`` names the first bad field."""
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
    async def _update_row(
        session: AsyncSession, bucket_id: uuid.UUID, version: int, changed: dict[str, Any]
    ) -> bool:
        """Apply ``changed`` only if the bucket is still at ``version`` (optimistic concurrency:
        of two writers that read the same version, one wins); False when it was not."""
        result = await session.execute(
            sa.update(Bucket)
            .where(col(Bucket.id) == bucket_id, col(Bucket.version) == version)
            .values(**changed, version=version + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _violated(exc: IntegrityError) -> str | None:
        """Which rule a unique-index violation broke: ``default_upload``, ``name`` or None."""
        # PostgreSQL names the violated index; SQLite names the indexed columns.
        text = str(exc.orig).lower()
        if any(hint in text for hint in ("default_upload", "bucket.owner_project")):
            return "default_upload"
        if any(hint in text for hint in ("ix_bucket_name", "bucket.name")):
            return "name"
        return None

    @classmethod
    def _conflict(cls, exc: IntegrityError, spec: dict[str, Any]) -> Exception:
        violated = cls._violated(exc)
        if violated == "default_upload":
            scope = spec.get("owner_project") or "the whole commons (no owner_project)"
            return Conflict(f"another bucket is already the default upload bucket for {scope}")
        if violated == "name":
            return Conflict(f"bucket {spec.get('name')!r} is already registered")
        return Conflict("the change conflicts with the current registry state")


def _spec_view(binding: BindingSpec, allowed_ops: dict[str, bool]) -> dict[str, Any]:
    return {
        "prefix": binding.prefix,
        "resource_path": binding.resource_path,
        "allowed_ops": dict(allowed_ops),
    }


def _batch_order(write: BucketWrite) -> int:
    before_after = write.diff.get("is_default_upload")
    if before_after is not None and before_after[0] and not before_after[1]:
        return 0
    return 2 if write.creates else 1
