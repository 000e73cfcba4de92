"""An Arborist stub over real HTTP, speaking Arborist's ``/auth/request`` wire format.

It decodes the caller's token the way Arborist does (signature, expiry; user from
``context.user.name``, client from ``azp``), then evaluates Arborist-format policies.
Faults can be switched on: down (connection refused), erroring (500) and slow.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt

from app.authz.policy import PolicyDocument
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
    {"id": "everything", "permissions": [{"id": "all", "action": {"service": "*", "method": "*"}}]},
]


class _Handler(JsonHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, "Healthy")
        else:
            self.send_json(404, {"error": {"message": "not found", "code": 404}})

    def do_POST(self) -> None:
        stub = self.stub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if stub.delay:
            time.sleep(stub.delay)
        if self.path != "/auth/request":
            self.send_json(404, {"error": {"message": "not found", "code": 404}})
            return
        if stub.fail_with:
            self.send_json(
                stub.fail_with, {"error": {"message": "arborist exploded", "code": stub.fail_with}}
            )
            return
        try:
            request = json.loads(body)
        except ValueError as exc:
            self.send_json(
                400, {"error": {"message": f"could not parse auth request: {exc}", "code": 400}}
            )
            return
        status, answer = stub.judge(request)
        self.send_json(status, answer)


class ArboristStub:
    def __init__(self, issuer: FenceIssuer) -> None:
        self.issuer = issuer
        self.server = BackgroundHTTPServer(_Handler)
        self.server.stub = self  # type: ignore[attr-defined]
        self.delay = 0.0
        self.fail_with: int | None = None
        self.requests: list[dict[str, Any]] = []
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
        self.fail_with = None
        self.requests = []
        self.policies: list[dict[str, Any]] = [ADMIN_POLICY]
        self.users: dict[str, list[str]] = {"admin": ["bucket_registry_admin"]}

    def grant(self, user: str, role: str, *resource_paths: str) -> None:
        """Give ``user`` the role on the paths (through a policy named after them)."""
        policy_id = f"{user}-{role}-{len(self.policies)}"
        self.policies.append(
            {"id": policy_id, "role_ids": [role], "resource_paths": list(resource_paths)}
        )
        self.users.setdefault(user, []).append(policy_id)

    def make_admin(self, user: str) -> None:
        self.users.setdefault(user, []).append("bucket_registry_admin")

    @property
    def call_count(self) -> int:
        return len(self.requests)

    def judge(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
        user = request.get("user") or {}
        token = user.get("token")
        username = user.get("user_id")
        if token:
            try:
                claims = self.issuer.decode(token)
            except (jwt.InvalidTokenError, KeyError) as exc:
                return 401, {"error": {"message": f"failed to decode token: {exc}", "code": 401}}
            username = ((claims.get("context") or {}).get("user") or {}).get("name")
        requests = ([request["request"]] if request.get("request") else []) + list(
            request.get("requests") or []
        )
        if not requests:
            return 400, {"error": {"message": "auth request missing resources", "code": 400}}
        document = PolicyDocument(
            {
                "authz": {"roles": ROLES, "policies": self.policies},
                "users": {name: {"policies": ids} for name, ids in self.users.items()},
            }
        )
        # Arborist grants a multi-request only when every request is granted.
        for item in requests:
            action = item.get("action") or {}
            if not document.allows(
                username,
                action.get("service", ""),
                action.get("method", ""),
                item.get("resource", ""),
            ):
                return 200, {"auth": False}
        return 200, {"auth": True}
