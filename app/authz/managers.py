"""Who may manage which buckets (docs/self-service.md): the one rule behind the admin API and
the console.

A bucket admin (``bucket_admin`` on ``ADMIN_RESOURCE``) manages every bucket. A project
registrant (``bucket_register`` on project paths, as Arborist's ``/auth/mapping`` lists them)
manages only the buckets whose ``project_resource`` lies on or below one of those paths, and
each single-bucket decision asks Arborist again, so an OAuth client acting for the user is
held to the client's own grants too.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.authz.arborist import Authorizer
from app.authz.policy import path_covers
from app.authz.tokens import Identity
from app.config import Settings
from app.errors import AccessDenied


@dataclass(frozen=True, slots=True)
class Manager:
    """Who is managing buckets: a bucket admin (every bucket), or a project registrant
    holding ``bucket_register`` on ``projects`` (their buckets only)."""

    identity: Identity
    is_admin: bool
    projects: tuple[str, ...] = ()

    def require_admin(self, settings: Settings) -> None:
        if not self.is_admin:
            raise AccessDenied(admin_required(settings))


def admin_required(settings: Settings, what: str = "this endpoint") -> str:
    return f"{settings.admin_method} on {settings.admin_resource} is required for {what}"


async def manager_of(
    authorizer: Authorizer, settings: Settings, identity: Identity
) -> Manager | None:
    """The caller as a bucket admin, or as a registrant of the projects Arborist's
    ``/auth/mapping`` names; None for someone who is neither. Raises ``DependencyUnavailable``
    when Arborist cannot say (callers fail closed)."""
    if await authorizer.authorize(
        identity, settings.admin_service, settings.admin_method, settings.admin_resource
    ):
        return Manager(identity, is_admin=True)
    projects = await authorizer.granted_resources(
        identity, settings.admin_service, settings.register_method
    )
    if not projects:
        return None
    return Manager(identity, is_admin=False, projects=projects)


async def may_manage(
    authorizer: Authorizer, settings: Settings, manager: Manager, project_resource: str | None
) -> bool:
    """Whether ``manager`` may manage a bucket of ``project_resource``: admins always; a
    registrant when Arborist grants ``bucket_register`` there (asked as for any decision, so a
    client's token is held to what the client may do too)."""
    if manager.is_admin:
        return True
    if not project_resource or not any(
        path_covers(path, project_resource) for path in manager.projects
    ):
        return False
    return await authorizer.authorize(
        manager.identity, settings.admin_service, settings.register_method, project_resource
    )
