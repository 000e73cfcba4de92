"""Database engine, per-request sessions and migrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alembic import command
from app.config import Settings
from app.errors import DependencyUnavailable

import app  # isort: skip

# Errors that mean "the database cannot answer", as opposed to a bug or a constraint violation.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    asyncio.TimeoutError,
    ConnectionError,
)


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(getattr(exc, "orig", None) or exc).__name__
    return name in {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "ConnectionRefusedError",
    }


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 15})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Foreign keys (for cascades) are off by default in SQLite; WAL lets readers
            # proceed while a writer commits.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        # A dead database must surface as a 503 quickly, not hang a request.
        connect_args={"timeout": 5, "command_timeout": 10},
    )


class Database:
    """The engine and a session factory; the only shared state between replicas lives behind it."""

    def __init__(
        self, settings: Settings, observe: Callable[[str, float, bool], None] | None = None
    ) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.query_count = 0
        sync_engine = self.engine.sync_engine

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _started(_conn, _cursor, _statement, _params, context, _many):
            self.query_count += 1
            context._bucket_registry_started = time.perf_counter()

        if observe is None:
            return

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _finished(_conn, _cursor, _statement, _params, context, _many):
            started = getattr(context, "_bucket_registry_started", None)
            if started is not None:
                observe("database", time.perf_counter() - started, True)

        @event.listens_for(sync_engine, "handle_error")
        def _failed(_context):
            observe("database", 0.0, False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error.

        Connection failures become ``DependencyUnavailable("database")``.
        """
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except Exception as exc:
            if is_outage(exc):
                raise DependencyUnavailable("database") from exc
            raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def alembic_config(database_url: str) -> Config:
    candidates = [Path(app.__file__).resolve().parent.parent, Path.cwd()]
    root = next((path for path in candidates if (path / "alembic" / "env.py").exists()), None)
    if root is None:
        raise RuntimeError("alembic/ directory not found next to the package or in the cwd")
    config = Config(str(root / "alembic.ini")) if (root / "alembic.ini").exists() else Config()
    config.set_main_option("script_location", str(root / "alembic"))
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the schema (synchronous: runs its own event loop; call from the CLI or a thread)."""
    command.upgrade(alembic_config(database_url), revision)
