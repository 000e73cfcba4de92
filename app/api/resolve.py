"""Resolve (docs/api.md): non-secret bucket metadata for Fence. Any valid token; no Arborist
check."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import BEARER_SECURITY, CallerDep
from app.api.errors import documented_errors
from app.api.schemas import ResolvedBinding, ResolvedBucket
from app.errors import BucketSuspended
from app.registry.records import BucketRecord, Op
from app.registry.schemas import AllowedOps

_ERRORS = documented_errors(
    {
        400: "Invalid input",
        401: "Missing, invalid or expired token",
        403: "The default upload bucket is suspended",
        404: "Unknown bucket / no default upload bucket",
        503: "The database is unavailable",
    }
)

router = APIRouter(prefix="/resolve", tags=["resolve"], responses=_ERRORS)


def resolved(bucket: BucketRecord) -> ResolvedBucket:
    return ResolvedBucket(
        id=bucket.id,
        name=bucket.name,
        provider=bucket.provider,
        region=bucket.region,
        endpoint=bucket.endpoint,
        auth_mode=bucket.auth_mode,
        status=bucket.status,
        owner_project=bucket.owner_project,
        data_upload_allowed=bucket.data_upload_allowed,
        is_default_upload=bucket.is_default_upload,
        requester_pays=bucket.requester_pays,
        public=bucket.public,
        billing_projects=list(bucket.billing_projects),
        labels=bucket.labels,
        version=bucket.version,
        bindings=[
            ResolvedBinding(
                prefix=binding.prefix,
                resource_path=binding.resource_path,
                allowed_ops=AllowedOps(**{op.value: op in binding.allowed_ops for op in Op}),
            )
            for binding in bucket.bindings
        ],
    )


@router.get(
    "",
    response_model=ResolvedBucket,
    summary="The default upload bucket for a project",
    openapi_extra=BEARER_SECURITY,
)
async def resolve_default(
    caller: CallerDep,
    purpose: Literal["upload"],
    owner_project: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> ResolvedBucket:
    bucket = await caller.services.directory.default_upload(owner_project)
    if not bucket.is_active or not bucket.data_upload_allowed:
        # A suspended default must not steer uploads anywhere (suspension is a security control).
        raise BucketSuspended(f"the default upload bucket {bucket.name!r} is not accepting uploads")
    return resolved(bucket)


@router.get(
    "/{name}",
    response_model=ResolvedBucket,
    summary="A bucket's non-secret metadata",
    openapi_extra=BEARER_SECURITY,
)
async def resolve_bucket(name: str, caller: CallerDep) -> ResolvedBucket:
    return resolved(await caller.services.directory.get(name))
