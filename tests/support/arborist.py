"""An Arborist stub over real HTTP, speaking Arborist's ``/auth/request`` wire format and
answering as Arborist's own handler does (uc-cdis/arborist ``handleAuthRequest``):

* ``user.token``: decoded like Arborist (signature and expiry; the ``scope`` claim must be a
  list holding ``openid``, or the request's ``user.scope``; ``context`` required) → 401 when it
  cannot; the user comes from ``context.user.name``, the client from ``azp``;
* ``user.user_id``: that user, no token involved; no ``user`` at all: the anonymous policies;
* user names match case-insensitively; a user also holds the anonymous and all-users policies;
* a token naming a client (``azp``) is granted only what both the user and the client hold
  (a client's policies are its own, without group policies);
* a token with neither a user nor a client → 400;
* resource paths become ltree (malformed → 400 "ltree syntax error"); a resource without a
  leading ``/`` is a tag, and the stub defines none, so it is never granted;
* several requests: the first denial answers false, later requests are not even looked at;
* ``/auth/mapping`` (``handleAuthMappingGET``/``POST``): the user from the Authorization header's
  token (a client-only token: the client's own mapping), else the body's ``username`` or
  ``clientID`` (exactly one), else the anonymous group; the answer maps each granted path to
  its ``{service, method}`` actions (the stub has no resource tree, so only the granted roots).

Faults can be switched on: down (connection refused), ``fail_with`` (that status, Arborist's
error body), ``answer_with`` (any status and JSON body), ``answer_raw`` (any status and
bytes, e.g. a proxy's HTML page), ``jwks_broken`` (Arborist cannot fetch its
own keys: every token → 401) and ``delay``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt

from app.authz.policy import LtreeSyntaxError, PolicyDocument, arborist_ltree
from tests.support.fence import FenceIssuer
from tests.support.net import BackgroundHTTPServer, JsonHandler

ADMIN_POLICY = {
    "id": "bucket_registry_admin",
    "role_ids": ["bucket_admin"],
    "resource_paths": ["/services/bucket-registry"],
}
ROLES = [
    {
        "id": "bucket_admin",
        "permissions": [
            {"id": "ba", "action": {"service": "bucket-registry", "method": "bucket_admin"}}
        ],
    },
    {
        "id": "reader",
        "permissions": [{"id": "r", "action": {"service": "fence", "method": "read-storage"}}],
    },
    {
        "id": "writer",
        "permissions": [
            {"id": "w", "action": {"service": "fence", "method": "write-storage"}},
            {"id": "d", "action": {"service": "fence", "method": "delete"}},
        ],
    },
    {
        "id": "uploader",
        "permissions": [{"id": "u", "action": {"service": "fence", "method": "file_upload"}}],
    },
    {"id": "everything", "permissions": [{"id": "all", "action": {"service": "*", "method": "*"}}]},
    {
        "id": "bucket_register",
        "permissions": [
            {"id": "br", "action": {"service": "bucket-registry", "method": "bucket_register"}}
        ],
    },
]
_USER_FIELDS = {"token", "user_id", "policies", "scope"}
_REQUEST_FIELDS = {"resource", "action", "constraints"}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "code": status}}


class _Handler(JsonHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, "Healthy")
        elif self.path.split("?")[0] == "/auth/mapping":
            self._answer(self.stub.map_request("GET", self.headers.get("Authorization"), b""))
        else:
            self.send_json(404, {"error": {"message": "not found", "code": 404}})

    def do_POST(self) -> None:
        stub = self.stub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if stub.delay:
            time.sleep(stub.delay)
        if self.path not in ("/auth/request", "/auth/mapping"):
            self.send_json(404, {"error": {"message": "not found", "code": 404}})
            return
        if stub.fail_with:
            self.send_json(
                stub.fail_with, {"error": {"message": "arborist exploded", "code": stub.fail_with}}
            )
            return
        if self.path == "/auth/mapping":
            self._answer(stub.map_request("POST", self.headers.get("Authorization"), body))
            return
        try:
            request = json.loads(body)
        except ValueError as exc:
            status, answer = _error(400, f"could not parse auth request from JSON: {exc}")
        else:
            status, answer = stub.judge(request)
        self._answer((status, answer))

    def _answer(self, judged: tuple[int, Any]) -> None:
        stub = self.stub
        status, answer = judged
        if stub.answer_raw is not None:
            status, raw = stub.answer_raw
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        if stub.answer_with is not None:
            status, answer = stub.answer_with
        self.send_json(status, answer)


class ArboristStub:
    def __init__(self, issuer: FenceIssuer) -> None:
        self.issuer = issuer
        self.server = BackgroundHTTPServer(_Handler)
        self.server.stub = self  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self.reset()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> ArboristStub:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        self.delay = 0.0
        self.fail_with: int | None = None
        self.answer_with: tuple[int, Any] | None = None
        self.answer_raw: tuple[int, bytes] | None = None
        self.jwks_broken = False
        self.requests: list[dict[str, Any]] = []
        self.mapping_requests: list[dict[str, Any]] = []
        self.policies: list[dict[str, Any]] = [ADMIN_POLICY]
        self.users: dict[str, list[str]] = {"admin": ["bucket_registry_admin"]}
        self.clients: dict[str, list[str]] = {}
        self.anonymous_policies: list[str] = []
        self.all_users_policies: list[str] = []

    def _policy(self, owner: str, role: str, resource_paths: tuple[str, ...]) -> str:
        policy_id = f"{owner}-{role}-{len(self.policies)}"
        self.policies.append(
            {"id": policy_id, "role_ids": [role], "resource_paths": list(resource_paths)}
        )
        return policy_id

    def grant(self, user: str, role: str, *resource_paths: str) -> None:
        """Give ``user`` the role on the paths (through a policy named after them)."""
        self.users.setdefault(user, []).append(self._policy(user, role, resource_paths))

    def grant_client(self, client_id: str, role: str, *resource_paths: str) -> None:
        """Give an OAuth client (a token's ``azp``) the role on the paths."""
        self.clients.setdefault(client_id, []).append(
            self._policy(f"client-{client_id}", role, resource_paths)
        )

    def grant_anonymous(self, role: str, *resource_paths: str) -> None:
        """The role on the paths for everyone, token or not (Arborist's ``anonymous`` group)."""
        self.anonymous_policies.append(self._policy("anonymous", role, resource_paths))

    def grant_all_users(self, role: str, *resource_paths: str) -> None:
        """The role on the paths for every user (Arborist's ``logged-in`` group)."""
        self.all_users_policies.append(self._policy("logged-in", role, resource_paths))

    def make_admin(self, user: str) -> None:
        self.users.setdefault(user, []).append("bucket_registry_admin")

    @property
    def call_count(self) -> int:
        return len(self.requests)

    def _document(self) -> PolicyDocument:
        return PolicyDocument(
            {
                "authz": {
                    "roles": ROLES,
                    "policies": self.policies,
                    "anonymous_policies": self.anonymous_policies,
                    "all_users_policies": self.all_users_policies,
                },
                "users": {name: {"policies": ids} for name, ids in self.users.items()},
                "clients": {name: {"policies": ids} for name, ids in self.clients.items()},
            }
        )

    def _decode(self, token: str, scopes: list[str]) -> tuple[str, str] | str:
        """(user name, client id) from the token as Arborist reads it, or why it cannot."""
        if self.jwks_broken:
            return "error decoding token: could not fetch the keys to validate this token"
        try:
            claims = self.issuer.decode(token)
        except (jwt.InvalidTokenError, KeyError) as exc:
            return f"error decoding token: {exc}"
        scope = claims.get("scope")
        if scope is None:
            return "error decoding token: token missing required field: scope"
        if not isinstance(scope, list) or not all(isinstance(item, str) for item in scope):
            return "error decoding token: field `scope` has wrong type; expected []string"
        for wanted in scopes:
            if wanted not in scope:
                return f"error decoding token: token missing required scope: {wanted}"
        context = claims.get("context")
        if context is None:
            return "failed to decode token: missing required field `context`"
        if not isinstance(context, dict):
            return "failed to decode token: field `context` has wrong type"
        username = ""
        if "user" in context:
            user = context["user"]
            if not isinstance(user, dict):
                return "failed to decode token: field `user` has wrong type"
            if not isinstance(user.get("name"), str):
                return "failed to decode token: missing required field `name`"
            username = user["name"]
        client = claims.get("azp", "")
        if not isinstance(client, str):
            return "failed to decode token: field `azp` has wrong type"
        return username, client

    def mapping_for(self, username: str | None) -> dict[str, list[dict[str, str]]]:
        """What ``/auth/mapping`` answers for the user (None: the anonymous group alone)."""
        document = self._document()
        return {
            path: [{"service": perm.service, "method": perm.method} for perm in held]
            for path, held in document.mapping(username).items()
        }

    def map_request(self, verb: str, authorization: str | None, body: bytes) -> tuple[int, Any]:
        """``GET``/``POST /auth/mapping`` as Arborist's handlers answer them: the user from the
        token in the Authorization header, else (POST) from the body's ``username`` or
        ``clientID``, else the anonymous group's mapping."""
        with self._lock:
            self.mapping_requests.append({"verb": verb, "token": authorization, "body": body})
        if authorization:
            token = authorization.removeprefix("Bearer ").removeprefix("bearer ")
            decoded = self._decode(token, ["openid"])
            if isinstance(decoded, str):
                message = f"tried to get username from jwt, but jwt decode failed: {decoded}"
                # GET answers a bare string with 400; POST an error body with 401.
                return (400, message) if verb == "GET" else _error(401, message)
            username, client = decoded
            if username:
                return 200, self.mapping_for(username)
            if client and verb == "POST":
                return 200, self._client_mapping(client)
            return _error(401, "invalid token (no username or client ID)")
        if verb == "POST" and body:
            try:
                request = json.loads(body)
            except ValueError as exc:
                return _error(400, f"could not parse JSON: {exc}")
            if not isinstance(request, dict):
                return _error(400, "could not parse JSON: not an object")
            username, client = request.get("username") or "", request.get("clientID") or ""
            if bool(username) == bool(client):
                return _error(
                    400,
                    "must provide a token or specify exactly one of `username` or `clientID`"
                    " in the request body",
                )
            if username:
                return 200, self.mapping_for(username)
            return 200, self._client_mapping(client)
        return 200, self.mapping_for(None)

    def _client_mapping(self, client: str) -> dict[str, list[dict[str, str]]]:
        document = self._document()
        return {
            path: [{"service": perm.service, "method": perm.method} for perm in held]
            for path, held in document.mapping(
                None, policies=document.client_policies(client)
            ).items()
        }

    def judge(self, request: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
        if not isinstance(request, dict):
            return _error(400, "could not parse auth request from JSON")
        user = request.get("user", {})
        if not isinstance(user, dict):
            return _error(400, "could not parse auth request from JSON: user")
        if "user" in request:
            unexpected = set(user) - _USER_FIELDS
            if unexpected:
                return _error(400, f"auth request contains unexpected fields: {sorted(unexpected)}")
            if "user_id" not in user and "token" not in user:
                return _error(400, "auth request missing required fields: [token]")
        token = user.get("token") or ""
        user_id = user.get("user_id") or ""
        anonymous = not token and not user_id
        username, client = user_id, ""
        if token:
            decoded = self._decode(token, list(user.get("scope") or ["openid"]))
            if isinstance(decoded, str):
                return _error(401, decoded)
            username, client = decoded
        items = ([request["request"]] if request.get("request") else []) + list(
            request.get("requests") or []
        )
        if not items:
            return _error(400, "auth request missing resources")
        document = self._document()
        for item in items:
            if not isinstance(item, dict) or not {"resource", "action"} <= set(item):
                return _error(400, "auth request missing required fields: [resource action]")
            if set(item) - _REQUEST_FIELDS:
                return _error(400, "auth request contains unexpected fields")
            action = item["action"] if isinstance(item["action"], dict) else {}
            service, method = action.get("service", ""), action.get("method", "")
            resource = item["resource"]
            if not isinstance(resource, str):
                return _error(400, "could not parse auth request from JSON: resource")
            if anonymous:
                verdict = self._allows(document, None, None, service, method, resource)
                who = "could not authorize"
            else:
                if not username and not client:
                    return _error(
                        400,
                        "missing both username and policies in request (at least one is"
                        " required when no client ID is provided)",
                    )
                verdict = self._allows(document, username, client, service, method, resource)
                who = "could not authorize user"
            if isinstance(verdict, str):
                return _error(400, f"{who}: {verdict}")
            if not verdict:
                return 200, {"auth": False}
        return 200, {"auth": True}

    @staticmethod
    def _allows(
        document: PolicyDocument,
        username: str | None,
        client: str | None,
        service: str,
        method: str,
        resource: str,
    ) -> bool | str:
        if not resource.startswith("/"):
            # A tag; none are defined here (an empty one is no resource at all).
            return "missing resource in auth request" if not resource else False
        try:
            arborist_ltree(resource)
        except LtreeSyntaxError as exc:
            # Database errors reach the caller with the driver's prefix.
            return f"pq: {exc}" if "ltree" in str(exc) or "label" in str(exc) else str(exc)
        if username is None:  # anonymous
            return document.allows(None, service, method, resource)
        if username and not document.allows(username, service, method, resource):
            return False
        if client and not document.allows(
            None, service, method, resource, policies=document.client_policies(client)
        ):
            return False
        return True
