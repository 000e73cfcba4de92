"""The app factory. Nothing imports this module; the CLI and tests call ``create_app``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import __version__
from app.api import admin, credentials, data, fence, resolve, status
from app.api.errors import install_error_handlers
from app.api.limits import BODY_METHODS, BodyLimitMiddleware
from app.config import Settings
from app.console import views as console
from app.container import Services
from app.dev import DevMode
from app.logs import RequestIdMiddleware
from app.metrics import Metrics
from app.tracing import Tracing

log = logging.getLogger(__name__)

DESCRIPTION = """Buckets as data for Gen3: admins register cloud buckets over REST, credentials
stay in secrets managers, Arborist decides who may touch which bucket or prefix, and Fence asks
this service to resolve buckets and sign upload/download URLs."""


def create_app(
    settings: Settings | None = None,
    *,
    dev: DevMode | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    settings = settings or Settings()
    if tracing is None and settings.tracing_enabled:
        tracing = Tracing(service_name=settings.tracing_service_name)
    metrics = Metrics(tracing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings, metrics=metrics, dev=dev)
        app.state.services = services
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise show up as latency spikes under load.
        gc.collect()
        gc.freeze()
        if dev is not None:
            log.warning(
                "LOCAL DEVELOPMENT MODE: tokens are signed by a local key and authorization"
                " comes from %s; never expose this instance",
                dev.policy_file,
            )
        try:
            yield
        finally:
            await services.aclose()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="Bucket Registry",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    # Inside the request-id middleware, so refusals get an id and an access-log line too.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestIdMiddleware, observe=metrics.observe_request, tracing=tracing)
    # Routes are matched in order: the data path Fence calls on every transfer goes first.
    app.include_router(data.router)
    app.include_router(fence.router)
    app.include_router(credentials.router)
    app.include_router(resolve.router)
    app.include_router(status.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    _install_openapi(app)
    return app


_BODY_REFUSALS = {
    "401": "No credentials (refused before the body is read)",
    "413": "The body is larger than this endpoint accepts",
}


def _install_openapi(app: FastAPI) -> None:
    """Document what the service really answers: 400 (not FastAPI's 422) for invalid input."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in spec.get("paths", {}).values():
            for method, operation in operations.items():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Invalid input",
                        "content": {"application/json": {"schema": error_ref}},
                    }
                if method.upper() in BODY_METHODS:
                    # Answered by BodyLimitMiddleware before the route sees the request.
                    for status, description in _BODY_REFUSALS.items():
                        responses.setdefault(
                            status,
                            {
                                "description": description,
                                "content": {"application/json": {"schema": error_ref}},
                            },
                        )
        schemas = spec.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """Entry point for ``uvicorn --factory`` with several workers."""
    return create_app(Settings())
