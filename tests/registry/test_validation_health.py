"""``RegistryService.validation_health``: what the stored validations say, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from app.db import Database
from app.registry.records import BucketStatus
from app.registry.schemas import BucketCreate
from app.registry.service import Actor, RegistryService

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ADMIN = Actor("admin")


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[RegistryService]:
    db = Database(Settings(database_url=database_url))
    try:
        yield RegistryService(db)
    finally:
        await db.dispose()


async def add(registry: RegistryService, name: str, project: str | None = None) -> None:
    await registry.create_bucket(
        BucketCreate(
            name=name, provider="aws", auth_mode="workload_identity", project_resource=project
        ),
        ADMIN,
    )


def result(ok: bool, at: datetime) -> dict[str, object]:
    return {"at": at.isoformat(), "ok": ok, "checks": {"bucket_listable": {"status": "pass"}}}


async def test_failing_and_stale_buckets_come_from_the_stored_results(
    registry: RegistryService,
) -> None:
    for name in ("a-fresh-pass", "b-fresh-fail", "c-old-pass", "d-never", "e-old-fail"):
        await add(registry, name)
    await add(registry, "f-suspended-fail")
    await add(registry, "g-rejected-fail")
    await registry.store_validation("a-fresh-pass", result(True, NOW - timedelta(hours=1)))
    await registry.store_validation("b-fresh-fail", result(False, NOW - timedelta(hours=1)))
    await registry.store_validation("c-old-pass", result(True, NOW - timedelta(days=3)))
    await registry.store_validation("e-old-fail", result(False, NOW - timedelta(days=5)))
    for name, status in (("f-suspended-fail", "suspended"), ("g-rejected-fail", "rejected")):
        await registry.store_validation(name, result(False, NOW))
        await registry.set_status(name, BucketStatus(status), ADMIN)

    health = await registry.validation_health(stale_before=NOW - timedelta(days=2), limit=10)

    assert [row.name for row in health.failing] == [
        "b-fresh-fail",
        "e-old-fail",
        "f-suspended-fail",
    ]
    assert health.failing_total == 3
    # Active only, never validated first, then the least recently validated.
    assert [row.name for row in health.stale] == ["d-never", "e-old-fail", "c-old-pass"]
    assert health.stale_total == 3

    first = await registry.validation_health(stale_before=NOW - timedelta(days=2), limit=1)
    assert [row.name for row in first.failing] == ["b-fresh-fail"] and first.failing_total == 3
    assert [row.name for row in first.stale] == ["d-never"] and first.stale_total == 3


async def test_a_project_scope_keeps_other_projects_out(registry: RegistryService) -> None:
    await add(registry, "abc", "/programs/DEV/projects/ABC")
    await add(registry, "abc-raw", "/programs/DEV/projects/ABC/raw")
    await add(registry, "abcd", "/programs/DEV/projects/ABCD")
    await add(registry, "none")
    for name in ("abc", "abc-raw", "abcd", "none"):
        await registry.store_validation(name, result(False, NOW))

    health = await registry.validation_health(
        stale_before=NOW - timedelta(days=2),
        limit=10,
        project_resources=("/programs/DEV/projects/ABC",),
    )
    assert [row.name for row in health.failing] == ["abc", "abc-raw"]
    assert health.failing_total == 2
