"""``POST /credentials``: scoped temporary keys for bulk tools (docs/credentials.md)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.delegation import requester_for
from app.api.deps import BEARER_SECURITY, TrustedOrUserCallerDep
from app.api.errors import documented_errors
from app.api.schemas import CredentialsRequest, DownscopedAccessToken, VendedCredentials
from app.storage.gcs.downscope import DownscopedToken
from app.storage.session_policy import CredentialOp

router = APIRouter(tags=["data"])

# Keys in a response must not be kept by a browser, a proxy or a CDN.
_NOT_STORED = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "/credentials",
    response_model=VendedCredentials | DownscopedAccessToken,
    summary="Vend temporary credentials scoped to a prefix: S3 keys, or a gcp access token",
    openapi_extra=BEARER_SECURITY,
    responses=documented_errors(
        {
            400: "Invalid input (prefix, ops, duration, a policy too large for STS), or the"
            " bucket vends no credentials (or, on gcp, delete asked without write, a prefix"
            " with a quote or backslash, or a static key's token shorter than an hour)",
            401: "Missing, invalid or expired token",
            403: "Denied by the bindings or Arborist for one of the ops, the bucket is"
            " suspended or takes no uploads",
            404: "Unknown bucket",
            503: "Arborist, the database, the secrets manager or STS (AWS's, the store's or"
            " Google's) is unavailable, or STS refused the scoped session (the role's trust"
            " policy; on gcp, the service account's roles on the bucket)",
        }
    ),
)
async def vend_credentials(
    body: CredentialsRequest, caller: TrustedOrUserCallerDep
) -> JSONResponse:
    requester = await requester_for(caller.services, caller.caller, body)
    vended = await caller.services.access.vend_credentials(
        requester,
        body.bucket,
        body.prefix,
        [CredentialOp(op) for op in body.ops],
        body.duration,
    )
    answer: dict[str, str | None]
    if isinstance(vended, DownscopedToken):
        answer = {
            "access_token": vended.access_token,
            "expiration": vended.expiration.isoformat(),
            "bucket": body.bucket,
            "prefix": body.prefix,
            "provider": "gcp",
        }
        return JSONResponse(answer, headers=_NOT_STORED)
    answer = {
        "access_key_id": vended.access_key_id,
        "secret_access_key": vended.secret_access_key,
        "session_token": vended.session_token,
        "expiration": vended.expiration.isoformat(),
        "region": vended.region,
        "endpoint": vended.endpoint,
        "bucket": body.bucket,
        "prefix": body.prefix,
    }
    return JSONResponse(answer, headers=_NOT_STORED)
