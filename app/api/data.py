"""Data path (docs/api.md): presigned URLs and multipart uploads, with the end user's token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.access.delegation import Delegation
from app.api.delegation import requester_for
from app.api.deps import BEARER_SECURITY, TrustedOrUserCallerDep
from app.api.errors import documented_errors
from app.api.routing import DataPathRoute
from app.api.schemas import (
    MultipartAbort,
    MultipartComplete,
    MultipartInit,
    MultipartPartRequest,
    MultipartStarted,
    Ok,
    PresignedParts,
    PresignedUrl,
    PresignRequest,
)
from app.registry.records import Op
from app.storage.base import PresignedRequest

_ERRORS = documented_errors(
    {
        400: "Invalid input (bucket, key, op, part number)",
        401: "Missing, invalid or expired token",
        403: "Denied by the bindings or Arborist, the bucket is suspended or takes no uploads,"
        " or an unsigned URL for a bucket that is not public",
        404: "Unknown bucket",
        503: "Arborist, the database, the secrets manager or the store is unavailable",
    }
)

router = APIRouter(tags=["data"], responses=_ERRORS, route_class=DataPathRoute)


def url_json(signed: PresignedRequest) -> dict[str, Any]:
    """``signed`` in the documented PresignedUrl shape, JSON-ready."""
    return {
        "url": signed.url,
        "method": signed.method,
        "expires_at": signed.expires_at.isoformat() if signed.expires_at else None,
        "headers": signed.headers,
    }


class FastJSONResponse(JSONResponse):
    """The same bytes as ``JSONResponse`` (compact, UTF-8) for the data path's answers (strings,
    booleans, integers, null), serialised by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _url(signed: PresignedRequest) -> JSONResponse:
    # Built directly in the documented PresignedUrl shape: skipping response-model validation
    # matters on the path Fence calls for every download and upload.
    return FastJSONResponse(url_json(signed))


@router.post(
    "/presign",
    response_model=PresignedUrl,
    summary="Sign a read, write or delete URL",
    openapi_extra=BEARER_SECURITY,
)
async def presign(body: PresignRequest, caller: TrustedOrUserCallerDep) -> JSONResponse:
    requester = await requester_for(caller.services, caller.caller, body)
    signed = await caller.services.access.presign(
        requester,
        body.bucket,
        body.key,
        Op(body.op),
        body.expires_in,
        user_project=body.user_project,
        resumable=body.resumable,
        unsigned=body.unsigned,
        audit=requester.audit if isinstance(requester, Delegation) else None,
    )
    return _url(signed)


@router.post(
    "/multipart/init",
    response_model=MultipartStarted,
    summary="Start a multipart upload",
    openapi_extra=BEARER_SECURITY,
)
async def multipart_init(body: MultipartInit, caller: TrustedOrUserCallerDep) -> MultipartStarted:
    requester = await requester_for(caller.services, caller.caller, body)
    return MultipartStarted(
        upload_id=await caller.services.access.multipart_init(requester, body.bucket, body.key)
    )


@router.post(
    "/multipart/presign",
    response_model=PresignedUrl | PresignedParts,
    summary="Sign one part's upload URL, or up to 10,000 parts' in one call",
    openapi_extra=BEARER_SECURITY,
)
async def multipart_presign(
    body: MultipartPartRequest, caller: TrustedOrUserCallerDep
) -> JSONResponse:
    requester = await requester_for(caller.services, caller.caller, body)
    if body.part_numbers is None:
        assert body.part_number is not None  # the model requires exactly one
        signed = await caller.services.access.multipart_presign(
            requester, body.bucket, body.key, body.upload_id, body.part_number, body.expires_in
        )
        return _url(signed)
    urls = await caller.services.access.multipart_presign_parts(
        requester, body.bucket, body.key, body.upload_id, body.part_numbers, body.expires_in
    )
    first = urls[0]
    # A long list may straddle a second: the answer promises the earliest expiry of all.
    expires_at = min((signed.expires_at for signed in urls if signed.expires_at), default=None)
    return FastJSONResponse(
        {
            "parts": [
                {"part_number": number, "url": signed.url}
                for number, signed in zip(body.part_numbers, urls, strict=True)
            ],
            "method": first.method,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "headers": first.headers,
        }
    )


@router.post(
    "/multipart/complete",
    response_model=Ok,
    summary="Complete a multipart upload",
    openapi_extra=BEARER_SECURITY,
)
async def multipart_complete(body: MultipartComplete, caller: TrustedOrUserCallerDep) -> Ok:
    parts = [(part.part_number, part.etag) for part in body.parts]
    requester = await requester_for(caller.services, caller.caller, body)
    await caller.services.access.multipart_complete(
        requester, body.bucket, body.key, body.upload_id, parts
    )
    return Ok()


@router.post(
    "/multipart/abort",
    response_model=Ok,
    summary="Abort a multipart upload",
    openapi_extra=BEARER_SECURITY,
)
async def multipart_abort(body: MultipartAbort, caller: TrustedOrUserCallerDep) -> Ok:
    requester = await requester_for(caller.services, caller.caller, body)
    await caller.services.access.multipart_abort(requester, body.bucket, body.key, body.upload_id)
    return Ok()
