"""Keyset pagination: opaque cursors and the page they lead to."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Any]
    next_cursor: str | None


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# Cursors carry a bucket name or a row id; anything longer was not made by encode_cursor.
MAX_CURSOR_LENGTH = 2048
MAX_CURSOR_TEXT = 1024
# Row ids are BIGINT: a larger number cannot be bound as a query parameter.
MAX_CURSOR_INT = 2**63 - 1


def decode_cursor(cursor: str, key: str, kind: type) -> Any:
    """The ``key`` value of a cursor, checked to be a ``kind`` a query can take as a parameter."""
    bad = InvalidInput("cursor: not a cursor returned by this API")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        value = decoded[key] if isinstance(decoded, dict) else None
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise bad from None
    # bool is an int to Python, not to a query.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise bad
    if isinstance(value, int) and not 0 <= value <= MAX_CURSOR_INT:
        raise bad
    if isinstance(value, str) and (
        len(value) > MAX_CURSOR_TEXT or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    ):
        raise bad
    return value
