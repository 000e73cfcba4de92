"""JSON files on local disk (``file:///abs/path.json``), for local and development setups only.

Files are not versioned: a pinned version is refused rather than silently ignored, so a
``secret_version`` copied from another backend cannot look as if it took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, StagedSecret, payload_from_json


class FileSecretResolver:
    """Reads and writes payloads as JSON objects in files.

    When ``root`` is set, every path must resolve (symlinks followed) inside it. Disk I/O runs
    in a worker thread; writes replace the file atomically and leave it readable by its owner
    only (mode 0600).
    """

    def __init__(self, *, root: Path | None = None) -> None:
        self._root = root

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        if version is not None:
            raise SecretNotFound(
                f"secret {ref.raw} is a file and has no versions; set secret_version to null"
            )
        try:
            data = await asyncio.to_thread(self._read, ref)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
            raise SecretNotFound(
                f"secret {ref.raw} not found or not readable ({type(exc).__name__})"
            ) from None
        except OSError as exc:
            raise SecretUnavailable(f"cannot read {ref.raw} ({type(exc).__name__})") from None
        return payload_from_json(data, ref, None)

    async def put(self, ref: SecretRef, payload: Mapping[str, str]) -> str | None:
        """Write ``payload`` to the file, replacing it atomically; files have no version id."""
        data = json.dumps(dict(payload), indent=2, sort_keys=True).encode()
        try:
            await asyncio.to_thread(self._write, ref, data)
        except OSError as exc:
            raise SecretUnavailable(f"cannot write {ref.raw} ({type(exc).__name__})") from None
        return None

    # Files have no versions: each staged payload is a file of its own next to ``ref``'s
    # (``name.<random>.json``), and the bucket's reference moves to it once it is validated.

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret:
        path = Path(ref.location)
        staged = path.with_name(f"{path.stem}.{secrets.token_hex(8)}{path.suffix or '.json'}")
        staged_ref = SecretRef(ref.scheme, str(staged), f"file://{staged}")
        await self.put(staged_ref, payload)
        return StagedSecret(staged_ref.raw, None)

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None:
        return None

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None:
        await asyncio.to_thread(self._remove, [Path(staged.ref.removeprefix("file://"))])

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int:
        path = Path(ref.location)
        kept = Path(keep.ref.removeprefix("file://"))
        siblings = await asyncio.to_thread(
            lambda: [
                other
                for other in path.parent.glob(
                    f"{path.stem}.{'[0-9a-f]' * 16}{path.suffix or '.json'}"
                )
                if other != kept
            ]
        )
        await asyncio.to_thread(self._remove, siblings)
        return len(siblings)

    def _remove(self, paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self._path(SecretRef("file", str(path), f"file://{path}")).unlink()

    async def aclose(self) -> None:
        return None

    def _path(self, ref: SecretRef) -> Path:
        path = Path(ref.location)
        if not path.is_absolute():
            raise SecretNotFound(f"secret {ref.raw} must name an absolute path")
        if self._root is not None:
            resolved = path.resolve()
            if not resolved.is_relative_to(self._root.resolve()):
                raise SecretNotFound(f"secret {ref.raw} is outside the file secrets directory")
            return resolved
        return path

    def _read(self, ref: SecretRef) -> bytes:
        return self._path(ref).read_bytes()

    def _write(self, ref: SecretRef, data: bytes) -> None:
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 in the target directory, so the payload is never
        # readable by others, even before the rename.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
