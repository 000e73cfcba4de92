"""Who is using the console, and whether a state change really comes from its own pages.

The console signs people in the way other Gen3 services do: with the ``access_token`` cookie
Fence sets for the commons. Only ``/console`` routes read that cookie; the JSON API keeps to
bearer tokens, so a cookie a browser attaches on its own can never drive it.

State changes carry the ``x-csrf-token`` header equal to the ``csrftoken`` cookie, the
double-submit check Gen3's revproxy applies: a cross-site page can make a browser send cookies
but can neither read them nor add a custom header to a plain form post.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Request

from app.authz.managers import Manager, admin_required, manager_of
from app.authz.tokens import Identity
from app.container import Services
from app.errors import AccessDenied, Unauthenticated

TOKEN_COOKIE = "access_token"  # noqa: S105 - a cookie name, not a secret
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "x-csrf-token"
HOME = "/console/buckets"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A local console path: no scheme, no host, no "//" or "\" a browser could read as one, no
# control characters, no dot segments.
_LOCAL_PATH = re.compile(r"/console(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(?:\?[^\s#\\]*)?")


class SignInRequired(Exception):
    """No usable session: the browser is sent to Fence's login and comes back to ``back_to``."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def safe_return(address: str | None) -> str:
    """``address`` if it is a path inside the console, else the console's home page."""
    if not address or len(address) > 2048 or not _LOCAL_PATH.fullmatch(address):
        return HOME
    parts = urlsplit(address)
    if parts.scheme or parts.netloc or "//" in parts.path:
        return HOME
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return HOME
    return address


def login_url(user_api: str, back_to: str) -> str:
    """Fence's login page, told (``redirect``) where to send the browser afterwards.

    The return address stays relative: Fence and the console share the commons' host, and
    Fence itself refuses redirects to other domains.
    """
    return f"{user_api.rstrip('/')}/login?redirect={quote(safe_return(back_to), safe='/')}"


def request_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """The signed-in user as the admin API sees them: a bucket admin, or a registrant of
    ``projects`` (``authz.managers``)."""

    manager: Manager

    @property
    def name(self) -> str:
        return self.manager.identity.actor

    @property
    def is_admin(self) -> bool:
        return self.manager.is_admin

    @property
    def projects(self) -> tuple[str, ...]:
        return self.manager.projects


async def signed_in(request: Request, services: Services) -> Identity:
    """The identity behind the ``access_token`` cookie; ``SignInRequired`` when there is none
    or it no longer verifies (expired, foreign, malformed)."""
    token = request.cookies.get(TOKEN_COOKIE, "").strip()
    back_to = request_path(request) if request.method in SAFE_METHODS else HOME
    if not token:
        raise SignInRequired(back_to)
    try:
        return await services.authenticator.authenticate_user(
            token, scopes=services.settings.admin_scopes
        )
    except Unauthenticated:
        raise SignInRequired(back_to) from None


async def console_user(request: Request, services: Services) -> ConsoleUser:
    """The signed-in user, decided as the admin API decides it (``authz.managers``): a bucket
    admin or a project registrant; 403 for anyone who is neither, 503 when Arborist cannot say
    (the console fails closed)."""
    identity = await signed_in(request, services)
    settings = services.settings
    manager = await manager_of(services.authorizer, settings, identity)
    if manager is None:
        raise AccessDenied(
            f"the console needs {settings.admin_method} on {settings.admin_resource}, or"
            f" {settings.register_method} on a project's resource path; ask the commons"
            " operators for access"
        )
    return ConsoleUser(manager)


def require_admin(user: ConsoleUser, services: Services, what: str = "this page") -> None:
    if not user.is_admin:
        raise AccessDenied(admin_required(services.settings, what))


def check_csrf(request: Request) -> None:
    """Refuse a state change whose ``x-csrf-token`` header does not match the cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise AccessDenied("missing or mismatched CSRF token; reload the page and try again")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
