"""Operational endpoints (Gen3 conventions); the only ones that answer without a token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/_status", summary="Liveness")
async def status() -> dict[str, object]:
    return {"ok": True, "message": "Feelin good!"}


@router.get(
    "/_status/ready",
    summary="Readiness: the database answers",
    responses={503: {"description": "The database is unreachable"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    if await services.db.ping():
        return JSONResponse({"ok": True, "database": "ok"})
    return JSONResponse(
        {"ok": False, "error": "dependency_unavailable", "message": "database is unreachable"},
        status_code=503,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics"}},
)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/_version", summary="Service version")
async def version() -> dict[str, str]:
    return {"version": __version__}
