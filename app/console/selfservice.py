"""Seams to the self-service features (pending registrations, approval, stored validation
results, credential rotation by value).

Each one uses the registry service's method when this deployment's service has it and falls
back to what the registry offers without it: no pending list, the last ``validate`` result this
replica saw, and rotation by pointing the bucket at a new secret reference.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.health.probe import ProbeReport
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
    statuses = {status.value for status in BucketStatus}
    return PENDING in statuses and callable(getattr(registry, "approve", None))


async def approve(registry: RegistryService, name: str, actor: Actor) -> None:
    await registry.approve(name, actor)  # type: ignore[attr-defined]


async def reject(registry: RegistryService, name: str, actor: Actor) -> None:
    await registry.reject(name, actor)  # type: ignore[attr-defined]


def supports_key_rotation(registry: RegistryService) -> bool:
    return callable(getattr(registry, "put_credentials", None))


async def put_credentials(
    registry: RegistryService, name: str, payload: dict[str, Any], actor: Actor
) -> None:
    await registry.put_credentials(name, payload, actor)  # type: ignore[attr-defined]


async def last_validation(
    registry: RegistryService, recent: RecentValidations, name: str
) -> ValidationResult | None:
    stored = getattr(registry, "last_validation", None)
    if callable(stored):
        found = await stored(name)
        if found is not None:
            return ValidationResult(
                name,
                bool(found["ok"]),
                found["at"],
                tuple(
                    Check(check, value["status"], value["reason"])
                    for check, value in found["checks"].items()
                ),
                stored=True,
            )
    return recent.get(name)
