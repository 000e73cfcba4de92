"""File backend: JSON objects under one directory (Kubernetes Secrets mount mode, dev mode)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import InvalidInput, SecretNotFound
from app.secrets.base import SecretRef, parse_secret_ref, validate_secret_version
from app.secrets.file import MAX_FILE_BYTES, OUTSIDE_ROOT, FileSecretResolver
from app.secrets.store import FILE_SECRETS_DISABLED, SecretStore

CREDS = {"access_key_id": "minioadmin", "secret_access_key": "file-secret-value"}
NOT_USABLE = "is not usable"


def ref(path: Path | str) -> SecretRef:
    return parse_secret_ref(f"file://{path}", "aws_sm")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.mkdir()
    return path


async def test_reads_a_json_object(root: Path):
    path = root / "minio.json"
    path.write_text(json.dumps(CREDS))

    payload = await FileSecretResolver(root=root).get(ref(path), None)

    assert payload == CREDS
    assert payload.version is None


async def test_a_kubernetes_secret_mount_resolves_through_its_own_symlinks(root: Path):
    # What the kubelet writes: key -> ..data/key, ..data -> ..<timestamp>/, all inside.
    stamped = root / "..2026_12_01_10_00_00.1"
    stamped.mkdir()
    (stamped / "bucket.json").write_text(json.dumps(CREDS))
    (root / "..data").symlink_to(stamped.name)
    (root / "bucket.json").symlink_to("..data/bucket.json")

    resolver = FileSecretResolver(root=root)
    resolver.check(ref(root / "bucket.json"))
    assert await resolver.get(ref(root / "bucket.json"), None) == CREDS


async def test_a_pinned_version_is_refused(root: Path):
    path = root / "minio.json"
    path.write_text(json.dumps(CREDS))
    with pytest.raises(SecretNotFound, match="no versions"):
        await FileSecretResolver(root=root).get(ref(path), "3")
    with pytest.raises(InvalidInput, match="not versioned"):
        validate_secret_version(ref(path), "3")


async def test_put_round_trips_atomically_with_owner_only_access(root: Path):
    resolver = FileSecretResolver(root=root)
    target = ref(root / "imported" / "bucket.json")

    assert await resolver.put(target, CREDS) is None
    assert await resolver.get(target, None) == CREDS
    await resolver.put(target, {"access_key_id": "new", "secret_access_key": "rotated"})
    assert (await resolver.get(target, None))["secret_access_key"] == "rotated"

    written = root / "imported" / "bucket.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert [p.name for p in written.parent.iterdir()] == ["bucket.json"]  # no temp files left


async def test_every_way_out_of_the_root_is_refused_alike_and_never_read(
    tmp_path: Path, root: Path
):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(CREDS))
    (root / "sneaky.json").symlink_to(outside)
    (root / "dir-link").symlink_to(tmp_path)
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    resolver = FileSecretResolver(root=root)

    escapes = [
        outside,  # exists, outside
        tmp_path / "absent.json",  # does not exist, outside
        Path("/etc/passwd"),
        root / "sneaky.json",  # a symlink inside pointing out
        root / "dir-link" / "elsewhere.json",  # a directory symlink pointing out
        root / "loop-a",  # a symlink loop
        root,  # the directory itself
    ]
    for path in escapes:
        with pytest.raises(InvalidInput) as refused:
            resolver.check(ref(path))
        assert refused.value.message == OUTSIDE_ROOT  # the same words, whatever is there
        with pytest.raises(SecretNotFound, match=NOT_USABLE):
            await resolver.get(ref(path), None)
    # `..` is refused by the reference's form before any path is looked at.
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        parse_secret_ref(f"file://{root}/../elsewhere.json", "aws_sm")
    with pytest.raises(InvalidInput, match="inside"):
        await resolver.put(ref(tmp_path / "escape.json"), CREDS)
    assert not (tmp_path / "escape.json").exists()


async def test_a_symlink_swapped_in_after_registration_is_not_followed(tmp_path: Path, root: Path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(CREDS))
    target = root / "bucket.json"
    target.write_text(json.dumps(CREDS))
    resolver = FileSecretResolver(root=root)
    resolver.check(ref(target))

    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(SecretNotFound, match=NOT_USABLE):
        await resolver.get(ref(target), None)


async def test_failures_say_only_not_usable(root: Path):
    resolver = FileSecretResolver(root=root)
    (root / "truncated.json").write_text('{"secret_access_key": "file-secret-value"')
    (root / "list.json").write_text(json.dumps(["hidden-key-name"]))
    (root / "numbers.json").write_text(json.dumps({"hidden-key-name": 1, "other-key": True}))
    (root / "huge.json").write_text(json.dumps({"k": "v" * MAX_FILE_BYTES}))
    (root / "a-dir").mkdir()
    os.mkfifo(root / "fifo")  # would block a plain open() forever

    messages = set()
    for name in ("absent.json", "truncated.json", "list.json", "numbers.json", "huge.json"):
        with pytest.raises(SecretNotFound) as caught:
            await resolver.get(ref(root / name), None)
        messages.add(caught.value.message.replace(str(root / name), "<ref>"))
    for name in ("a-dir", "fifo"):
        with pytest.raises(SecretNotFound) as caught:
            await resolver.get(ref(root / name), None)
        messages.add(caught.value.message.replace(str(root / name), "<ref>"))

    assert len(messages) == 1, messages
    (message,) = messages
    assert NOT_USABLE in message
    for leak in ("hidden-key-name", "other-key", "file-secret-value", "Error", "exist"):
        assert leak not in message


async def test_without_a_root_there_is_no_file_backend(tmp_path: Path):
    path = tmp_path / "minio.json"
    path.write_text(json.dumps(CREDS))
    store = SecretStore(Settings())
    with pytest.raises(InvalidInput) as refused:
        store.check(f"file://{path}", None)
    assert refused.value.message == FILE_SECRETS_DISABLED
    with pytest.raises(SecretNotFound, match="not enabled"):
        await store.get(f"file://{path}")
    with pytest.raises(ValueError, match="file_secrets_dir"):
        Settings(secrets_backend="file")
    await store.aclose()


async def test_the_store_checks_confinement_at_registration(tmp_path: Path, root: Path):
    store = SecretStore(Settings(file_secrets_dir=root))
    store.check(f"file://{root}/not-yet-there.json", None)  # may be mounted later
    with pytest.raises(InvalidInput, match="inside the file secrets directory"):
        store.check(f"file://{tmp_path}/elsewhere.json", None)
    with pytest.raises(InvalidInput, match="not versioned"):
        store.check(f"file://{root}/x.json", "3")
    await store.aclose()
