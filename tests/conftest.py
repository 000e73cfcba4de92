"""Session-wide real components: moto server, PostgreSQL database, Fence-like JWKS issuer and
Arborist stub, each started once on 127.0.0.1; tests clean their own data."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.db import migrate
from app.main import create_app
from tests.support.arborist import ArboristStub
from tests.support.database import PostgresDatabase, run_in_thread
from tests.support.fence import FenceIssuer
from tests.support.moto import MotoServer
from tests.support.s3_gateway import S3Gateway

# botocore reads these itself; the moto server accepts any key for SDK calls.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The moto server, emptied before the test."""
    moto_server.reset()
    yield moto_server


@pytest.fixture(scope="session")
def gateway_server(moto_server: MotoServer) -> Iterator[S3Gateway]:
    """A SigV4-checking gateway in front of moto: bytes through it prove their signatures."""
    gateway = S3Gateway(moto_server.url).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def gateway(gateway_server: S3Gateway, moto: MotoServer) -> S3Gateway:
    """The gateway in front of a freshly reset moto, with no keys; packages add theirs."""
    gateway_server.reset()
    return gateway_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase().create()
    yield database
    database.drop()


@pytest.fixture(scope="session")
def issuer() -> Iterator[FenceIssuer]:
    fence = FenceIssuer().start()
    yield fence
    fence.stop()


@pytest.fixture(scope="session")
def arborist_server(issuer: FenceIssuer) -> Iterator[ArboristStub]:
    stub = ArboristStub(issuer).start()
    yield stub
    stub.stop()


@pytest.fixture
def arborist(arborist_server: ArboristStub) -> Iterator[ArboristStub]:
    """The Arborist stub with only the default admin policy, running and healthy."""
    arborist_server.reset()
    if not arborist_server.server.running:
        arborist_server.start()
    yield arborist_server
    arborist_server.reset()
    if not arborist_server.server.running:
        arborist_server.start()


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty, migrated database: the session's PostgreSQL one, or a fresh SQLite file."""
    if request.param == "postgresql":
        database: PostgresDatabase = request.getfixturevalue("postgres")
        await database.truncate()
        yield database.url
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
        run_in_thread(migrate, url)
        yield url


@pytest.fixture
async def pg_url(postgres: PostgresDatabase) -> str:
    """The session's PostgreSQL database, emptied."""
    await postgres.truncate()
    return postgres.url


@pytest.fixture
def make_settings(issuer: FenceIssuer, arborist: ArboristStub):  # type: ignore[no-untyped-def]
    def make(database_url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "arborist_url": arborist.url,
            "user_api": issuer.user_api,
            "arborist_timeout": 1.0,
            "authz_cache_ttl": 0,
            "log_json": True,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings, database_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(database_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app (with its lifespan) behind an in-process HTTP client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


@pytest.fixture
def admin_headers(issuer: FenceIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token('admin')}"}
