"""A Google APIs stub over real HTTP: IAM Credentials, the OAuth2 token endpoint and the Cloud
Storage JSON API objects list, speaking their REST wire formats.

- ``POST /v1/projects/-/serviceAccounts/{email}:signBlob`` signs with a key the stub holds for
  ``email`` (RSA PKCS#1 v1.5, SHA-256, as IAM does) when the bearer token is one of the pod's.
- ``POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`` issues a token for it.
- ``POST /token`` accepts the JWT-bearer grant google-auth sends for a service-account key,
  checking the assertion's signature with the public half of a registered key.
- ``POST /v1/token`` is Google's Security Token Service: an RFC 8693 token exchange of an
  access token the stub issued for one limited by the Credential Access Boundary sent in
  ``options`` (URL-encoded JSON); the new token lives as long as the one it came from.
- The Cloud Storage JSON API (``GET …/b/{bucket}/o`` lists, ``GET``/``DELETE …/o/{object}``,
  ``POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=…``) and XML API
  (``GET``/``PUT``/``DELETE /{bucket}/{object}``) for bearer tokens: an account's own tokens
  may do what its roles on the bucket allow (``readers``: get and list, ``creators``: get, list
  and create, ``admins``: every object call); a downscoped token may do only what its account
  may and its boundary allows
  (``tests.support.gcs_boundary``). Refusals are recorded in ``boundary_denials``. A token
  whose OAuth scopes are known (from the key's assertion or ``generateAccessToken``) and none
  of which writes (``devstorage.read_only``) is refused creating and deleting objects, as
  Cloud Storage refuses it; a downscoped token has the scopes of the token it came from.
- ``enforce_boundaries = False`` models a store that ignores access boundaries: a downscoped
  token may do whatever its account may.
- ``accepts_signed_url`` judges a V4 signed URL as Cloud Storage would: signed by a key the
  account still holds, unexpired, by an account that may read the bucket.

An account may hold several keys (``add_key``), as a rotation needs; ``delete_key`` retires
one, after which neither its token grants nor its signatures are accepted.

Faults: ``fail_next`` answers the next requests with the listed statuses; ``fail_always``
answers every request with one status; ``storage_fault`` answers every Cloud Storage call
(JSON and XML APIs, not IAM or the token services) with one status.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.gcs_boundary import (
    CREATE,
    DELETE,
    GET,
    LIST,
    LIST_PREFIX_ATTRIBUTE,
    AccessBoundary,
    InvalidBoundary,
    StorageQuestion,
)
from tests.support.gcs_v4 import check_v4
from tests.support.net import BackgroundHTTPServer, JsonHandler

_ACCOUNT_PATH = "/v1/projects/-/serviceAccounts/"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
# OAuth scopes under which a token may create and delete objects.
WRITING_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/devstorage.read_write",
        "https://www.googleapis.com/auth/devstorage.full_control",
    }
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_key_json(
    email: str, key: rsa.RSAPrivateKey, *, token_uri: str, project_id: str = "registry-project"
) -> str:
    """A service-account JSON key file in Google's layout, for ``key``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "token_uri": token_uri,
        }
    )


def _signer_of(url: str) -> str:
    credential = parse_qs(urlsplit(url).query).get("X-Goog-Credential", [""])[0]
    return credential.partition("/")[0]


@dataclass
class GcsBucketState:
    readers: set[str] = field(default_factory=set)
    requester_pays: bool = False
    objects: list[str] = field(default_factory=list)
    admins: set[str] = field(default_factory=set)
    data: dict[str, bytes] = field(default_factory=dict)
    # Accounts that may read, list and create objects but not delete them.
    creators: set[str] = field(default_factory=set)

    def permits(self, account: str, permission: str) -> bool:
        """What the account's own roles on the bucket allow."""
        if account in self.admins:
            return True
        if account in self.creators:
            return permission in (GET, LIST, CREATE)
        return account in self.readers and permission in (GET, LIST)

    def names(self) -> list[str]:
        return sorted(set(self.objects) | set(self.data))


