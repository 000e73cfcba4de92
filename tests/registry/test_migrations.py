"""Revision 0002 on both databases: rows written at 0001 come out with the new rules applied."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import migrate
from tests.support.database import database_at, run_in_thread


@pytest.fixture(params=["postgresql", "sqlite"])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database at revision 0001 (before ``public`` and the upload-flag backfill)."""
    with database_at(request.param, "0001", tmp_path) as url:
        yield url


async def _insert(url: str, name: str, upload: bool, bindings: list[dict[str, bool]]) -> None:
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    bucket_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO bucket (id, name, provider, auth_mode, labels, status,"
                " data_upload_allowed, is_default_upload, requester_pays, version,"
                " created_at, updated_at) VALUES (:id, :name, 'aws', 'workload_identity',"
                " '{}', 'active', :upload, false, false, 1, :now, :now)"
            ).bindparams(sa.bindparam("id", type_=sa.Uuid())),
            {"id": bucket_id, "name": name, "upload": upload, "now": now},
        )
        for ops in bindings:
            await connection.execute(
                sa.text(
                    "INSERT INTO bucket_policy_binding (id, bucket_id, resource_path,"
                    " allowed_ops, created_at) VALUES (:id, :bucket_id, '/programs', :ops, :now)"
                ).bindparams(
                    sa.bindparam("id", type_=sa.Uuid()),
                    sa.bindparam("bucket_id", type_=sa.Uuid()),
                ),
                {"id": uuid.uuid4(), "bucket_id": bucket_id, "ops": json.dumps(ops), "now": now},
            )
    await engine.dispose()


async def _rows(url: str) -> dict[str, tuple[bool, bool]]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        result = await connection.execute(
            sa.text("SELECT name, data_upload_allowed, public FROM bucket")
        )
        rows = {name: (bool(upload), bool(public)) for name, upload, public in result}
    await engine.dispose()
    return rows


READ = {"read": True, "write": False, "delete": False, "multipart": False}
WRITE = {"read": True, "write": True, "delete": False, "multipart": False}
MULTIPART = {"read": False, "write": False, "delete": False, "multipart": True}


async def test_0002_keeps_uploads_where_bindings_allowed_them(old_database: str) -> None:
    await _insert(old_database, "writes", False, [READ, WRITE])
    await _insert(old_database, "multipart-only", False, [MULTIPART])
    await _insert(old_database, "reads", False, [READ])
    await _insert(old_database, "unbound", False, [])
    await _insert(old_database, "already", True, [READ])

    run_in_thread(migrate, old_database)

    assert await _rows(old_database) == {
        "writes": (True, False),
        "multipart-only": (True, False),
        "reads": (False, False),
        "unbound": (False, False),
        # An operator's explicit flag is left alone, even without an uploading binding.
        "already": (True, False),
    }


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    with database_at(request.param, "0002", tmp_path) as url:
        yield url


async def _self_service_columns(url: str) -> dict[str, tuple[object, object, object, str]]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        result = await connection.execute(
            sa.text(
                "SELECT name, project_resource, pending_external_id, validation, status FROM bucket"
            )
        )
        rows = {
            name: (project, pending, validation, status)
            for name, project, pending, validation, status in result
        }
    await engine.dispose()
    return rows


async def test_0004_adds_the_self_service_columns_and_downgrades(database_at_0002: str) -> None:
    from alembic import command
    from app.db import alembic_config

    await _insert(database_at_0002, "before-self-service", False, [READ])
    run_in_thread(migrate, database_at_0002)
    assert await _self_service_columns(database_at_0002) == {
        "before-self-service": (None, None, None, "active")
    }
    engine = create_async_engine(database_at_0002)
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "UPDATE bucket SET project_resource = '/programs/DEV/projects/ABC',"
                " status = 'pending', validation = :validation"
            ),
            {"validation": json.dumps({"ok": False})},
        )
    await engine.dispose()
    rows = await _self_service_columns(database_at_0002)
    project, _pending, validation, status = rows["before-self-service"]
    assert (project, status) == ("/programs/DEV/projects/ABC", "pending")
    assert validation in ({"ok": False}, json.dumps({"ok": False}))

    run_in_thread(command.downgrade, alembic_config(database_at_0002), "0002")
    assert await _rows(database_at_0002) == {"before-self-service": (False, False)}
    run_in_thread(migrate, database_at_0002)


async def _billing(url: str) -> dict[str, object]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        result = await connection.execute(sa.text("SELECT name, billing_projects FROM bucket"))
        rows = {
            name: json.loads(value) if isinstance(value, str) else value for name, value in result
        }
    await engine.dispose()
    return rows


async def test_0003_gives_existing_buckets_an_empty_billing_allow_list_and_goes_back(
    database_at_0002: str,
) -> None:
    from alembic import command
    from app.db import alembic_config

    await _insert(database_at_0002, "before", False, [READ])

    run_in_thread(migrate, database_at_0002)
    assert await _billing(database_at_0002) == {"before": []}

    engine = create_async_engine(database_at_0002)
    async with engine.begin() as connection:
        await connection.execute(
            sa.text("UPDATE bucket SET billing_projects = :projects WHERE name = 'before'"),
            {"projects": json.dumps(["lab-billing-01"])},
        )
    await engine.dispose()
    assert await _billing(database_at_0002) == {"before": ["lab-billing-01"]}

    run_in_thread(command.downgrade, alembic_config(database_at_0002), "0002")
    assert await _rows(database_at_0002) == {"before": (False, False)}
    run_in_thread(migrate, database_at_0002)
    assert await _billing(database_at_0002) == {"before": []}
