"""FastAPI dependencies: the service container, the caller's identity, the admin check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.authz import managers
from app.authz.callers import ServiceCaller
from app.authz.managers import Manager, admin_required, manager_of
from app.authz.tokens import Identity
from app.container import Services
from app.errors import AccessDenied, Unauthenticated
from app.registry.service import Actor

_bearer = HTTPBearer(auto_error=False, description="A Gen3 access token issued by Fence")


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_identity(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The verified caller: 401 for a missing, malformed, expired or foreign token, or one
    without the admin scopes."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
    return await services.authenticator.authenticate_user(
        credentials.credentials, scopes=services.settings.admin_scopes
    )


IdentityDep = Annotated[Identity, Depends(current_identity)]


async def admin_identity(services: ServicesDep, identity: IdentityDep) -> Identity:
    """The caller, if Arborist grants them ``bucket_admin``; 403 otherwise, 503 if it can't say."""
    settings = services.settings
    allowed = await services.authorizer.authorize(
        identity, settings.admin_service, settings.admin_method, settings.admin_resource
    )
    if not allowed:
        raise AccessDenied(admin_required(settings))
    return identity


AdminDep = Annotated[Identity, Depends(admin_identity)]


async def manager_identity(services: ServicesDep, identity: IdentityDep) -> Manager:
    """The caller as a bucket admin, or as a registrant of the projects Arborist's
    ``/auth/mapping`` names (``authz.managers``); 403 for anyone who is neither, 503 if
    Arborist can't say."""
    manager = await manager_of(services.authorizer, services.settings, identity)
    if manager is None:
        raise AccessDenied(admin_required(services.settings))
    return manager


ManagerDep = Annotated[Manager, Depends(manager_identity)]


async def may_manage(services: Services, manager: Manager, project_resource: str | None) -> bool:
    """Whether the caller may manage a bucket of ``project_resource`` (``authz.managers``)."""
    return await managers.may_manage(
        services.authorizer, services.settings, manager, project_resource
    )


@dataclass(frozen=True, slots=True)
class Caller:
    services: Services
    identity: Identity


@dataclass(frozen=True, slots=True)
class TrustedOrUserCaller:
    """A data-path caller that may also be a trusted service (which then acts for a user)."""

    services: Services
    caller: Identity | ServiceCaller


# Declares the bearer requirement in OpenAPI for routes that authenticate through ``Caller``.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def bearer_token(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
    return token.strip()


async def authenticated_caller(request: Request) -> Caller:
    """The service container and the verified user (with the data scopes), as ONE dependency.

    The data path runs on every transfer; each FastAPI dependency level costs tens of
    microseconds there, so this does in one step what ``ServicesDep`` + ``IdentityDep`` do.
    """
    services: Services = request.app.state.services
    token = bearer_token(request.headers.get("authorization"))
    identity = await services.authenticator.authenticate_user(
        token, scopes=services.settings.data_scopes
    )
    return Caller(services, identity)


async def trusted_or_user_caller(request: Request) -> TrustedOrUserCaller:
    """Like ``authenticated_caller``, but a trusted service's token is accepted too.

    A user still needs the data scopes; a service caller carries none and must be listed in
    ``TRUSTED_CALLERS`` (403 otherwise). What it may do for which user is the route's to decide.
    """
    services: Services = request.app.state.services
    token = bearer_token(request.headers.get("authorization"))
    who = await services.authenticator.authenticate(
        token, scopes=services.settings.data_scopes, allow_service=True
    )
    return TrustedOrUserCaller(services, who)


CallerDep = Annotated[Caller, Depends(authenticated_caller)]
TrustedOrUserCallerDep = Annotated[TrustedOrUserCaller, Depends(trusted_or_user_caller)]


def actor_for(request: Request, identity: Identity | Manager) -> Actor:
    if isinstance(identity, Manager):
        identity = identity.identity
    return Actor(identity.actor, request.scope.get("state", {}).get("request_id"))
