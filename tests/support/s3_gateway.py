"""A SigV4-checking reverse proxy in front of moto, whose S3 checks no signature and no expiry.

Point a bucket's ``endpoint`` at ``gateway.url`` (path-style): every request is verified with
botocore's own signer against a keyring before it reaches moto, so each byte that moves proves
the signature. Keys issued by moto's STS are learnt from moto's in-process backend (the
``ThreadedMotoServer`` runs in the test process), including their session token and expiry.

moto issues sessions but enforces no session policy, so the gateway does: a request signed
with a session that carries an inline policy (``AssumeRole``'s ``Policy``) is mapped to the
IAM actions S3 would authorize (``s3_authorizations``) and judged by the evaluator in
``tests.support.iam_policy``; a denial is S3's 403 ``AccessDenied``. The gateway also serves
as an STS endpoint (a bucket's ``sts_endpoint``): it relays ``AssumeRole`` to moto and keeps
what was asked (``sts_calls``), because moto drops ``SourceIdentity`` and ``Tags``; requests
signed with such a session are seen with its ``source_identity``.

Usage::

    gateway = S3Gateway(moto.url).start()
    gateway.add_key("AKIA...", "secret")
    ...                      # presign against gateway.url, send with httpx
    gateway.seen[-1].access_key_id, gateway.rejections
    gateway.clock_offset = 7200   # pretend two hours passed (expiry checks)
    gateway.sts_calls[-1].source_identity, gateway.policy_denials
    gateway.sts_connections       # the connections STS calls arrived on
    gateway.stop()
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from tests.support.iam_policy import Policy
from tests.support.net import BackgroundHTTPServer

_AUTH_QUERY_PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
_NOT_FORWARDED_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "x-amz-security-token",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "expect",
    }
)
_NOT_RELAYED_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
_AUTH_HEADER = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,]+),\s*"
    r"SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]+)"
)
_MAX_SKEW = timedelta(minutes=15)
_UPSTREAM_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=S3GATEWAY/20000101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
_MAX_EXPIRES = 7 * 24 * 3600


@dataclass(frozen=True)
class Seen:
    """A request the gateway accepted."""

    access_key_id: str
    method: str
    path: str
    query_signed: bool
    # The SourceIdentity of the session that signed it, when that session was issued here.
    source_identity: str | None = None


@dataclass(frozen=True)
class StsCall:
    """An AssumeRole relayed to moto: what was asked, and the key id it answered with."""

    params: dict[str, str]
    access_key_id: str | None
    # The access key id the AssumeRole request was signed with.
    signed_by: str | None = None

    @property
    def source_identity(self) -> str | None:
        return self.params.get("SourceIdentity")

    @property
    def tags(self) -> dict[str, str]:
        """``Tags.member.N.Key`` / ``.Value`` as one mapping."""
        found: dict[str, str] = {}
        for name, key in self.params.items():
            if name.startswith("Tags.member.") and name.endswith(".Key"):
                found[key] = self.params.get(name[: -len("Key")] + "Value", "")
        return found


@dataclass(frozen=True)
class Authorization:
    """One IAM question a request asks: S3 authorizes the request only if each is allowed."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Key:
    secret: str
    session_token: str | None = None
    expires_at: datetime | None = None
    policy: str | None = None


