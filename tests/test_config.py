"""Settings come from BUCKET_REGISTRY_* variables, then an optional YAML file, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BUCKET_REGISTRY_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_local_setup() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./bucket-registry.db"
    assert settings.admin_resource == "/services/bucket-registry"
    assert settings.max_presigned_url_ttl == 3600
    assert settings.endpoint_allowlist == []
    assert settings.is_sqlite


def test_environment_yaml_file_and_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text(
        "database_url: postgresql+asyncpg://registry@db/registry\n"
        "max_presigned_url_ttl: 900\n"
        "endpoint_allowlist: [10.0.0.0/8]\n"
    )
    monkeypatch.setenv("BUCKET_REGISTRY_CONFIG_FILE", str(config))
    monkeypatch.setenv("BUCKET_REGISTRY_MAX_PRESIGNED_URL_TTL", "1200")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://registry@db/registry"
    assert settings.max_presigned_url_ttl == 1200  # the environment wins over the file
    assert settings.endpoint_allowlist == ["10.0.0.0/8"]
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "127.0.0.1, minio.internal:9000 ,10.0.0.0/8",
            ["127.0.0.1", "minio.internal:9000", "10.0.0.0/8"],
        ),
        ('["a.internal", "b.internal"]', ["a.internal", "b.internal"]),
        ("", []),
    ],
)
def test_allowlist_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("BUCKET_REGISTRY_ENDPOINT_ALLOWLIST", raw)
    assert Settings().endpoint_allowlist == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_PRESIGNED_URL_TTL", "0"), ("SECRET_CACHE_TTL", "-1"), ("ARBORIST_TIMEOUT", "soon")],
)
def test_invalid_values_are_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"BUCKET_REGISTRY_{name}", value)
    with pytest.raises(ValidationError):
        Settings()
