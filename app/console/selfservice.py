"""Seams to the self-service features (pending registrations, approval, stored validation
results, credential rotation by value).

Each one uses the registry service's method when this deployment's service has it and falls
back to what the registry offers without it: no pending list, and rotation by pointing the
bucket at a new secret reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.health.drift import DRIFT_SOURCE
from app.health.probe import ProbeReport
from app.health.selfservice import SelfService, redact_ref
from app.registry.records import BucketStatus
from app.registry.service import Actor, RegistryService

PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """A bucket's last validation as its record keeps it (every replica sees the same)."""

    bucket: str
    ok: bool
    at: datetime
    checks: tuple[Check, ...]
    source: str | None = None  # "drift": made by the drift check, not a validate call

    @property
    def from_drift_check(self) -> bool:
        return self.source == DRIFT_SOURCE


def supports_pending(registry: RegistryService) -> bool:
    return PENDING in {status.value for status in BucketStatus}


async def approve(selfservice: SelfService, name: str, actor: Actor) -> None:
    await selfservice.approve(name, actor)


async def reject(selfservice: SelfService, name: str, actor: Actor) -> None:
    await selfservice.reject(name, actor)


def supports_key_rotation(registry: RegistryService) -> bool:
    return True


async def put_credentials(
    selfservice: SelfService,
    name: str,
    payload: dict[str, Any],
    actor: Actor,
    *,
    registrant: bool,
) -> ProbeReport:
    # ``registrant``: the API's rules for a registrant's keys apply (pending again in
    # SELF_SERVICE_APPROVAL=admin mode, refused for a rejected bucket).
    return await selfservice.put_credentials(name, payload, actor, registrant=registrant)


def stored_validation(
    name: str, stored: Mapping[str, Any] | None, secret_ref: str | None
) -> ValidationResult | None:
    """The validation the bucket's record keeps (every replica sees it), if any; a reason
    naming the bucket's secret reference (kept before references were redacted at the
    source) shows only its fingerprint."""
    if not stored:
        return None
    try:
        at = datetime.fromisoformat(str(stored["at"]))
        checks = tuple(
            Check(
                check, str(value["status"]), redact_ref(str(value.get("reason") or ""), secret_ref)
            )
            for check, value in dict(stored["checks"]).items()
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    source = stored.get("source")
    return ValidationResult(
        name, bool(stored.get("ok")), at, checks, source if isinstance(source, str) else None
    )
