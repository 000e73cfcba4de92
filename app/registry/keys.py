"""Object keys and prefixes a caller may name (docs/authorization.md).

The rules keep a signed URL pointing where the authorization decision thought it would: a
leading ``/``, ``.``/``..`` segments or control characters can make proxies, S3-compatible
stores and log readers disagree about which object a key names.
"""

from __future__ import annotations

import re

from app.errors import InvalidInput

MAX_KEY_BYTES = 1024

# C0 controls, DEL and the C1 block: exactly Unicode category Cc.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is an acceptable object key, else raise ``InvalidInput``."""
    _check(key, "key")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is an acceptable key prefix (a key ending in ``/``)."""
    _check(prefix, "prefix")
    if not prefix.endswith("/"):
        raise InvalidInput("prefix must end with '/'")
    return prefix


def _check(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates arrive through JSON "\ud800" escapes and cannot be stored anywhere.
        raise InvalidInput(f"{what} is not valid Unicode (unpaired surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidInput(f"{what} is {size} bytes in UTF-8; at most {MAX_KEY_BYTES} are allowed")
    if value.startswith("/"):
        raise InvalidInput(f"{what} must not start with '/'")
    control = _CONTROL.search(value)
    if control is not None:
        raise InvalidInput(
            f"{what} contains control character U+{ord(control.group()):04X} "
            f"at position {control.start()}"
        )
    for segment in value.split("/"):
        if segment in (".", ".."):
            raise InvalidInput(f"{what} must not contain a '{segment}' path segment")
