"""A SigV4-checking reverse proxy in front of moto, whose S3 checks no signature and no expiry.

Point a bucket's ``endpoint`` at ``gateway.url`` (path-style): every request is verified with
botocore's own signer against a keyring before it reaches moto, so each byte that moves proves
the signature. Keys issued by moto's STS are learnt from moto's in-process backend (the
``ThreadedMotoServer`` runs in the test process), including their session token and expiry.

Usage::

    gateway = S3Gateway(moto.url).start()
    gateway.add_key("AKIA...", "secret")
    ...                      # presign against gateway.url, send with httpx
    gateway.seen[-1].access_key_id, gateway.rejections
    gateway.clock_offset = 7200   # pretend two hours passed (expiry checks)
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
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import httpx
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

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
            return self._verify_query(method, raw_path, params, query, lower)
        if "authorization" in lower:
            return self._verify_header(method, raw_path, params, lower, body)
        raise Rejected("AccessDenied", "Anonymous access is forbidden for this bucket")

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
                )
    return None


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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
