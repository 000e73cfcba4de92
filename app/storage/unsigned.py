"""Unsigned object URLs for public buckets, and the attribution parameters signed into GETs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import quote

from app.errors import InvalidInput
from app.registry.records import BucketRecord, Provider

# The names gen3cirrus signs into S3 download URLs for Fence (``custom_params``): the store's
# server access log then says whom a download was for.
AUDIT_PARAMS = frozenset({"user_id", "username", "client_id"})
_MAX_AUDIT_VALUE = 256
# Printable ASCII without the characters that delimit or escape a query string: the values are
# percent-encoded and signed anyway, but an access log is read by people and by parsers.
_AUDIT_VALUE_RE = re.compile(r"^[\x21-\x7e]+$")
_QUERY_SYNTAX = frozenset("&=?#%+")

GCS_PUBLIC_HOST = "https://storage.googleapis.com"


def validated_audit(audit: Mapping[str, str]) -> Mapping[str, str]:
    """``audit`` if its names are known and its values sane, else ``InvalidInput``."""
    unknown = sorted(set(audit) - AUDIT_PARAMS)
    if unknown:
        raise InvalidInput(
            f"audit: unknown parameter(s) {unknown}; allowed: {sorted(AUDIT_PARAMS)}"
        )
    for name, value in audit.items():
        if not isinstance(value, str) or not 1 <= len(value) <= _MAX_AUDIT_VALUE:
            raise InvalidInput(f"audit.{name}: must be 1-{_MAX_AUDIT_VALUE} characters")
        if not _AUDIT_VALUE_RE.match(value) or _QUERY_SYNTAX & set(value):
            raise InvalidInput(
                f"audit.{name}: printable ASCII without spaces or any of & = ? # % +"
            )
    return MappingProxyType(dict(audit))


# The registry's own attribution parameter, beside Fence's: the request that signed the URL.
REQUEST_ID_PARAM = "request_id"
_NOT_AUDIT_TEXT = re.compile(r"[^\x21-\x7e]|[&=?#%+]")


def audit_text(raw: str) -> str:
    """``raw`` made a valid audit value: characters ``validated_audit`` refuses become '-'."""
    return _NOT_AUDIT_TEXT.sub("-", raw)[:_MAX_AUDIT_VALUE] or "-"


def _quoted(key: str) -> str:
    # S3 and GCS both take the key as a path: '/' separates, everything else not unreserved
    # is percent-encoded (the encoding botocore uses in the signed URLs).
    return quote(key.encode("utf-8"), safe="/~")


def unsigned_url(bucket: BucketRecord, key: str) -> str:
    """The canonical, credential-free URL of ``key`` in ``bucket``.

    AWS: virtual-hosted ``https://{bucket}.s3.{region}.amazonaws.com/{key}``, Fence's
    ``https://{bucket}.s3.amazonaws.com/{key}`` when the region is unknown (S3 answers it for
    any region), path style for dotted names (a wildcard certificate covers one label only).
    minio / s3_compatible: the endpoint's path-style URL. gcp: storage.googleapis.com.
    """
    path = _quoted(key)
    if bucket.provider is Provider.GCP:
        return f"{GCS_PUBLIC_HOST}/{bucket.name}/{path}"
    if bucket.provider.needs_endpoint:
        endpoint = (bucket.endpoint or "").rstrip("/")
        return f"{endpoint}/{bucket.name}/{path}"
    host = f"s3.{bucket.region}.amazonaws.com" if bucket.region else "s3.amazonaws.com"
    if "." in bucket.name:
        return f"https://{host}/{bucket.name}/{path}"
    return f"https://{bucket.name}.{host}/{path}"
