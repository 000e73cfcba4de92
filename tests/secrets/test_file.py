"""File backend: JSON objects on local disk (local/dev mode)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from app.errors import InvalidInput, SecretNotFound
from app.secrets.base import SecretRef, parse_secret_ref, validate_secret_version
from app.secrets.file import FileSecretResolver

CREDS = {"access_key_id": "minioadmin", "secret_access_key": "file-secret-value"}


def ref(path: Path | str) -> SecretRef:
    return parse_secret_ref(f"file://{path}", "aws_sm")


async def test_reads_a_json_object(tmp_path: Path):
    path = tmp_path / "minio.json"
    path.write_text(json.dumps(CREDS))

    payload = await FileSecretResolver().get(ref(path), None)

    assert payload == CREDS
    assert payload.version is None


async def test_a_pinned_version_is_refused(tmp_path: Path):
    path = tmp_path / "minio.json"
    path.write_text(json.dumps(CREDS))
    with pytest.raises(SecretNotFound, match="no versions"):
        await FileSecretResolver().get(ref(path), "3")
    with pytest.raises(InvalidInput, match="not versioned"):
        validate_secret_version(ref(path), "3")


async def test_put_round_trips_atomically_with_owner_only_access(tmp_path: Path):
    resolver = FileSecretResolver(root=tmp_path)
    target = ref(tmp_path / "imported" / "bucket.json")

    assert await resolver.put(target, CREDS) is None
    assert await resolver.get(target, None) == CREDS
    await resolver.put(target, {"access_key_id": "new", "secret_access_key": "rotated"})
    assert (await resolver.get(target, None))["secret_access_key"] == "rotated"

    written = tmp_path / "imported" / "bucket.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert [p.name for p in written.parent.iterdir()] == ["bucket.json"]  # no temp files left


async def test_paths_outside_the_secrets_dir_are_refused(tmp_path: Path):
    root = tmp_path / "secrets"
    root.mkdir()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(CREDS))
    (root / "sneaky.json").symlink_to(outside)
    resolver = FileSecretResolver(root=root)

    for path in (outside, root / "sneaky.json"):
        with pytest.raises(SecretNotFound, match="outside the file secrets directory"):
            await resolver.get(ref(path), None)
    with pytest.raises(SecretNotFound, match="outside"):
        await resolver.put(ref(tmp_path / "escape.json"), CREDS)
    assert not (tmp_path / "escape.json").exists()


async def test_missing_unreadable_and_malformed_files_are_not_found(tmp_path: Path):
    resolver = FileSecretResolver()
    broken = tmp_path / "broken.json"
    broken.write_text('{"secret_access_key": "file-secret-value"')  # truncated

    with pytest.raises(SecretNotFound, match="FileNotFoundError"):
        await resolver.get(ref(tmp_path / "absent.json"), None)
    with pytest.raises(SecretNotFound, match="IsADirectoryError"):
        await resolver.get(ref(tmp_path), None)
    with pytest.raises(SecretNotFound, match="not valid JSON") as caught:
        await resolver.get(ref(broken), None)
    assert "file-secret-value" not in str(caught.value)
