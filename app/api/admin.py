"""Admin API (docs/api.md): thin handlers over ``RegistryService``. Every route needs
bucket_admin, or bucket_register on a project for that project's buckets (docs/self-service.md:
registrants see and change only those, under the self-service rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import Manager, ManagerDep, ServicesDep, actor_for, manager_identity, may_manage
from app.api.errors import documented_errors
from app.api.schemas import (
    AuditOut,
    BindingOut,
    BucketOut,
    BucketRemoved,
    CreatedBinding,
    CreatedBucket,
    CreatedPrefix,
    CredentialsRotated,
    ExternalIdIssued,
    Ok,
    PrefixOut,
    StatusChanged,
    VersionsPruned,
)
from app.container import Services
from app.errors import AccessDenied, BucketNotFound, InvalidInput
from app.health.selfservice import redact_ref
from app.registry.models import Bucket, BucketAudit, BucketPolicyBinding
from app.registry.paging import Page
from app.registry.records import BucketStatus, Provider
from app.registry.schemas import (
    BindingCreate,
    BucketCreate,
    BucketUpdate,
    GcpKey,
    PrefixCreate,
    S3Keys,
)
from app.registry.service import BucketFilter
from app.registry.validation import LABEL_KEY_RE

_ERRORS = documented_errors(
    {
        400: "Invalid input",
        401: "Missing, invalid or expired token",
        403: "Not a bucket admin (nor a registrant of the bucket's project)",
        404: "Unknown bucket",
        503: "A dependency (Arborist, database) is unavailable",
    }
)

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(manager_identity)], responses=_ERRORS
)

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="From a previous Link header")]


_BUCKET_FIELDS = tuple(BucketOut.model_fields)


def bucket_json(bucket: Any) -> dict[str, Any]:
    """A bucket row (ORM object or plain row) in the ``BucketOut`` shape, JSON-ready.

    Built by hand: validating 100 models per listing page cost more than the query itself.
    """
    values = {name: getattr(bucket, name) for name in _BUCKET_FIELDS}
    values["id"] = str(values["id"])
    values["secret_ref"] = bucket.secret_ref is not None
    values["created_at"] = values["created_at"].isoformat()
    values["updated_at"] = values["updated_at"].isoformat()
    return values


async def visible_bucket(services: Services, who: Manager, name: str) -> Bucket:
    """The bucket, if the caller may manage it; to anyone else it is not registered."""
    bucket = await services.registry.get_bucket(name)
    if not await may_manage(services, who, bucket.project_resource):
        raise BucketNotFound(f"bucket {name!r} is not registered")
    return bucket


def binding_out(binding: BucketPolicyBinding, prefix: str | None) -> BindingOut:
    return BindingOut(
        id=binding.id,
        prefix_id=binding.prefix_id,
        prefix=prefix,
        resource_path=binding.resource_path,
        allowed_ops=binding.allowed_ops,  # type: ignore[arg-type]
        created_at=binding.created_at,
    )


def _etag(bucket: Bucket) -> str:
    return f'"{bucket.version}"'


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


def _link_next(request: Request, response: Response, page: Page) -> None:
    if page.next_cursor:
        url = request.url.include_query_params(cursor=page.next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'


def _labels(raw: list[str]) -> dict[str, str]:
    labels = {}
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not LABEL_KEY_RE.match(key):
            raise InvalidInput(f"label: expected key:value with a valid key, got {item[:80]!r}")
        labels[key] = value
    return labels


@router.get("/buckets", response_model=list[BucketOut], summary="List buckets")
async def list_buckets(
    request: Request,
    services: ServicesDep,
    status: BucketStatus | None = None,
    owner_project: Annotated[str | None, Query(max_length=255)] = None,
    provider: Provider | None = None,
    label: Annotated[list[str], Query(description="key:value; repeat to AND")] = [],  # noqa: B006
    limit: Limit = 100,
    cursor: Cursor = None,
    *,
    who: ManagerDep,
) -> JSONResponse:
    filters = BucketFilter(
        status,
        owner_project,
        provider,
        _labels(label),
        project_resources=None if who.is_admin else who.projects,
    )
    page = await services.registry.list_buckets(filters, limit, cursor)
    answer = JSONResponse([bucket_json(bucket) for bucket in page.items])
    _link_next(request, answer, page)
    return answer


@router.get("/buckets/{name}", response_model=BucketOut, summary="Get one bucket")
async def get_bucket(
    name: str, response: Response, services: ServicesDep, who: ManagerDep
) -> BucketOut:
    bucket = await visible_bucket(services, who, name)
    response.headers["ETag"] = _etag(bucket)
    return BucketOut.model_validate(bucket_json(bucket))


@router.post(
    "/buckets",
    status_code=201,
    response_model=CreatedBucket,
    responses=documented_errors({409: "Name already registered"}),
    summary="Register a bucket",
)
async def create_bucket(
    body: BucketCreate, request: Request, response: Response, services: ServicesDep, who: ManagerDep
) -> CreatedBucket:
    actor = actor_for(request, who)
    if who.is_admin:
        bucket = await services.registry.create_bucket(body, actor)
    else:
        # A registrant registers for a project they hold bucket_register on; the bucket starts
        # pending and is validated at once.
        if body.project_resource and not await may_manage(services, who, body.project_resource):
            raise AccessDenied(
                f"{services.settings.register_method} on {body.project_resource} is required"
                " to register a bucket of that project"
            )
        bucket = await services.registry.create_bucket(body, actor, registrant=True)
        await services.selfservice.validate(bucket.name, actor)
        bucket = await services.registry.get_bucket(bucket.name)
    response.headers["ETag"] = _etag(bucket)
    response.headers["Location"] = f"/admin/buckets/{bucket.name}"
    return CreatedBucket(id=bucket.id, name=bucket.name, status=BucketStatus(bucket.status))


@router.patch(
    "/buckets/{name}",
    response_model=Ok,
    responses=documented_errors({412: "If-Match does not match the version"}),
    summary="Change a bucket (partial; honours If-Match)",
)
async def update_bucket(
    name: str,
    body: BucketUpdate,
    request: Request,
    response: Response,
    services: ServicesDep,
    who: ManagerDep,
    if_match: Annotated[str | None, Header(max_length=64)] = None,
) -> Ok:
    await visible_bucket(services, who, name)
    bucket = await services.registry.update_bucket(
        name,
        body,
        actor_for(request, who),
        if_match=parse_if_match(if_match),
        registrant=not who.is_admin,
    )
    response.headers["ETag"] = _etag(bucket)
    return Ok()


@router.delete("/buckets/{name}", response_model=StatusChanged, summary="Suspend a bucket")
async def suspend_bucket(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> StatusChanged:
    await visible_bucket(services, who, name)
    await services.registry.set_status(name, BucketStatus.SUSPENDED, actor_for(request, who))
    return StatusChanged(status=BucketStatus.SUSPENDED)


@router.post("/buckets/{name}/resume", response_model=StatusChanged, summary="Resume a bucket")
async def resume_bucket(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> StatusChanged:
    # A suspension may be an admin's answer to a compromise: only an admin lifts it.
    who.require_admin(services.settings)
    await services.registry.set_status(name, BucketStatus.ACTIVE, actor_for(request, who))
    return StatusChanged(status=BucketStatus.ACTIVE)


@router.post(
    "/buckets/{name}/prefixes",
    status_code=201,
    response_model=CreatedPrefix,
    summary="Add a prefix",
)
async def add_prefix(
    name: str, body: PrefixCreate, request: Request, services: ServicesDep, who: ManagerDep
) -> CreatedPrefix:
    await visible_bucket(services, who, name)
    prefix = await services.registry.add_prefix(name, body.prefix, actor_for(request, who))
    return CreatedPrefix(prefix_id=prefix.id)


@router.get("/buckets/{name}/prefixes", response_model=list[PrefixOut], summary="List prefixes")
async def list_prefixes(name: str, services: ServicesDep, who: ManagerDep) -> list[PrefixOut]:
    await visible_bucket(services, who, name)
    return [
        PrefixOut(id=row.id, prefix=row.prefix, created_at=row.created_at)
        for row in await services.registry.list_prefixes(name)
    ]


@router.delete(
    "/buckets/{name}/prefixes/{prefix_id}",
    response_model=Ok,
    summary="Remove a prefix and its bindings",
)
async def remove_prefix(
    name: str, prefix_id: uuid.UUID, request: Request, services: ServicesDep, who: ManagerDep
) -> Ok:
    await visible_bucket(services, who, name)
    await services.registry.remove_prefix(name, prefix_id, actor_for(request, who))
    return Ok()


@router.post(
    "/buckets/{name}/bindings",
    status_code=201,
    response_model=CreatedBinding,
    summary="Bind the bucket (or a prefix) to an Arborist resource",
)
async def add_binding(
    name: str, body: BindingCreate, request: Request, services: ServicesDep, who: ManagerDep
) -> CreatedBinding:
    await visible_bucket(services, who, name)
    binding = await services.registry.add_binding(
        name, body, actor_for(request, who), registrant=not who.is_admin
    )
    return CreatedBinding(binding_id=binding.id)


@router.get("/buckets/{name}/bindings", response_model=list[BindingOut], summary="List bindings")
async def list_bindings(name: str, services: ServicesDep, who: ManagerDep) -> list[BindingOut]:
    await visible_bucket(services, who, name)
    return [binding_out(b, prefix) for b, prefix in await services.registry.list_bindings(name)]


@router.delete(
    "/buckets/{name}/bindings/{binding_id}", response_model=Ok, summary="Remove a binding"
)
async def remove_binding(
    name: str, binding_id: uuid.UUID, request: Request, services: ServicesDep, who: ManagerDep
) -> Ok:
    await visible_bucket(services, who, name)
    await services.registry.remove_binding(name, binding_id, actor_for(request, who))
    return Ok()


class CheckOut(BaseModel):
    status: Literal["pass", "fail", "skipped"]
    reason: str


class ValidationReport(BaseModel):
    ok: bool
    checks: dict[str, CheckOut] = Field(
        description="secret_accessible, role_assumable, bucket_listable, presign_test"
        " (and write_probe when asked)"
    )
    errors: list[str]
    status: BucketStatus | None = Field(
        default=None, description="The bucket's status after the validation"
    )


def _report_out(
    report: Any, status: str | None = None, *, secret_ref: str | None = None
) -> ValidationReport:
    """The report as answered; a reason naming the bucket's ``secret_ref`` shows its
    fingerprint only, as the stored validation does."""
    return ValidationReport(
        ok=report.ok,
        checks={
            k: CheckOut(status=v.status, reason=redact_ref(v.reason, secret_ref))
            for k, v in report.checks.items()
        },
        errors=[redact_ref(error, secret_ref) for error in report.errors],
        status=BucketStatus(status) if status is not None else None,
    )


@router.post(
    "/buckets/{name}/validate",
    response_model=ValidationReport,
    summary="Run the bucket's secret, role, listing and a real presigned request checks",
    description="The result is kept in the bucket's record (`validation`). A pending bucket"
    " turns active when it passes (unless SELF_SERVICE_APPROVAL=admin); a pending external ID"
    " replaces the current one when the checks pass with it.",
)
async def validate_bucket(
    name: str,
    request: Request,
    services: ServicesDep,
    who: ManagerDep,
    write_probe: Annotated[
        bool, Query(description="Also PUT, GET and DELETE a small probe object")
    ] = False,
) -> ValidationReport:
    await visible_bucket(services, who, name)
    report = await services.selfservice.validate(
        name, actor_for(request, who), write_probe=write_probe
    )
    bucket = await services.registry.get_bucket(name)
    return _report_out(report, bucket.status, secret_ref=bucket.secret_ref)


@router.post(
    "/buckets/{name}/approve",
    response_model=StatusChanged,
    responses=documented_errors({409: "Not pending, or not validated"}),
    summary="Approve a pending bucket that passed validation (admins only)",
)
async def approve_bucket(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> StatusChanged:
    who.require_admin(services.settings)
    await services.selfservice.approve(name, actor_for(request, who))
    return StatusChanged(status=BucketStatus.ACTIVE)


@router.post(
    "/buckets/{name}/reject",
    response_model=StatusChanged,
    responses=documented_errors({409: "Not pending"}),
    summary="Reject a pending bucket (admins only); it keeps its name and serves nothing",
)
async def reject_bucket(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> StatusChanged:
    who.require_admin(services.settings)
    await services.selfservice.reject(name, actor_for(request, who))
    return StatusChanged(status=BucketStatus.REJECTED)


@router.post(
    "/buckets/{name}/purge",
    response_model=BucketRemoved,
    responses=documented_errors({409: "Neither rejected nor suspended"}),
    summary="Remove a rejected or suspended bucket for good (admins only)",
    description="The bucket, its prefixes and bindings are deleted and its name is free"
    " again; the keys the registry holds for it are deleted too. Its audit trail stays, with"
    " a `remove` row. DELETE /admin/buckets/{name} only suspends.",
)
async def purge_bucket(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> BucketRemoved:
    who.require_admin(services.settings)
    secrets_removed = await services.selfservice.purge(name, actor_for(request, who))
    return BucketRemoved(name=name, secrets_removed=secrets_removed)


@router.put(
    "/buckets/{name}/credentials",
    response_model=CredentialsRotated,
    summary="Rotate a static bucket's keys (write-only)",
    description="The keys are staged in a secret the registry owns, validated against the"
    " store, and only then made current, on every replica at once. Keys that fail validation"
    " change nothing (400). The keys are never returned.",
)
async def put_credentials(
    name: str,
    body: S3Keys | GcpKey,
    request: Request,
    services: ServicesDep,
    who: ManagerDep,
) -> CredentialsRotated:
    await visible_bucket(services, who, name)
    payload = {
        field: value.get_secret_value() if hasattr(value, "get_secret_value") else value
        for field, value in body
    }
    report = await services.selfservice.put_credentials(
        name, payload, actor_for(request, who), registrant=not who.is_admin
    )
    bucket = await services.registry.get_bucket(name)
    return CredentialsRotated(
        validation=_report_out(report, secret_ref=bucket.secret_ref).model_dump(),
        status=BucketStatus(bucket.status),
        secret_version=bucket.secret_version,
    )


@router.post(
    "/buckets/{name}/credentials/prune",
    response_model=VersionsPruned,
    summary="Remove the previous versions kept of the bucket's keys",
)
async def prune_credentials(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> VersionsPruned:
    await visible_bucket(services, who, name)
    removed = await services.selfservice.prune_credentials(name, actor_for(request, who))
    return VersionsPruned(versions_removed=removed)


@router.post(
    "/buckets/{name}/external-id",
    response_model=ExternalIdIssued,
    summary="Issue a role bucket's next external ID (two-phase rotation)",
    description="The new ID is shown as `pending_external_id`; add it to the role's trust"
    " policy, then POST …/validate: when the checks pass with it, it replaces the current one.",
)
async def rotate_external_id(
    name: str, request: Request, services: ServicesDep, who: ManagerDep
) -> ExternalIdIssued:
    await visible_bucket(services, who, name)
    issued = await services.selfservice.rotate_external_id(name, actor_for(request, who))
    return ExternalIdIssued(pending_external_id=issued)


def _audit_out(rows: list[BucketAudit]) -> list[AuditOut]:
    return [AuditOut.model_validate(row.model_dump()) for row in rows]


@router.get(
    "/buckets/{name}/audit", response_model=list[AuditOut], summary="A bucket's audit trail"
)
async def bucket_audit(
    name: str,
    request: Request,
    response: Response,
    services: ServicesDep,
    who: ManagerDep,
    since: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> list[AuditOut]:
    await visible_bucket(services, who, name)
    page = await services.registry.audit(
        bucket_name=name, since=since, actor=actor, limit=limit, cursor=cursor
    )
    _link_next(request, response, page)
    return _audit_out(list(page.items))


@router.get("/audit", response_model=list[AuditOut], summary="The registry's audit trail")
async def audit(
    request: Request,
    response: Response,
    services: ServicesDep,
    who: ManagerDep,
    since: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> list[AuditOut]:
    page = await services.registry.audit(
        since=since,
        actor=actor,
        limit=limit,
        cursor=cursor,
        project_resources=None if who.is_admin else who.projects,
    )
    _link_next(request, response, page)
    return _audit_out(list(page.items))
