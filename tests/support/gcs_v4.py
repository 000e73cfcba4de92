"""An independent GCS V4 signed-URL verifier, built from Google's "canonical requests" and
"signatures" pages: it checks a URL the way Cloud Storage would, with the public half of the
key that signed it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def rfc3986(value: str, *, keep_slash: bool = False) -> str:
    """Percent-encode UTF-8 bytes except RFC 3986 unreserved (and ``/`` when asked)."""
    keep = UNRESERVED | ({ord("/")} if keep_slash else set())
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in value.encode("utf-8"))


def check_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    public_key: rsa.RSAPublicKey,
    *,
    bucket: str | None = None,
    key: str | None = None,
    expires_at: datetime | None = None,
) -> dict[str, str]:
    """Check a signed request; returns its decoded query parameters plus ``email`` (the
    signer). Raises ``AssertionError`` for a malformed URL, ``InvalidSignature`` for a
    signature the key did not make."""
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.netloc == "storage.googleapis.com"
    if bucket is not None and key is not None:
        # The path names exactly bucket/key, encoded per Google's rules (so it is canonical).
        assert unquote(parts.path) == f"/{bucket}/{key}"
        assert parts.path == f"/{rfc3986(bucket)}/{rfc3986(key, keep_slash=True)}"

    pairs = [pair.split("=", 1) for pair in parts.query.split("&")]
    assert pairs[-1][0] == "X-Goog-Signature", "the signature comes last"
    signature = bytes.fromhex(pairs[-1][1])
    query = {unquote(name): unquote(value) for name, value in pairs[:-1]}
    assert len(query) == len(pairs) - 1, "no repeated parameters"
    canonical_query = "&".join(
        f"{rfc3986(name)}={rfc3986(value)}" for name, value in sorted(query.items())
    )
    assert parts.query == f"{canonical_query}&X-Goog-Signature={pairs[-1][1]}"

    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    email, _, scope = query["X-Goog-Credential"].partition("/")
    date = query["X-Goog-Date"]
    assert scope == f"{date[:8]}/auto/storage/goog4_request"
    expires = int(query["X-Goog-Expires"])
    assert 1 <= expires <= 604800
    signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if expires_at is not None:
        assert expires_at == signed_at + timedelta(seconds=expires)

    # Headers: host plus whatever the client is told to send, and nothing else.
    sent = {"host": parts.netloc, **{k.lower(): v for k, v in headers.items()}}
    signed_headers = query["X-Goog-SignedHeaders"].split(";")
    assert signed_headers == sorted(sent)
    canonical_headers = "".join(f"{name}:{sent[name].strip()}\n" for name in signed_headers)

    canonical_request = "\n".join(
        [
            method,
            parts.path,
            canonical_query,
            canonical_headers,
            ";".join(signed_headers),
            "UNSIGNED-PAYLOAD",
        ]
    )
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    # Raises InvalidSignature on a mismatch.
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    query["email"] = email
    return query
