"""Request bodies: refused unread when the caller brought no credentials, and bounded by route.

FastAPI reads and parses a body before any dependency checks the token, so without this an
anonymous caller could make every replica buffer and decode whatever it sends. The checks here
happen on the headers alone; only a request that passes them has its body read, and that body
is counted as it streams in (chunked bodies announce no length).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response

KIB = 1024
MIB = 1024 * KIB

# The one table of body limits: the largest body each route accepts. Everything not listed
# (the data path's single requests, every admin route) gets DEFAULT_BODY_LIMIT, which holds a
# request with a relayed user token, a 4,096-character key and its authz list many times over.
BODY_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        # Up to 100 presign requests, each of which may relay a user's token.
        "/presign/batch": 1 * MIB,
        # Up to 10,000 parts of about 60 bytes each.
        "/multipart/complete": 1 * MIB,
    }
)
DEFAULT_BODY_LIMIT = 64 * KIB

# Methods whose requests may carry a body: they must bring credentials before it is read.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Path prefixes whose routes accept a browser session cookie instead of an Authorization
# header; a request there with a Cookie header counts as bringing credentials. The console
# signs in with Fence's access_token cookie (its posts also need the CSRF header).
SESSION_COOKIE_PATHS: tuple[str, ...] = ("/console/",)

_MISSING_TOKEN = "an access token is required (Authorization: Bearer <token>)"  # noqa: S105


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its route's limit (already answered)."""


class BodyLimitMiddleware:
    """Pure ASGI: 401 before reading the body of an uncredentialed request, 413 past the limit.

    The limit is checked from ``Content-Length`` before anything is read and again on every
    chunk received, so a body that lies about its length or announces none (chunked) is cut
    off as soon as it passes the limit. Refusals carry ``Connection: close`` so the server
    drops the connection instead of draining the rest of the body.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int] = BODY_LIMITS,
        default_limit: int = DEFAULT_BODY_LIMIT,
        cookie_paths: Iterable[str] = SESSION_COOKIE_PATHS,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default_limit = default_limit
        self.cookie_paths = tuple(cookie_paths)

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default_limit)

    def _credentials(self, path: str, authorization: bytes | None, cookie: bytes | None) -> bool:
        """Whether the request brings something that could authenticate it; the token itself
        is verified later, by the route, once the body is known to be small."""
        if authorization and authorization.strip():
            return True
        return bool(cookie and cookie.strip()) and any(
            path.startswith(prefix) for prefix in self.cookie_paths
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        authorization = cookie = length = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"cookie":
                cookie = value
        anonymous = not self._credentials(path, authorization, cookie)
        if anonymous and scope.get("method") in BODY_METHODS:
            await _refuse(scope, send, 401, "unauthenticated", _MISSING_TOKEN)
            return
        limit = self.limit_for(path)
        if length is not None:
            if not length.isdigit():
                await _refuse(scope, send, 400, "invalid_request", "Content-Length must be digits")
                return
            if int(length) > limit:
                await _refuse(scope, send, 413, "payload_too_large", _too_large(limit))
                return

        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    await _refuse(scope, send, 413, "payload_too_large", _too_large(limit))
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            # Once the 413 went out, whatever the app answers about the cut-off body is moot.
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def _too_large(limit: int) -> str:
    return f"the request body is larger than this endpoint accepts ({limit} bytes)"


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    response = error_response(status, code, message)
    response.headers["connection"] = "close"

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)
