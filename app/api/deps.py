"""FastAPI dependencies: the service container, the caller's identity, the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.authz.tokens import Identity
from app.container import Services
from app.errors import AccessDenied, Unauthenticated
from app.registry.service import Actor

_bearer = HTTPBearer(auto_error=False, description="A Gen3 access token issued by Fence")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_identity(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The verified caller: 401 for a missing, malformed, expired or foreign token."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
    return await services.tokens.verify(credentials.credentials)


IdentityDep = Annotated[Identity, Depends(current_identity)]


async def admin_identity(services: ServicesDep, identity: IdentityDep) -> Identity:
    """The caller, if Arborist grants them ``bucket_admin``; 403 otherwise, 503 if it can't say."""
    settings = services.settings
    allowed = await services.authorizer.authorize(
        identity, settings.admin_service, settings.admin_method, settings.admin_resource
    )
    if not allowed:
        raise AccessDenied(
            f"{settings.admin_method} on {settings.admin_resource} is required for this endpoint"
        )
    return identity


AdminDep = Annotated[Identity, Depends(admin_identity)]


def actor_for(request: Request, identity: Identity) -> Actor:
    return Actor(identity.actor, request.scope.get("state", {}).get("request_id"))
