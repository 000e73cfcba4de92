"""Values the registry service takes and gives for whole-registration work (import, export).

``BindingSpec`` is a binding as someone wants it; ``BucketWrite`` is one bucket's worth of a
batch the registry applies in one transaction; ``RegisteredBucket`` is a bucket as it is now,
with its prefixes and bindings.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.registry.keys import validate_prefix
from app.registry.models import Bucket
from app.registry.records import Op
from app.registry.validation import validate_allowed_ops, validate_binding_path


@dataclass(frozen=True, slots=True)
class BindingSpec:
    resource_path: str
    ops: frozenset[str]
    prefix: str | None = None

    @classmethod
    def of(
        cls, resource_path: str, ops: Mapping[str, Any], prefix: str | None = None
    ) -> BindingSpec:
        """A validated binding (``InvalidInput`` names the bad field)."""
        allowed = validate_allowed_ops(ops)
        return cls(
            validate_binding_path(resource_path),
            frozenset(op for op, on in allowed.items() if on),
            validate_prefix(prefix) if prefix is not None else None,
        )

    @property
    def allowed_ops(self) -> dict[str, bool]:
        return {op.value: op.value in self.ops for op in Op}

    def ops_text(self) -> str:
        return ",".join(sorted(self.ops))

    def describe(self) -> str:
        where = self.prefix or "whole bucket"
        return f"{where} -> {self.resource_path} [{self.ops_text()}]"


@dataclass(frozen=True, slots=True)
class BucketWrite:
    """Create a bucket (``bucket_id`` None, ``row`` the validated registration) or update one
    that must still be at ``version`` (``diff``: field → (before, after)); either way add
    prefixes and bindings and set the operations of existing bindings."""

    name: str
    row: Mapping[str, Any] = field(default_factory=dict)
    diff: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    add_prefixes: tuple[str, ...] = ()
    add_bindings: tuple[BindingSpec, ...] = ()
    # Bindings that exist with other operations: (their ops now, the wanted binding).
    set_bindings: tuple[tuple[frozenset[str], BindingSpec], ...] = ()
    bucket_id: uuid.UUID | None = None
    version: int | None = None

    @property
    def creates(self) -> bool:
        return self.bucket_id is None


@dataclass(slots=True)
class RegisteredBucket:
    row: Bucket
    prefixes: dict[str, uuid.UUID]
    bindings: list[tuple[str | None, str, frozenset[str]]]
