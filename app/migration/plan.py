"""An import plan: what importing a fence-config.yaml would change, entry by entry.

Built by ``importer.plan_import``, rendered by ``report``, applied by ``importer.apply_import``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.fence_config.reader import AwsCredential
from app.registry.changes import BindingSpec, BucketWrite


class ChangeKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    SKIP = "skip"
    INVALID = "invalid"


class SecretState(enum.StrEnum):
    WRITE = "write"  # absent; written by this import
    PRESENT = "present"  # holds exactly the YAML keys
    DIFFERS = "differs"  # holds other keys (rotated since?); left alone
    MISSING = "missing"  # absent, and --write-secrets not given
    NO_KEYS = "no-keys"  # the YAML entry holds no keys to write
    UNKNOWN = "unknown"  # the backend could not say


@dataclass(slots=True)
class SecretAction:
    """Where one ``AWS_CREDENTIALS`` entry's keys live, and what the import does about it."""

    cred_name: str
    ref: str
    state: SecretState
    credential: AwsCredential = field(repr=False)

    @property
    def available(self) -> bool:
        return self.state in (SecretState.WRITE, SecretState.PRESENT, SecretState.DIFFERS)


@dataclass(slots=True)
class PlannedChange:
    kind: ChangeKind
    name: str
    source: str
    row: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    add_prefixes: tuple[str, ...] = ()
    add_bindings: tuple[BindingSpec, ...] = ()
    # Bindings the file describes that exist with other operations: (their ops now, the file's).
    set_bindings: tuple[tuple[frozenset[str], BindingSpec], ...] = ()
    bucket_id: uuid.UUID | None = None
    version: int | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    secret: SecretAction | None = None

    @property
    def writes(self) -> bool:
        return self.kind in (ChangeKind.CREATE, ChangeKind.UPDATE)

    @property
    def status(self) -> str | None:
        return self.row.get("status")

    def as_write(self) -> BucketWrite:
        """What the registry applies for this change (only for CREATE and UPDATE)."""
        return BucketWrite(
            name=self.name,
            row=self.row,
            diff=self.diff,
            add_prefixes=self.add_prefixes,
            add_bindings=self.add_bindings,
            set_bindings=self.set_bindings,
            bucket_id=self.bucket_id if self.kind is ChangeKind.UPDATE else None,
            version=self.version,
        )


@dataclass(slots=True)
class ImportPlan:
    source: str
    changes: list[PlannedChange]
    secrets: list[SecretAction]
    warnings: list[str]
    write_secrets: bool

    @property
    def invalid(self) -> list[PlannedChange]:
        return [change for change in self.changes if change.kind is ChangeKind.INVALID]

    @property
    def writes(self) -> list[PlannedChange]:
        return [change for change in self.changes if change.writes]

    @property
    def secret_writes(self) -> list[SecretAction]:
        return [action for action in self.secrets if action.state is SecretState.WRITE]

    @property
    def is_noop(self) -> bool:
        return not self.writes and not self.secret_writes

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for change in self.changes if change.kind is kind)