class S3Gateway(BackgroundHTTPServer):
    def __init__(
        self,
        upstream: str,
        *,
        port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(_GatewayHandler, port)
        self.upstream = upstream.rstrip("/")
        self.ssl_context = ssl_context
        self.keyring: dict[str, str] = {}
        self.seen: list[Seen] = []
        self.rejections: list[str] = []
        self.sts_calls: list[StsCall] = []
        self.policy_denials: list[Authorization] = []
        # TCP connections accepted, and the STS calls that arrived on each (by connection).
        self.connections = 0
        self.sts_connections: set[int] = set()
        self.lock = threading.Lock()
        self.clock_offset = 0.0
        self._upstream_client = httpx.Client(timeout=60)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> S3Gateway:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler_cls)
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        self._upstream_client.close()

    def add_key(self, access_key_id: str, secret_access_key: str) -> None:
        self.keyring[access_key_id] = secret_access_key

    def reset(self) -> None:
        self.keyring.clear()
        self.seen.clear()
        self.rejections.clear()
        self.sts_calls.clear()
        self.policy_denials.clear()
        self.connections = 0
        self.sts_connections.clear()
        self.clock_offset = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset)

    @property
    def seen_access_keys(self) -> set[str]:
        return {seen.access_key_id for seen in self.seen}

    # -- verification --------------------------------------------------------------------------

    def verify(
        self, method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes
    ) -> Seen:
        """The accepted request's identity, or ``Rejected`` with an S3 error code."""
        params = parse_qsl(raw_query, keep_blank_values=True)
        query = dict(params)
        lower = {name.lower(): value for name, value in headers.items()}
        if "X-Amz-Signature" in query:
            seen = self._verify_query(method, raw_path, params, query, lower)
        elif "authorization" in lower:
            seen = self._verify_header(method, raw_path, params, lower, body)
        else:
            raise Rejected("AccessDenied", "Anonymous access is forbidden for this bucket")
        key = self._known_key(seen.access_key_id)
        if key is not None and key.policy:
            policy = Policy.parse(key.policy)
            for question in s3_authorizations(method, raw_path, params, lower, body):
                if not policy.allows(question.action, question.resource, dict(question.context)):
                    self.policy_denials.append(question)
                    raise Rejected(
                        "AccessDenied",
                        f"{question.action} on {question.resource} is not allowed by the"
                        " session policy",
                    )
        call = self.session_of(seen.access_key_id)
        if call is not None and call.source_identity:
            seen = Seen(
                seen.access_key_id,
                seen.method,
                seen.path,
                seen.query_signed,
                source_identity=call.source_identity,
            )
        return seen

    def session_of(self, access_key_id: str) -> StsCall | None:
        for call in reversed(self.sts_calls):
            if call.access_key_id == access_key_id:
                return call
        return None

    def _known_key(self, access_key_id: str) -> _Key | None:
        if access_key_id in self.keyring:
            return None
        return _sts_issued_key(access_key_id)

    def _verify_query(
        self,
        method: str,
        raw_path: str,
        params: list[tuple[str, str]],
        query: dict[str, str],
        headers: dict[str, str],
    ) -> Seen:
        if query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise Rejected("AuthorizationQueryParametersError", "unsupported algorithm")
        access_key_id, region, service, timestamp = self._scope(query.get("X-Amz-Credential", ""))
        signed_at = self._parse_time(query.get("X-Amz-Date", ""))
        if signed_at.strftime("%Y%m%d") != timestamp:
            raise Rejected("AuthorizationQueryParametersError", "credential date mismatch")
        expires = int(query.get("X-Amz-Expires", "0"))
        if not 1 <= expires <= _MAX_EXPIRES:
            raise Rejected("AuthorizationQueryParametersError", "X-Amz-Expires out of range")
        now = self.now()
        if signed_at - now > _MAX_SKEW:
            raise Rejected("AccessDenied", "Request is not valid yet")
        if now > signed_at + timedelta(seconds=expires):
            raise Rejected("AccessDenied", "Request has expired")
        key = self._key(access_key_id, query.get("X-Amz-Security-Token"), now)
        request = AWSRequest(
            method=method,
            url=f"http://{headers.get('host', '')}{raw_path}",
            headers=self._signed_headers(query.get("X-Amz-SignedHeaders", ""), headers),
        )
        request.params = [(name, value) for name, value in params if name != "X-Amz-Signature"]
        request.context["timestamp"] = query["X-Amz-Date"]
        auth = S3SigV4QueryAuth(
            ReadOnlyCredentials(access_key_id, key.secret, key.session_token), service, region
        )
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            raise Rejected(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        return Seen(access_key_id, method, raw_path, query_signed=True)

    def _verify_header(
        self,
        method: str,
        raw_path: str,
        params: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Seen:
        match = _AUTH_HEADER.fullmatch(headers["authorization"].strip())
        if match is None:
            raise Rejected("InvalidRequest", "unsupported Authorization header")
        access_key_id, region, service, timestamp = self._scope(match["credential"])
        signed_at = self._parse_time(headers.get("x-amz-date", ""))
        now = self.now()
        if abs(now - signed_at) > _MAX_SKEW:
            raise Rejected("RequestTimeTooSkewed", "request time too far from the server's")
        key = self._key(access_key_id, headers.get("x-amz-security-token"), now)
        content_sha256 = headers.get("x-amz-content-sha256", "")
        if re.fullmatch(r"[0-9a-f]{64}", content_sha256) and (
            hashlib.sha256(body).hexdigest() != content_sha256
        ):
            raise Rejected("XAmzContentSHA256Mismatch", "body does not match its hash")
        request = AWSRequest(
            method=method,
            url=f"http://{headers.get('host', '')}{raw_path}",
            headers=self._signed_headers(match["signed"], headers),
            data=body,
        )
        request.params = params
        request.context["timestamp"] = headers["x-amz-date"]
        auth = S3SigV4Auth(
            ReadOnlyCredentials(access_key_id, key.secret, key.session_token), service, region
        )
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        if timestamp != headers["x-amz-date"][:8] or not hmac.compare_digest(
            expected, match["signature"]
        ):
            raise Rejected(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        return Seen(access_key_id, method, raw_path, query_signed=False)

    @staticmethod
    def _scope(credential: str) -> tuple[str, str, str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
            raise Rejected("AuthorizationQueryParametersError", "malformed credential scope")
        return parts[0], parts[2], parts[3], parts[1]

    @staticmethod
    def _parse_time(value: str) -> datetime:
        try:
            return datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            raise Rejected("AccessDenied", "missing or malformed X-Amz-Date") from None

    @staticmethod
    def _signed_headers(signed: str, headers: dict[str, str]) -> dict[str, str]:
        names = [name for name in signed.split(";") if name]
        if "host" not in names:
            raise Rejected("AccessDenied", "the host header must be signed")
        return {name: headers.get(name, "") for name in names}

    def _key(self, access_key_id: str, token: str | None, now: datetime) -> _Key:
        if access_key_id in self.keyring:
            return _Key(self.keyring[access_key_id])
        key = _sts_issued_key(access_key_id)
        if key is None:
            raise Rejected(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        if token != key.session_token:
            raise Rejected("InvalidToken", "The provided token is malformed or otherwise invalid.")
        assert key.expires_at is not None
        if now >= key.expires_at:
            raise Rejected("ExpiredToken", "The provided token has expired.")
        return key

    # -- forwarding ----------------------------------------------------------------------------

    def forward(
        self, method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        kept = [
            pair
            for pair in raw_query.split("&")
            if pair and pair.partition("=")[0] not in _AUTH_QUERY_PARAMS
        ]
        url = self.upstream + raw_path + ("?" + "&".join(kept) if kept else "")
        forwarded = {
            name: value
            for name, value in headers.items()
            if name.lower() not in _NOT_FORWARDED_HEADERS
        }
        # moto refuses reads of private objects from requests it sees as anonymous, and picks
        # the account from the access key. The request is verified by now, so it goes on under
        # a key moto does not know: moto's default account, where tests create their buckets.
        forwarded["Authorization"] = _UPSTREAM_AUTHORIZATION
        return self._upstream_client.request(
            method, httpx.URL(url), headers=forwarded, content=body
        )


def _sts_issued_key(access_key_id: str) -> _Key | None:
    from moto.sts.models import sts_backends

    for account in list(sts_backends.values()):
        for backend in list(account.values()):
            role = backend.get_assumed_role_from_access_key(access_key_id)
            if role is not None:
                return _Key(
                    role.secret_access_key,
                    role.session_token,
                    role.expiration.replace(tzinfo=UTC),
                    policy=role.policy or None,
                )
    return None


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        gateway: S3Gateway = self.server.owner  # type: ignore[attr-defined]
        with gateway.lock:
            gateway.connections += 1
            self.connection_number = gateway.connections

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        gateway: S3Gateway = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {name: value for name, value in self.headers.items()}
        if self.command == "POST" and parts.path == "/" and _is_sts(body):
            gateway.sts_connections.add(self.connection_number)
            self._relay_sts(gateway, headers, body)
            return
        try:
            seen = gateway.verify(self.command, parts.path, parts.query, headers, body)
        except Rejected as rejected:
            gateway.rejections.append(rejected.code)
            self._reply(403, {"Content-Type": "application/xml"}, _error_xml(rejected))
            return
        except (KeyError, ValueError) as exc:
            gateway.rejections.append("AuthorizationQueryParametersError")
            malformed = Rejected("AuthorizationQueryParametersError", type(exc).__name__)
            self._reply(400, {"Content-Type": "application/xml"}, _error_xml(malformed))
            return
        gateway.seen.append(seen)
        answer = gateway.forward(self.command, parts.path, parts.query, headers, body)
        relayed = {
            name: value
            for name, value in answer.headers.items()
            if name.lower() not in _NOT_RELAYED_HEADERS
        }
        length_header = answer.headers.get("content-length") if self.command == "HEAD" else None
        self._reply(answer.status_code, relayed, answer.content, length_header)

    def _relay_sts(self, gateway: S3Gateway, headers: dict[str, str], body: bytes) -> None:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        forwarded = {
            name: value
            for name, value in headers.items()
            if name.lower() not in ("host", "connection", "content-length", "expect")
        }
        answer = gateway._upstream_client.post(
            gateway.upstream + "/", headers=forwarded, content=body
        )
        access_key_id = None
        if answer.status_code == 200 and params.get("Action") == "AssumeRole":
            found = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", answer.content)
            access_key_id = found.group(1).decode() if found else None
        if params.get("Action") == "AssumeRole":
            signer = re.search(r"Credential=([^/]+)/", headers.get("Authorization", ""))
            gateway.sts_calls.append(
                StsCall(params, access_key_id, signer.group(1) if signer else None)
            )
        relayed = {
            name: value
            for name, value in answer.headers.items()
            if name.lower() not in _NOT_RELAYED_HEADERS
        }
        self._reply(answer.status_code, relayed, answer.content)

    def _reply(
        self, status: int, headers: dict[str, str], body: bytes, length: str | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", length if length is not None else str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


def _error_xml(rejected: Rejected) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{rejected.code}</Code><Message>{escape(rejected.message)}</Message>"
        "</Error>"
    ).encode()


def _is_sts(body: bytes) -> bool:
    return body.startswith(b"Action=") or b"&Action=" in body


def s3_authorizations(
    method: str,
    raw_path: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
) -> list[Authorization]:
    """The IAM actions and resources S3 checks for a path-style request (the subset of the
    S3 API that SDKs, aws cli, s5cmd and rclone use for objects); anything else maps to an
    action no session policy grants."""
    query = {name: value for name, value in params if name not in _AUTH_QUERY_PARAMS}
    bucket, _, raw_key = raw_path.lstrip("/").partition("/")
    bucket_arn = f"arn:aws:s3:::{unquote(bucket)}"
    if not raw_key:
        if method in ("GET", "HEAD"):
            if "uploads" in query:
                return [Authorization("s3:ListBucketMultipartUploads", bucket_arn)]
            if "location" in query:
                return [Authorization("s3:GetBucketLocation", bucket_arn)]
            if set(query) - {
                "list-type",
                "prefix",
                "delimiter",
                "max-keys",
                "continuation-token",
                "start-after",
                "encoding-type",
                "fetch-owner",
                "marker",
            }:
                return [Authorization("s3:UnsupportedBucketRead", bucket_arn)]
            context = (("s3:prefix", query["prefix"]),) if "prefix" in query else ()
            return [Authorization("s3:ListBucket", bucket_arn, context)]
        if method == "POST" and "delete" in query:
            keys = [
                element.text or ""
                for element in ElementTree.fromstring(body).iter()
                if element.tag.rsplit("}", 1)[-1] == "Key"
            ]
            return [Authorization("s3:DeleteObject", f"{bucket_arn}/{key}") for key in keys]
        return [Authorization(f"s3:UnsupportedBucket{method.title()}", bucket_arn)]
    object_arn = f"{bucket_arn}/{unquote(raw_key)}"
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            return [Authorization("s3:ListMultipartUploadParts", object_arn)]
        if set(query) & {"tagging", "acl", "attributes", "retention", "legal-hold", "torrent"}:
            return [Authorization("s3:UnsupportedObjectRead", object_arn)]
        return [Authorization("s3:GetObject", object_arn)]
    if method == "PUT":
        if set(query) & {"tagging", "acl", "retention", "legal-hold"}:
            return [Authorization("s3:UnsupportedObjectWrite", object_arn)]
        questions = [Authorization("s3:PutObject", object_arn)]
        source = headers.get("x-amz-copy-source")
        if source:
            path = unquote(source.split("?", 1)[0]).lstrip("/")
            questions.append(Authorization("s3:GetObject", f"arn:aws:s3:::{path}"))
        return questions
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return [Authorization("s3:PutObject", object_arn)]
    if method == "DELETE":
        if "uploadId" in query:
            return [Authorization("s3:AbortMultipartUpload", object_arn)]
        return [Authorization("s3:DeleteObject", object_arn)]
    return [Authorization(f"s3:UnsupportedObject{method.title()}", object_arn)]
