"""Seams to the self-service features (pending registrations, approval, stored validation
results, credential rotation by value).

Each one uses the registry service's method when this deployment's service has it and falls
back to what the registry offers without it: no pending list, the last ``validate`` result this
replica saw, and rotation by pointing the bucket at a new secret reference.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.health.probe import ProbeReport
from app.health.selfservice import SelfService
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
    bucket: str
    ok: bool
    at: datetime
    checks: tuple[Check, ...]
    stored: bool  # False: only this replica's memory of a check run from the console

    @classmethod
    def of(cls, report: ProbeReport, at: datetime | None = None) -> ValidationResult:
        checks = tuple(Check(n, c.status, c.reason) for n, c in report.checks.items())
        return cls(report.bucket, report.ok, at or datetime.now(UTC), checks, stored=False)


class RecentValidations:
    """The last probe result per bucket on this replica, bounded; forgotten on restart."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._results: OrderedDict[str, ValidationResult] = OrderedDict()
        self._max = max_entries

    def remember(self, result: ValidationResult) -> None:
        self._results[result.bucket] = result
        self._results.move_to_end(result.bucket)
        while len(self._results) > self._max:
            self._results.popitem(last=False)

    def get(self, name: str) -> ValidationResult | None:
        return self._results.get(name)

    def all(self) -> list[ValidationResult]:
        return list(self._results.values())


def supports_pending(registry: RegistryService) -> bool:
    return PENDING in {status.value for status in BucketStatus}


async def approve(selfservice: SelfService, name: str, actor: Actor) -> None:
    await selfservice.approve(name, actor)


async def reject(selfservice: SelfService, name: str, actor: Actor) -> None:
    await selfservice.reject(name, actor)


def supports_key_rotation(registry: RegistryService) -> bool:
    return True


async def put_credentials(
    selfservice: SelfService, name: str, payload: dict[str, Any], actor: Actor
) -> ProbeReport:
    # An admin's console: the registrant rules (pending again after new keys) are the API's.
    return await selfservice.put_credentials(name, payload, actor, registrant=False)


def stored_validation(name: str, stored: Mapping[str, Any] | None) -> ValidationResult | None:
    """The validation the bucket's record keeps (every replica sees it), if any."""
    if not stored:
        return None
    try:
        at = datetime.fromisoformat(str(stored["at"]))
        checks = tuple(
            Check(check, str(value["status"]), str(value.get("reason") or ""))
            for check, value in dict(stored["checks"]).items()
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return ValidationResult(name, bool(stored.get("ok")), at, checks, stored=True)


async def last_validation(
    registry: RegistryService, recent: RecentValidations, name: str
) -> ValidationResult | None:
    bucket = await registry.get_bucket(name)
    stored = stored_validation(name, getattr(bucket, "validation", None))
    seen = recent.get(name)
    if stored is None or (seen is not None and seen.at > stored.at):
        return seen
    return stored
