"""Form bodies into the registry's own shapes: the console validates nothing the API would not."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput
from app.registry.validation import LABEL_KEY_RE

MAX_FORM_BYTES = 64 * 1024
_MAX_FIELDS = 200
M = TypeVar("M", bound=BaseModel)


class Form:
    """An ``application/x-www-form-urlencoded`` body: one value per name, repeats kept apart."""

    def __init__(self, body: bytes) -> None:
        if len(body) > MAX_FORM_BYTES:
            raise InvalidInput(f"form body larger than {MAX_FORM_BYTES} bytes")
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=_MAX_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("the form could not be read (expected UTF-8 form fields)") from None
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            self.values.setdefault(name, []).append(value)

    def text(self, name: str) -> str | None:
        """The field, trimmed; None when absent or blank (blank clears an optional field)."""
        value = (self.values.get(name) or [""])[-1].strip()
        return value or None

    def flag(self, name: str) -> bool:
        return name in self.values

    def names(self) -> set[str]:
        return set(self.values)


def labels(raw: str | None) -> dict[str, str]:
    """``key:value`` lines (or ``key=value``) into a label map."""
    result: dict[str, str] = {}
    for line in (raw or "").splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not LABEL_KEY_RE.match(key):
            raise InvalidInput(f"labels: expected key:value with a valid key, got {line[:80]!r}")
        result[key] = value.strip()
    return result


def build(model: type[M], values: dict[str, Any]) -> M:
    """The model, or a 400 naming each bad field, never echoing what was typed into it."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'form'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise InvalidInput("; ".join(problems)) from None
