"""A stand-in for the registry routes the service does not serve yet, speaking their documented
shape: service-token callers, ``on_behalf_of`` and the trusted-caller fields on the data path,
``POST /presign/batch``, ``POST /objects/delete`` and ``GET /fence/buckets``.

It checks what a real registry would refuse (a wrong service token, a malformed
``on_behalf_of``, unknown fields, a batch over 100) and records every request, so tests can
assert exactly what the client sent. Tests that the real app can answer use the real app.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.net import BackgroundHTTPServer, JsonHandler

USER_TOKENS = {"alice-jwt": "alice", "bob-jwt": "bob"}
TRUSTED = {"on_behalf_of", "authz", "method", "audit", "unsigned", "legacy"}
PRESIGN_FIELDS = {"bucket", "key", "op", "expires_in", "user_project", "resumable"} | TRUSTED
# The user is named once per batch; each item carries its own record's grant.
ITEM_FIELDS = PRESIGN_FIELDS - {"on_behalf_of", "audit"}
BODIES = {
    "/presign": PRESIGN_FIELDS,
    "/multipart/init": {"bucket", "key"} | TRUSTED,
    "/multipart/presign": {"bucket", "key", "upload_id", "part_number", "expires_in"} | TRUSTED,
    "/multipart/complete": {"bucket", "key", "upload_id", "parts"} | TRUSTED,
    "/multipart/abort": {"bucket", "key", "upload_id"} | TRUSTED,
    "/objects/delete": {"bucket", "key", "prefix"} | TRUSTED,
    "/presign/batch": {"requests", "on_behalf_of", "audit"},
}
METHODS = {"read": "GET", "write": "PUT", "delete": "DELETE"}


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class ContractStub:
    service_token: str = "fence-sa-token-1"
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_upload: str | None = None
    seen: list[Seen] = field(default_factory=list)
    # Test knobs: answer every request with this status, or after this many seconds.
    fail_with: int | None = None
    fail_code: str = "dependency_unavailable"
    delay: float = 0.0
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = BackgroundHTTPServer(_Handler)
        self.server.stub = self  # type: ignore[attr-defined]
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> ContractStub:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def add_bucket(self, name: str, provider: str = "aws", **extra: Any) -> None:
        self.buckets[name] = {"name": name, "provider": provider, "region": "us-east-1", **extra}

    @property
    def calls(self) -> int:
        return len(self.seen)

    def last(self, path: str) -> Seen:
        return [seen for seen in self.seen if seen.path.split("?")[0] == path][-1]

    # -- the routes ------------------------------------------------------------------------------

    def answer(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.seen.append(Seen(method, path, auth, body))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with is not None:
            return _error(self.fail_with, self.fail_code, "the stub is failing on purpose")
        route = path.split("?")[0]
        if method == "GET":
            # Metadata answers any valid token: Fence's, or a user's.
            users = {f"Bearer {token}" for token in USER_TOKENS}
            if auth != f"Bearer {self.service_token}" and auth not in users:
                return _error(401, "unauthenticated", "the token is not accepted")
            return self._get(route, path)
        if auth != f"Bearer {self.service_token}":
            return _error(401, "unauthenticated", "the service token is not accepted")
        allowed = BODIES.get(route)
        if allowed is None:
            return _error(404, "not_found", "no such route")
        if not isinstance(body, dict) or set(body) - allowed:
            return _error(400, "invalid_request", f"unknown fields: {sorted(set(body) - allowed)}")
        if route == "/presign/batch":
            return self._batch(body)
        who = self._on_behalf_of(body.get("on_behalf_of"))
        if isinstance(who, tuple):
            return who
        bucket = self.buckets.get(body.get("bucket", ""))
        if bucket is None:
            return self._missing(body.get("bucket", ""))
        if bucket.get("status") == "suspended":
            return _error(403, "bucket_suspended", "the bucket is suspended")
        if route == "/presign":
            return self._sign(body, who)
        if route == "/multipart/init":
            return 200, {"upload_id": "upload-1"}
        if route == "/multipart/presign":
            return 200, self._url("PUT", body["bucket"], body["key"], body.get("expires_in"))
        if route == "/objects/delete":
            return 200, {"deleted": 1}
        return 200, {"ok": True}

    def _get(self, route: str, path: str) -> tuple[int, Any]:
        if route == "/fence/buckets":
            s3 = {
                name: {"region": b["region"], "endpoint_url": b.get("endpoint")}
                for name, b in self.buckets.items()
                if b["provider"] != "gcp"
            }
            gs = {name: {} for name, b in self.buckets.items() if b["provider"] == "gcp"}
            if not self.buckets:
                return _error(404, "bucket_not_found", "empty", {"registry_empty": True})
            return 200, {"S3_BUCKETS": s3, "GS_BUCKETS": gs}
        if route == "/resolve":
            if self.default_upload is None:
                return self._missing("")
            route = "/resolve/" + self.default_upload
        name = route.removeprefix("/resolve/")
        if name not in self.buckets:
            return self._missing(name)
        bucket = self.buckets[name]
        return 200, {
            "id": "00000000-0000-0000-0000-000000000001",
            "name": name,
            "provider": bucket["provider"],
            "region": bucket["region"],
            "endpoint": bucket.get("endpoint"),
            "auth_mode": "workload_identity",
            "status": bucket.get("status", "active"),
            "owner_project": None,
            "data_upload_allowed": True,
            "is_default_upload": name == self.default_upload,
            "requester_pays": False,
            "labels": {},
            "version": 1,
            "bindings": [],
        }

    def _missing(self, name: str) -> tuple[int, Any]:
        details = {"registry_empty": True} if not self.buckets else None
        return _error(404, "bucket_not_found", f"no bucket named {name!r}", details)

    def _on_behalf_of(self, value: Any) -> str | tuple[int, Any]:
        if not isinstance(value, dict) or len(value) != 1:
            return _error(400, "invalid_request", "on_behalf_of needs exactly one field")
        if value.get("anonymous") is True:
            return "anonymous"
        if isinstance(value.get("username"), str):
            return value["username"]
        user = USER_TOKENS.get(value.get("token", ""))
        if user is None:
            return _error(401, "on_behalf_of_invalid", "the user's token failed verification")
        return user

    def _sign(self, body: dict[str, Any], who: str) -> tuple[int, Any]:
        if body["op"] not in METHODS:
            return _error(400, "invalid_request", "op: bad")
        if body.get("legacy") and body.get("authz"):
            return _error(400, "invalid_request", "legacy goes with an empty authz")
        if who == "bob":
            return _error(403, "forbidden", "bob may not")
        if body.get("unsigned"):
            url = f"https://{body['bucket']}.s3.amazonaws.com/{body['key']}"
            return 200, {"url": url, "method": "GET", "expires_at": _at(0), "headers": {}}
        method = METHODS[body["op"]]
        return 200, self._url(method, body["bucket"], body["key"], body.get("expires_in"))

    def _url(self, method: str, bucket: str, key: str, expires_in: Any) -> dict[str, Any]:
        seconds = int(expires_in or 3600)
        url = f"https://{bucket}.example/{key}?X-Amz-Expires={seconds}&X-Amz-Signature=stub"
        return {"url": url, "method": method, "expires_at": _at(seconds), "headers": {}}

    def _batch(self, body: dict[str, Any]) -> tuple[int, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not 1 <= len(requests) <= 100:
            return _error(400, "invalid_request", "requests: 1-100 items")
        who = self._on_behalf_of(body.get("on_behalf_of"))
        if isinstance(who, tuple):
            return who
        results = []
        for item in requests:
            if not isinstance(item, dict) or set(item) - ITEM_FIELDS:
                results.append(_item_error(400, "invalid_request", "bad item"))
                continue
            if item.get("bucket") not in self.buckets:
                results.append(_item_error(404, "bucket_not_found", "no such bucket"))
                continue
            status, answer = self._sign(item, who)
            if status == 200:
                results.append(answer)
            else:
                results.append(_item_error(status, answer["error"], answer["message"]))
        return 200, {"results": results}


def _at(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def _error(status: int, code: str, message: str, details: Any = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"ok": False, "error": code, "message": message}
    if details is not None:
        body["details"] = details
    return status, body


def _item_error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, "status": status}


class _Handler(JsonHandler):
    def _serve(self, method: str) -> None:
        body = self.read_json() if method == "POST" else None
        auth = self.headers.get("Authorization")
        status, answer = self.stub.answer(method, self.path, auth, body)
        try:
            self.send_json(status, answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting, which is what slow-registry tests want

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
