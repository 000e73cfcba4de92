"""Admin API (docs/api.md): thin handlers over ``RegistryService``; every route needs
bucket_admin."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import AdminDep, ServicesDep, actor_for, admin_identity
from app.api.errors import documented_errors
from app.api.schemas import (
    AuditOut,
    BindingOut,
    BucketOut,
    CreatedBinding,
    CreatedBucket,
    CreatedPrefix,
    Ok,
    PrefixOut,
    StatusChanged,
)
from app.errors import InvalidInput
from app.registry.models import Bucket, BucketAudit, BucketPolicyBinding
from app.registry.paging import Page
from app.registry.records import BucketStatus, Provider
from app.registry.schemas import BindingCreate, BucketCreate, BucketUpdate, PrefixCreate
from app.registry.service import BucketFilter
from app.registry.validation import LABEL_KEY_RE

_ERRORS = documented_errors(
    {
        400: "Invalid input",
        401: "Missing, invalid or expired token",
        403: "Not a bucket admin",
        404: "Unknown bucket",
        503: "A dependency (Arborist, database) is unavailable",
    }
)

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(admin_identity)], responses=_ERRORS
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
) -> JSONResponse:
    filters = BucketFilter(status, owner_project, provider, _labels(label))
    page = await services.registry.list_buckets(filters, limit, cursor)
    answer = JSONResponse([bucket_json(bucket) for bucket in page.items])
    _link_next(request, answer, page)
    return answer


@router.get("/buckets/{name}", response_model=BucketOut, summary="Get one bucket")
async def get_bucket(name: str, response: Response, services: ServicesDep) -> BucketOut:
    bucket = await services.registry.get_bucket(name)
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
    body: BucketCreate, request: Request, response: Response, services: ServicesDep, who: AdminDep
) -> CreatedBucket:
    bucket = await services.registry.create_bucket(body, actor_for(request, who))
    response.headers["ETag"] = _etag(bucket)
    response.headers["Location"] = f"/admin/buckets/{bucket.name}"
    return CreatedBucket(id=bucket.id, name=bucket.name)


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
    who: AdminDep,
    if_match: Annotated[str | None, Header(max_length=64)] = None,
) -> Ok:
    bucket = await services.registry.update_bucket(
        name, body, actor_for(request, who), if_match=parse_if_match(if_match)
    )
    response.headers["ETag"] = _etag(bucket)
    return Ok()


@router.delete("/buckets/{name}", response_model=StatusChanged, summary="Suspend a bucket")
async def suspend_bucket(
    name: str, request: Request, services: ServicesDep, who: AdminDep
) -> StatusChanged:
    await services.registry.set_status(name, BucketStatus.SUSPENDED, actor_for(request, who))
    return StatusChanged(status=BucketStatus.SUSPENDED)


@router.post("/buckets/{name}/resume", response_model=StatusChanged, summary="Resume a bucket")
async def resume_bucket(
    name: str, request: Request, services: ServicesDep, who: AdminDep
) -> StatusChanged:
    await services.registry.set_status(name, BucketStatus.ACTIVE, actor_for(request, who))
    return StatusChanged(status=BucketStatus.ACTIVE)


@router.post(
    "/buckets/{name}/prefixes",
    status_code=201,
    response_model=CreatedPrefix,
    summary="Add a prefix",
)
async def add_prefix(
    name: str, body: PrefixCreate, request: Request, services: ServicesDep, who: AdminDep
) -> CreatedPrefix:
    prefix = await services.registry.add_prefix(name, body.prefix, actor_for(request, who))
    return CreatedPrefix(prefix_id=prefix.id)


@router.get("/buckets/{name}/prefixes", response_model=list[PrefixOut], summary="List prefixes")
async def list_prefixes(name: str, services: ServicesDep) -> list[PrefixOut]:
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
    name: str, prefix_id: uuid.UUID, request: Request, services: ServicesDep, who: AdminDep
) -> Ok:
    await services.registry.remove_prefix(name, prefix_id, actor_for(request, who))
    return Ok()


@router.post(
    "/buckets/{name}/bindings",
    status_code=201,
    response_model=CreatedBinding,
    summary="Bind the bucket (or a prefix) to an Arborist resource",
)
async def add_binding(
    name: str, body: BindingCreate, request: Request, services: ServicesDep, who: AdminDep
) -> CreatedBinding:
    binding = await services.registry.add_binding(name, body, actor_for(request, who))
    return CreatedBinding(binding_id=binding.id)


@router.get("/buckets/{name}/bindings", response_model=list[BindingOut], summary="List bindings")
async def list_bindings(name: str, services: ServicesDep) -> list[BindingOut]:
    return [binding_out(b, prefix) for b, prefix in await services.registry.list_bindings(name)]


@router.delete(
    "/buckets/{name}/bindings/{binding_id}", response_model=Ok, summary="Remove a binding"
)
async def remove_binding(
    name: str, binding_id: uuid.UUID, request: Request, services: ServicesDep, who: AdminDep
) -> Ok:
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


@router.post(
    "/buckets/{name}/validate",
    response_model=ValidationReport,
    summary="Dry-run the bucket's secret, role, listing and a real presigned request",
)
async def validate_bucket(
    name: str,
    services: ServicesDep,
    write_probe: Annotated[
        bool, Query(description="Also PUT, GET and DELETE a small probe object")
    ] = False,
) -> ValidationReport:
    bucket = await services.registry.load_record(name)
    report = await services.probe.run(bucket, write_probe=write_probe)
    return ValidationReport(
        ok=report.ok,
        checks={k: CheckOut(status=v.status, reason=v.reason) for k, v in report.checks.items()},
        errors=report.errors,
    )


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
    since: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> list[AuditOut]:
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
    since: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> list[AuditOut]:
    page = await services.registry.audit(since=since, actor=actor, limit=limit, cursor=cursor)
    _link_next(request, response, page)
    return _audit_out(list(page.items))
