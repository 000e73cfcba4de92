"""Cloud Storage V4 signed URLs (``GOOG4-RSA-SHA256``): everything except the RSA signature.

Building the string to sign is kept apart from signing it because the signature comes from two
places: a service-account key held in memory, or the IAM Credentials ``signBlob`` API when the
registry runs under Workload Identity and holds no key at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from app.errors import InvalidInput

ALGORITHM = "GOOG4-RSA-SHA256"
STORAGE_HOST = "storage.googleapis.com"
# Cloud Storage refuses V4 signed URLs that claim to live longer than seven days.
MAX_EXPIRES = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SIGNATURE_PARAM = "X-Goog-Signature"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"

# Query parameter names we accept from callers. Restricting them to RFC 3986 unreserved
# characters means the raw and the percent-encoded names sort the same way, so our canonical
# query string cannot disagree with the one Cloud Storage rebuilds from the URL.
_PARAM_NAME = re.compile(r"^[A-Za-z0-9._~-]+$")
_SIGNATURE_PARAMS = frozenset(
    name.lower()
    for name in (
        "X-Goog-Algorithm",
        "X-Goog-Credential",
        "X-Goog-Date",
        "X-Goog-Expires",
        "X-Goog-SignedHeaders",
        SIGNATURE_PARAM,
    )
)


def quote_key(key: str) -> str:
    """An object key as a URL path: UTF-8, percent-encoded except RFC 3986 unreserved and ``/``.

    ``urllib.parse.quote`` never encodes ``A-Z a-z 0-9 - . _ ~``; ``/`` stays so the key's
    "directories" stay readable. Anything else (spaces, ``+``, ``&``, ``%``, non-ASCII) is
    encoded, which is what Cloud Storage does when it canonicalises the request.
    """
    return quote(key, safe="/")


def quote_component(value: str) -> str:
    """A query name or value, percent-encoded except RFC 3986 unreserved (``/`` included)."""
    return quote(value, safe="")


def credential_scope(signed_at: datetime) -> str:
    return f"{signed_at:%Y%m%d}/auto/storage/goog4_request"


@dataclass(frozen=True, slots=True)
class V4Draft:
    """A request ready to be signed: ``string_to_sign`` is what the RSA key must sign."""

    method: str
    base_url: str
    canonical_query: str
    canonical_request: str
    string_to_sign: bytes
    expires_at: datetime

    def url(self, signature: bytes) -> str:
        """The signed URL; the signature goes last, outside what it signs."""
        return f"{self.base_url}?{self.canonical_query}&{SIGNATURE_PARAM}={signature.hex()}"


def draft(
    *,
    method: str,
    bucket: str,
    key: str,
    email: str,
    signed_at: datetime,
    expires_in: int,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    host: str = STORAGE_HOST,
) -> V4Draft:
    """The canonical request and string to sign for a path-style URL to ``bucket``/``key``.

    ``headers`` are the headers (besides ``host``) the client promises to send; they are signed
    and must then be sent exactly. ``signed_at`` is truncated to the second, as X-Goog-Date is.
    """
    if not 1 <= expires_in <= MAX_EXPIRES:
        raise InvalidInput(f"expires_in must be between 1 and {MAX_EXPIRES} seconds")
    signed_at = signed_at.astimezone(UTC).replace(microsecond=0)
    canonical_headers = _canonical_headers({"host": host, **(headers or {})})
    signed_headers = ";".join(canonical_headers)
    query = {
        "X-Goog-Algorithm": ALGORITHM,
        "X-Goog-Credential": f"{email}/{credential_scope(signed_at)}",
        "X-Goog-Date": signed_at.strftime(_TIMESTAMP),
        "X-Goog-Expires": str(expires_in),
        "X-Goog-SignedHeaders": signed_headers,
    }
    for name, value in (params or {}).items():
        if not _PARAM_NAME.match(name):
            raise InvalidInput(f"query parameter name {name!r} is not allowed in a signed URL")
        if name.lower() in _SIGNATURE_PARAMS:
            raise InvalidInput(f"query parameter {name} is reserved for the signature")
        query[name] = value
    # Byte order of the (unreserved, hence unencoded) names: uppercase before lowercase.
    canonical_query = "&".join(
        f"{quote_component(name)}={quote_component(query[name])}" for name in sorted(query)
    )
    path = f"/{quote_component(bucket)}/{quote_key(key)}"
    canonical_request = "\n".join(
        (
            method,
            path,
            canonical_query,
            "".join(f"{name}:{value}\n" for name, value in canonical_headers.items()),
            signed_headers,
            UNSIGNED_PAYLOAD,
        )
    )
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            query["X-Goog-Date"],
            credential_scope(signed_at),
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        )
    )
    return V4Draft(
        method=method,
        base_url=f"https://{host}{path}",
        canonical_query=canonical_query,
        canonical_request=canonical_request,
        string_to_sign=string_to_sign.encode("utf-8"),
        expires_at=signed_at + timedelta(seconds=expires_in),
    )


def _canonical_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case names in sorted order; values trimmed with inner whitespace runs collapsed."""
    lowered = {name.strip().lower(): " ".join(value.split()) for name, value in headers.items()}
    return {name: lowered[name] for name in sorted(lowered)}
