"""Turning a data-path body into the requester the access layer decides for.

A user calling directly is the requester, and may not send the trusted-caller fields (a user
who could name another principal or an authz list would make the registry a confused deputy).
A trusted caller must say on whose behalf it acts and for which record's authz.
"""

from __future__ import annotations

from app.access.delegation import Delegation, Legacy
from app.access.service import Requester
from app.api.schemas import OnBehalf
from app.authz.callers import ServiceCaller
from app.authz.principals import Principal
from app.authz.tokens import Identity
from app.config import Settings
from app.container import Services
from app.errors import AccessDenied, InvalidInput, OnBehalfOfInvalid, Unauthenticated
from app.registry.validation import validate_resource_path

MAX_METHODS = 4


async def requester_for(
    services: Services, who: Identity | ServiceCaller, body: OnBehalf
) -> Requester:
    if isinstance(who, Identity):
        if body.delegates:
            raise AccessDenied(
                "on_behalf_of, authz, method, audit and legacy are for trusted callers only"
            )
        return who
    return Delegation(
        caller=who,
        principal=await _principal(services, body),
        authz=_authz(body, services.settings),
        methods=_methods(body.method),
        legacy=Legacy(body.legacy) if body.legacy else None,
        audit=body.audit.model_dump(exclude_none=True) if body.audit else None,
    )


async def _principal(services: Services, body: OnBehalf) -> Principal:
    on_behalf_of = body.on_behalf_of
    if on_behalf_of is None:
        raise InvalidInput(
            "on_behalf_of: required from a trusted caller (token, username or anonymous)"
        )
    if on_behalf_of.token is not None:
        try:
            identity = await services.authenticator.authenticate_user(
                on_behalf_of.token, scopes=services.settings.data_scopes
            )
        except OnBehalfOfInvalid:
            raise
        except Unauthenticated as exc:
            raise OnBehalfOfInvalid(f"on_behalf_of.token: {exc.message}") from None
        return identity.principal
    if on_behalf_of.username is not None:
        return Principal.of_user(on_behalf_of.username)
    return Principal.anonymous()


def _authz(body: OnBehalf, settings: Settings) -> tuple[str, ...]:
    if body.authz is None:
        raise InvalidInput("authz: required from a trusted caller (the record's authz list)")
    if not body.authz:
        if body.legacy is None:
            raise InvalidInput(
                "authz: an empty list needs legacy ('acl' or 'uploader'): Fence's legacy rule"
            )
        if not settings.legacy_authz_enabled:
            raise AccessDenied("legacy authorization is turned off here; send the record's authz")
        return ()
    if body.legacy is not None:
        raise InvalidInput("legacy: only with an empty authz list")
    return tuple(dict.fromkeys(validate_resource_path(path, field="authz") for path in body.authz))


def _methods(method: str | list[str] | None) -> tuple[str, ...]:
    if method is None:
        return ()
    methods = [method] if isinstance(method, str) else method
    if not methods or len(methods) > MAX_METHODS:
        raise InvalidInput(f"method: one Arborist method or a list of 1-{MAX_METHODS}")
    if any(not isinstance(m, str) or not 0 < len(m) <= 64 for m in methods):
        raise InvalidInput("method: each method is a name of at most 64 characters")
    return tuple(methods)
