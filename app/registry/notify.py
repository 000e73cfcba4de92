"""Cross-replica cache invalidation over PostgreSQL ``LISTEN/NOTIFY``.

Mutations ``NOTIFY`` inside their transaction (see ``RegistryService._record``), so every
replica hears of a change exactly when it commits. Each replica keeps one dedicated asyncpg
connection listening, reconnecting with backoff when it is lost; after a reconnect it drops
all cached buckets, since notifications sent while it was away are gone. TTLs stay the
safety net.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from app.registry.service import NOTIFY_CHANNEL, BucketChange

log = logging.getLogger(__name__)


def asyncpg_dsn(database_url: str) -> str:
    """The plain libpq-style DSN asyncpg wants, from a SQLAlchemy URL."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class NotifyListener:
    def __init__(
        self,
        database_url: str,
        on_change: Callable[[BucketChange], None],
        on_reset: Callable[[], None],
        *,
        origin: str | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self._origin = origin
        self._dsn = asyncpg_dsn(database_url)
        self._on_change = on_change
        self._on_reset = on_reset
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self.received = 0
        self.reconnects = 0
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bucket-change-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        first = True
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(NOTIFY_CHANNEL, self._notified)
                if not first:
                    self.reconnects += 1
                    self._on_reset()
                    log.warning("change listener reconnected; cached buckets dropped")
                first = False
                backoff = 0.5
                self.connected.set()
                while not lost.is_set():
                    # A dead TCP peer does not always close the socket: ping now and then.
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    except TimeoutError:
                        await connection.execute("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "change listener lost its database connection",
                    extra={"error": type(exc).__name__, "retry_in": backoff},
                )
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.received += 1
        try:
            data = json.loads(payload)
            change = BucketChange(uuid.UUID(data["id"]), str(data["name"]), str(data["action"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed change notification")
            return
        if self._origin is not None and data.get("origin") == self._origin:
            return
        self._on_change(change)