@dataclass(frozen=True)
class Downscoped:
    """A token issued by the token exchange: whose it is, its boundary, when it ends."""

    account: str
    boundary: AccessBoundary
    options: dict[str, Any]
    expires_at: float


@dataclass(frozen=True)
class TokenExchange:
    """A token exchange the stub answered: the form fields (but the subject token), the
    boundary as sent, and the account the subject token was for."""

    form: dict[str, str]
    options: dict[str, Any] | None
    account: str | None


class PodTokens:
    """An ``AccessTokenProvider`` standing in for the pod's Workload Identity token."""

    def __init__(self, stub: GoogleApiStub) -> None:
        self._stub = stub
        self.current = stub.issue_pod_token()
        self.refreshes = 0

    async def token(self, *, force_refresh: bool = False) -> str:
        if force_refresh:
            self.refreshes += 1
            self.current = self._stub.issue_pod_token()
        return self.current


class _Handler(JsonHandler):
    content_type = "application/json; charset=UTF-8"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._dispatch("POST", body)

    def do_GET(self) -> None:
        self._dispatch("GET", b"")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._dispatch("PUT", body)

    def do_DELETE(self) -> None:
        self._dispatch("DELETE", b"")

    def _dispatch(self, method: str, body: bytes) -> None:
        stub = self.stub
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        stub.record(method, path, parts.query)
        fault = stub.take_fault()
        if fault is not None:
            self._error(fault, "injected fault")
            return
        query = parse_qs(parts.query)
        if stub.storage_fault is not None and _is_storage_call(path, stub):
            self._error(stub.storage_fault, "injected Cloud Storage fault")
            return
        if method == "POST" and path == "/token":
            self._token(body)
        elif method == "POST" and path == "/v1/token":
            self._exchange(body)
        elif method == "POST" and path.startswith(_ACCOUNT_PATH) and ":" in path:
            email, _, verb = path[len(_ACCOUNT_PATH) :].rpartition(":")
            self._iam(email, verb, body)
        elif path.startswith("/storage/v1/b/"):
            bucket, _, tail = path[len("/storage/v1/b/") :].partition("/")
            if method == "GET" and tail == "o":
                self._list(bucket, query)
            elif tail.startswith("o/") and method in ("GET", "DELETE"):
                self._object(method, bucket, tail[2:], query, b"", xml=False)
            else:
                self._error(404, "not found")
        elif method == "POST" and path.startswith("/upload/storage/v1/b/") and path.endswith("/o"):
            bucket = path[len("/upload/storage/v1/b/") : -len("/o")]
            name = query.get("name", [""])[0]
            if query.get("uploadType") != ["media"] or not name:
                self._error(400, "only uploadType=media with a name is supported here")
            else:
                self._object("PUT", bucket, name, query, body, xml=False)
        elif path.lstrip("/").partition("/")[0] in stub.buckets and method in (
            "GET",
            "PUT",
            "DELETE",
        ):
            bucket, _, name = path.lstrip("/").partition("/")
            self._object(method, bucket, name, query, body, xml=True)
        else:
            self._error(404, "not found")

    def _bearer(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token if scheme == "Bearer" and token else None

    def _iam(self, email: str, verb: str, body: bytes) -> None:
        stub = self.stub
        if self._bearer() not in stub.pod_tokens:
            self._error(401, "Request had invalid authentication credentials.")
            return
        key = stub.accounts.get(email)
        if key is None or email not in stub.impersonable:
            self._error(403, "Permission denied on resource (or it may not exist).")
            return
        request = json.loads(body or b"{}")
        if verb == "signBlob":
            payload = base64.b64decode(request["payload"], validate=True)
            signature = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
            stub.signed.append(payload)
            self.send_json(
                200,
                {"keyId": "stub-key-1", "signedBlob": base64.b64encode(signature).decode()},
            )
        elif verb == "generateAccessToken":
            lifetime = int(str(request.get("lifetime", "3600s")).rstrip("s"))
            if not 1 <= lifetime <= 3600:
                self._error(400, "lifetime must be between 1s and 3600s")
                return
            stub.token_requests.append(request)
            scopes = request.get("scope")
            token = stub.issue_storage_token(
                email, lifetime=lifetime, scopes=scopes if isinstance(scopes, list) else None
            )
            expires = datetime.fromtimestamp(stub.token_expiry[token], UTC)
            self.send_json(
                200, {"accessToken": token, "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
            )
        else:
            self._error(404, f"unknown method {verb}")

    def _token(self, body: bytes) -> None:
        stub = self.stub
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        assertion = form.get("assertion", "")
        claims = jwt.decode(assertion, options={"verify_signature": False})
        issuer = claims.get("iss", "")
        if not any(_verifies(assertion, key, f"{stub.url}/token") for key in stub.keys_of(issuer)):
            self.send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT"})
            return
        # A pod identity's key yields pod tokens (which may call IAM); any other account's key
        # yields a token for reading its buckets.
        if issuer in stub.pod_accounts:
            token = stub.issue_pod_token()
        else:
            token = stub.issue_storage_token(issuer, scopes=str(claims.get("scope", "")).split())
        self.send_json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _list(self, bucket: str, query: Mapping[str, list[str]]) -> None:
        stub = self.stub
        state = stub.buckets.get(bucket)
        prefix = query.get("prefix", [""])[0]
        question = StorageQuestion(LIST, bucket, None, {LIST_PREFIX_ATTRIBUTE: prefix})
        if not self._authorized(question, state, xml=False):
            return
        assert state is not None
        if state.requester_pays and not query.get("userProject"):
            self._error(400, "Bucket is a requester pays bucket but no user project provided.")
            return
        limit = int(query.get("maxResults", ["1000"])[0])
        names = [name for name in state.names() if name.startswith(prefix)][:limit]
        items = [{"kind": "storage#object", "name": name} for name in names]
        self.send_json(200, {"kind": "storage#objects", "items": items})

    def _object(
        self,
        method: str,
        bucket: str,
        name: str,
        query: Mapping[str, list[str]],
        body: bytes,
        *,
        xml: bool,
    ) -> None:
        stub = self.stub
        state = stub.buckets.get(bucket)
        permission = {"GET": GET, "PUT": CREATE, "DELETE": DELETE}[method]
        if not self._authorized(StorageQuestion(permission, bucket, name), state, xml=xml):
            return
        assert state is not None
        if method == "PUT":
            state.data[name] = body
            self.send_json(200, {"kind": "storage#object", "bucket": bucket, "name": name})
            return
        if name not in state.data:
            self._refuse(404, "No such object.", xml=xml)
            return
        if method == "DELETE":
            del state.data[name]
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if xml or query.get("alt") == ["media"]:
            data = state.data[name]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_json(200, {"kind": "storage#object", "bucket": bucket, "name": name})

    def _authorized(
        self, question: StorageQuestion, state: GcsBucketState | None, *, xml: bool
    ) -> bool:
        """Whether the bearer may ask ``question``; answers the refusal itself when not."""
        stub = self.stub
        token = self._bearer() or ""
        downscoped = stub.downscoped.get(token)
        account = downscoped.account if downscoped else stub.storage_tokens.get(token)
        expired = stub.now() >= stub.token_expiry.get(token, float("inf"))
        if account is None or expired:
            self._refuse(401, "Invalid Credentials", xml=xml)
            return False
        if state is None:
            self._refuse(404, "The specified bucket does not exist.", xml=xml)
            return False
        allowed = state.permits(account, question.permission)
        if allowed and question.permission in (CREATE, DELETE) and not stub.may_write(token):
            self._refuse(
                403, "Request had insufficient authentication scopes to write objects.", xml=xml
            )
            return False
        if (
            allowed
            and downscoped is not None
            and stub.enforce_boundaries
            and not downscoped.boundary.allows(question)
        ):
            stub.boundary_denials.append(question)
            allowed = False
        if not allowed:
            self._refuse(
                403,
                f"{account} does not have {question.permission} access to"
                f" {question.resource_name}.",
                xml=xml,
            )
        return allowed

    def _refuse(self, status: int, message: str, *, xml: bool) -> None:
        if not xml:
            self._error(status, message)
            return
        code = {401: "AuthenticationRequired", 403: "AccessDenied", 404: "NoSuchKey"}[status]
        data = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _exchange(self, body: bytes) -> None:
        """Google's STS token exchange (RFC 8693) with a Credential Access Boundary."""
        stub = self.stub
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        subject = form.pop("subject_token", "")
        account = stub.storage_tokens.get(subject)
        options: dict[str, Any] | None = None
        try:
            if "options" in form:
                options = json.loads(unquote(form["options"]))
        except ValueError:
            options = None
        stub.exchanges.append(TokenExchange(dict(form), options, account))
        if stub.exchange_fault is not None:
            status, stub.exchange_fault = stub.exchange_fault, None
            error = "invalid_grant" if status < 500 else "server_error"
            self.send_json(status, {"error": error, "error_description": "injected fault"})
            return
        if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        if (
            form.get("subject_token_type") != ACCESS_TOKEN_TYPE
            or form.get("requested_token_type") != ACCESS_TOKEN_TYPE
        ):
            self.send_json(400, {"error": "invalid_request", "error_description": "token type"})
            return
        expires_at = stub.token_expiry.get(subject, 0.0)
        if account is None or stub.now() >= expires_at:
            self.send_json(
                400,
                {"error": "invalid_grant", "error_description": "The subject token is invalid."},
            )
            return
        try:
            boundary = AccessBoundary.parse(options)
        except InvalidBoundary as exc:
            self.send_json(400, {"error": "invalid_request", "error_description": str(exc)})
            return
        assert options is not None
        token = "ya29.downscoped-" + secrets.token_urlsafe(16)
        with stub._lock:
            stub.downscoped[token] = Downscoped(account, boundary, options, expires_at)
            stub.token_expiry[token] = expires_at
            if subject in stub.token_scopes:
                stub.token_scopes[token] = stub.token_scopes[subject]
        self.send_json(
            200,
            {
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": int(expires_at - stub.now()),
            },
        )

    def _error(self, status: int, message: str) -> None:
        status_name = _STATUS_NAMES.get(status, "UNKNOWN")
        self.send_json(
            status, {"error": {"code": status, "message": message, "status": status_name}}
        )


def _is_storage_call(path: str, stub: GoogleApiStub) -> bool:
    if path.startswith(("/storage/v1/", "/upload/storage/v1/")):
        return True
    return path.lstrip("/").partition("/")[0] in stub.buckets


def _verifies(assertion: str, key: rsa.RSAPrivateKey, token_url: str) -> bool:
    try:
        jwt.decode(
            assertion,
            key.public_key(),
            algorithms=["RS256"],
            # google-auth names Google's token endpoint as audience whatever token_uri says.
            audience=[GOOGLE_TOKEN_AUDIENCE, token_url],
        )
    except jwt.PyJWTError:
        return False
    return True


class GoogleApiStub:
    def __init__(self) -> None:
        self._server = BackgroundHTTPServer(_Handler)
        self._server.stub = self  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self.reset()

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> GoogleApiStub:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self.accounts: dict[str, rsa.RSAPrivateKey] = {}
            self.extra_keys: dict[str, list[rsa.RSAPrivateKey]] = {}
            self.deleted_keys: set[int] = set()
            self.impersonable: set[str] = set()
            self.pod_accounts: set[str] = set()
            self.pod_tokens: set[str] = set()
            self.storage_tokens: dict[str, str] = {}
            self.token_expiry: dict[str, float] = {}
            self.token_requests: list[dict[str, Any]] = []
            # The OAuth scopes of each token whose scopes are known.
            self.token_scopes: dict[str, frozenset[str]] = {}
            # False: downscoped tokens may do what their account may (boundaries ignored).
            self.enforce_boundaries = True
            # A status every Cloud Storage call answers with.
            self.storage_fault: int | None = None
            self.downscoped: dict[str, Downscoped] = {}
            self.exchanges: list[TokenExchange] = []
            self.boundary_denials: list[StorageQuestion] = []
            self.clock_offset = 0.0
            # A status the token exchange answers with (Google's OAuth error body), once.
            self.exchange_fault: int | None = None
            self.buckets: dict[str, GcsBucketState] = {}
            self.requests: list[tuple[str, str, str]] = []
            self.signed: list[bytes] = []
            self.fail_next: list[int] = []
            self.fail_always: int | None = None

    def add_account(
        self, email: str, key: rsa.RSAPrivateKey | None = None, *, impersonable: bool = True
    ) -> rsa.RSAPrivateKey:
        """Register a service account; the pod may sign as it when ``impersonable``."""
        key = key or new_rsa_key()
        self.accounts[email] = key
        if impersonable:
            self.impersonable.add(email)
        return key

    def add_key(self, email: str, key: rsa.RSAPrivateKey | None = None) -> rsa.RSAPrivateKey:
        """Another key for an existing account (``serviceAccounts.keys.create``)."""
        key = key or new_rsa_key()
        with self._lock:
            self.extra_keys.setdefault(email, []).append(key)
        return key

    def delete_key(self, key: rsa.RSAPrivateKey) -> None:
        """Retire a key: its grants and signatures are refused from now on."""
        with self._lock:
            self.deleted_keys.add(id(key))

    def keys_of(self, email: str) -> list[rsa.RSAPrivateKey]:
        with self._lock:
            keys = [self.accounts[email]] if email in self.accounts else []
            keys += self.extra_keys.get(email, [])
            return [key for key in keys if id(key) not in self.deleted_keys]

    def accepts_signed_url(
        self, method: str, url: str, headers: dict[str, str] | None = None
    ) -> str:
        """The account a V4 signed URL is accepted for; ``AssertionError`` if Cloud Storage
        would refuse it (no live key of the account made the signature, expired, or the
        account may not read the bucket)."""
        bucket = urlsplit(url).path.lstrip("/").split("/", 1)[0]
        for key in self.keys_of(_signer_of(url)):
            try:
                query = check_v4(method, url, headers or {}, key.public_key())
            except InvalidSignature:
                continue
            signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ")
            expiry = signed_at.replace(tzinfo=UTC) + timedelta(seconds=int(query["X-Goog-Expires"]))
            assert datetime.now(UTC) < expiry, "the signed URL has expired"
            state = self.buckets.get(unquote(bucket))
            assert state is not None and query["email"] in state.readers, "access denied"
            return query["email"]
        raise AssertionError("SignatureDoesNotMatch: no live key of the account signed it")

    def add_bucket(
        self, name: str, *, readers: set[str], requester_pays: bool = False
    ) -> GcsBucketState:
        state = GcsBucketState(readers=set(readers), requester_pays=requester_pays)
        state.objects.append("first-object")
        self.buckets[name] = state
        return state

    def issue_pod_token(self) -> str:
        token = "pod-" + secrets.token_urlsafe(16)
        with self._lock:
            self.pod_tokens.add(token)
        return token

    def revoke_pod_tokens(self) -> None:
        with self._lock:
            self.pod_tokens.clear()

    def issue_storage_token(
        self, email: str, *, lifetime: int = 3600, scopes: list[str] | None = None
    ) -> str:
        """A token of ``email``; with ``scopes``, limited to what they allow."""
        token = "ya29.stub-" + secrets.token_urlsafe(16)
        with self._lock:
            self.storage_tokens[token] = email
            self.token_expiry[token] = self.now() + lifetime
            if scopes is not None:
                self.token_scopes[token] = frozenset(scopes)
        return token

    def may_write(self, token: str) -> bool:
        """Whether the token's OAuth scopes (when known) allow creating and deleting objects."""
        scopes = self.token_scopes.get(token)
        return scopes is None or bool(scopes & WRITING_SCOPES)

    def now(self) -> float:
        """The stub's clock (epoch seconds); ``clock_offset`` moves it, for expiry checks."""
        return time.time() + self.clock_offset

    def record(self, method: str, path: str, query: str) -> None:
        with self._lock:
            self.requests.append((method, path, query))

    def take_fault(self) -> int | None:
        with self._lock:
            if self.fail_next:
                return self.fail_next.pop(0)
            return self.fail_always

    def calls(self, suffix: str) -> int:
        """How many requests went to a path ending in ``suffix``."""
        return sum(1 for _method, path, _query in self.requests if path.endswith(suffix))
