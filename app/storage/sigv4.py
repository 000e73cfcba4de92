"""SigV4 query signing (presigned S3 URLs) with the per-URL work cut to two hashes.

The output is byte-for-byte what botocore's ``S3SigV4QueryAuth`` produces for the same
request (``tests/storage/test_equivalence.py`` holds it to that): operation parameters first,
in the caller's order, then the ``X-Amz-*`` parameters in botocore's order, then the
signature. What does not change between URLs is prepared once: the signing key per day (it
depends only on secret, day, region and service), the encoded credential scope and session
token, and the URL's scheme, host and base path — nothing is parsed back out of a URL.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from hashlib import sha256
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# What botocore's percent_encode leaves unencoded in query keys and values.
_QUERY_SAFE = "-_.~"


# Keys made only of these need no encoding at all; most do, and quote() is the dearest step.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch


def query_quote(value: str) -> str:
    return quote(value, safe=_QUERY_SAFE)


def quote_key(key: str) -> str:
    """``key`` as it appears in the URL path: UTF-8, everything but unreserved and ``/``
    percent-encoded (botocore's encoding of S3 keys)."""
    return key if _PLAIN_KEY(key) else quote(key.encode("utf-8"), safe="/~")


class SigV4QuerySigner:
    """Presigns URLs under ``base_url`` (ending in ``/``) for one key pair and one scope.

    Only the ``host`` header is signed and the payload is ``UNSIGNED-PAYLOAD``, as for every
    S3 presigned URL botocore makes.
    """

    def __init__(
        self,
        base_url: str,
        host: str,
        *,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None,
        region: str,
        service: str = "s3",
    ) -> None:
        self._base_url = base_url
        # The canonical URI is the URL's path exactly as sent: S3 does not normalise it.
        self._base_path = urlsplit(base_url).path
        self._canonical_headers = f"host:{' '.join(host.split())}\n"
        self._secret = secret_access_key
        self._access_key_id = access_key_id
        self._region = region
        self._service = service
        self._token = query_quote(session_token) if session_token is not None else None
        self._day = ""
        self._day_key = b""
        self._scope = ""
        self._credential = ""

    def _for_day(self, day: str) -> None:
        key = hmac.new(f"AWS4{self._secret}".encode(), day.encode(), sha256).digest()
        for part in (self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode(), sha256).digest()
        self._scope = f"{day}/{self._region}/{self._service}/aws4_request"
        self._credential = query_quote(f"{self._access_key_id}/{self._scope}")
        self._day, self._day_key = day, key

    def sign(
        self,
        method: str,
        quoted_key: str,
        timestamp: str,
        expires: int,
        params: Mapping[str, str] | None = None,
    ) -> str:
        """The presigned URL for ``method`` on ``base_url + quoted_key`` at ``timestamp``
        (``YYYYMMDDTHHMMSSZ``), valid ``expires`` seconds, with ``params`` signed in."""
        day = timestamp[:8]
        if day != self._day:
            self._for_day(day)
        pairs = [(query_quote(k), query_quote(str(v))) for k, v in params.items()] if params else []
        pairs += [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", self._credential),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if self._token is not None:
            pairs.append(("X-Amz-Security-Token", self._token))
        query = "&".join(f"{k}={v}" for k, v in pairs)
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
        canonical_request = (
            f"{method}\n{self._base_path}{quoted_key}\n{canonical_query}\n"
            f"{self._canonical_headers}\nhost\n{UNSIGNED_PAYLOAD}"
        )
        string_to_sign = (
            f"{ALGORITHM}\n{timestamp}\n{self._scope}\n"
            f"{sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = hmac.new(self._day_key, string_to_sign.encode(), sha256).hexdigest()
        return f"{self._base_url}{quoted_key}?{query}&X-Amz-Signature={signature}"
