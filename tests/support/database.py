"""A throwaway PostgreSQL database per test session (and SQLite files per test)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from app.db import migrate

PG_ADMIN_DSN = os.environ.get(
    "BUCKET_REGISTRY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = "bucket_audit, bucket_policy_binding, bucket_prefix, bucket"


def run_in_thread(fn, *args):  # type: ignore[no-untyped-def]
    """Run blocking setup (which may start its own event loop) outside the test's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


class PostgresDatabase:
    def __init__(self) -> None:
        self.name = f"bucket_registry_test_{uuid.uuid4().hex[:10]}"
        base, _, _ = PG_ADMIN_DSN.rpartition("/")
        self.dsn = f"{base}/{self.name}"

    @property
    def url(self) -> str:
        return _sqlalchemy_url(self.dsn)

    async def _admin(self, sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def create(self, revision: str = "head") -> PostgresDatabase:
        # No skip when PostgreSQL is missing: the suite must fail loudly in CI instead.
        run_in_thread(asyncio.run, self._admin(f'CREATE DATABASE "{self.name}"'))
        run_in_thread(migrate, self.url, revision)
        return self

    def drop(self) -> None:
        drop = f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
        run_in_thread(asyncio.run, self._admin(drop))

    async def truncate(self) -> None:
        connection = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await connection.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        finally:
            await connection.close()


@contextmanager
def database_at(kind: str, revision: str, tmp_path: Path) -> Iterator[str]:
    """A throwaway ``postgresql`` or ``sqlite`` database migrated only to ``revision``, for
    testing the migrations that follow it; yields its SQLAlchemy URL."""
    if kind == "postgresql":
        database = PostgresDatabase().create(revision)
        try:
            yield database.url
        finally:
            database.drop()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        run_in_thread(migrate, url, revision)
        yield url
