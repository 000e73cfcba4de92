"""Fence-shaped surfaces: its bucket list, batched presigning, and server-side deletes.

Each request (each batch item) is authorized exactly as ``POST /presign`` is: a direct user
for themself, or a trusted caller for the principal and record authz the item names.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.access.delegation import Delegation
from app.access.fence_buckets import fence_buckets
from app.access.service import PresignItem, Requester
from app.api.data import FastJSONResponse, url_json
from app.api.delegation import requester_for
from app.api.deps import BEARER_SECURITY, TrustedOrUserCaller, TrustedOrUserCallerDep
from app.api.errors import documented_errors
from app.api.routing import DataPathRoute
from app.api.schemas import (
    FenceBuckets,
    ObjectsDelete,
    ObjectsDeleted,
    PresignBatch,
    PresignBatchResults,
    PresignRequest,
)
from app.errors import InvalidInput, RegistryError
from app.registry.records import Op

router = APIRouter(tags=["fence"], route_class=DataPathRoute)


@router.get(
    "/fence/buckets",
    response_model=FenceBuckets,
    response_model_exclude_none=True,
    summary="Active buckets in Fence's /data/buckets shape",
    openapi_extra=BEARER_SECURITY,
    responses=documented_errors(
        {
            401: "Missing, invalid or expired token",
            503: "The database is unavailable",
        }
    ),
)
async def list_fence_buckets(caller: TrustedOrUserCallerDep) -> JSONResponse:
    return JSONResponse(await fence_buckets(caller.services.registry))


async def _item(
    caller: TrustedOrUserCaller, raw: dict[str, Any]
) -> tuple[Requester, PresignItem] | RegistryError:
    try:
        body = PresignRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        # Where and what only: pydantic's echo of the value could be anything the caller sent.
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return InvalidInput(message)
    try:
        requester = await requester_for(caller.services, caller.caller, body)
    except RegistryError as exc:
        return exc
    return requester, PresignItem(
        bucket=body.bucket,
        key=body.key,
        op=Op(body.op),
        expires_in=body.expires_in,
        user_project=body.user_project,
        resumable=body.resumable,
        unsigned=body.unsigned,
        audit=requester.audit if isinstance(requester, Delegation) else None,
    )


@router.post(
    "/presign/batch",
    response_model=PresignBatchResults,
    summary="Sign up to 100 URLs; each result is a URL or that request's error",
    openapi_extra=BEARER_SECURITY,
    responses=documented_errors(
        {
            400: "Not 1-100 requests (an invalid request fails alone, in its result)",
            401: "Missing, invalid or expired token",
        }
    ),
)
async def presign_batch(body: PresignBatch, caller: TrustedOrUserCallerDep) -> JSONResponse:
    items = [await _item(caller, raw) for raw in body.requests]
    outcomes = await caller.services.access.presign_batch(items)
    results: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, RegistryError):
            results.append(
                {
                    "error": {"code": outcome.code, "message": outcome.message},
                    "status": outcome.status_code,
                }
            )
        else:
            results.append(url_json(outcome))
    return FastJSONResponse({"results": results})


@router.post(
    "/objects/delete",
    response_model=ObjectsDeleted,
    summary="Delete an object, or every object under a prefix, in the store",
    openapi_extra=BEARER_SECURITY,
    responses=documented_errors(
        {
            400: "Invalid input: key and prefix both or neither, a bad key or prefix, more"
            " than 1,000 objects under the prefix, or a gcp bucket",
            401: "Missing, invalid or expired token",
            403: "Denied by the bindings or Arborist, or the bucket is suspended",
            404: "Unknown bucket",
            503: "Arborist, the database, the secrets manager or the store is unavailable",
        }
    ),
)
async def delete_objects(body: ObjectsDelete, caller: TrustedOrUserCallerDep) -> ObjectsDeleted:
    requester = await requester_for(caller.services, caller.caller, body)
    deleted = await caller.services.access.delete_objects(
        requester, body.bucket, key=body.key, prefix=body.prefix
    )
    return ObjectsDeleted(deleted=deleted)
