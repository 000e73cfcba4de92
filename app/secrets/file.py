"""JSON files under one directory (``file:///root/.../name.json``): Kubernetes Secrets mount mode.

The backend exists only when a root is configured — ``BUCKET_REGISTRY_FILE_SECRETS_DIR``,
where the chart mounts the named Secrets, or development mode's own secrets directory. A
reference must resolve, symlinks followed, inside that root; anything else is refused before a
byte is read. Admins choose references, so what they learn from an error is kept to "usable or
not": never whether a path exists, what kind of file it is, or which keys it holds.

Files are not versioned: a pinned version is refused rather than silently ignored, so a
``secret_version`` copied from another backend cannot look as if it took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from app.errors import InvalidInput, SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, StagedSecret, payload_from_json

log = logging.getLogger(__name__)

# A service-account key is a few KiB; nothing a bucket needs comes near this.
MAX_FILE_BYTES = 256 * 1024

OUTSIDE_ROOT = "file:// secrets must lie inside the file secrets directory"


def confined_path(root: Path, location: str) -> Path:
    """``location`` with every symlink resolved, if that lies inside ``root``.

    Raises ``InvalidInput`` with one message for every way out (a path elsewhere, ``..``, a
    symlink pointing outside, a loop), so the answer says nothing about what exists there.
    """
    path = Path(location)
    if not path.is_absolute() or ".." in path.parts:
        raise InvalidInput(OUTSIDE_ROOT)
    try:
        real_root = root.resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError):
        raise InvalidInput(OUTSIDE_ROOT) from None
    if resolved == real_root or not resolved.is_relative_to(real_root):
        raise InvalidInput(OUTSIDE_ROOT)
    return resolved


class FileSecretResolver:
    """Reads and writes payloads as JSON objects in files under ``root``.

    Disk I/O runs in a worker thread. Reads take regular files only, at most
    ``MAX_FILE_BYTES``, without following a symlink swapped in after the path was resolved;
    writes replace the file atomically and leave it readable by its owner only (mode 0600).
    """

    def __init__(self, *, root: Path) -> None:
        self.root = root

    def check(self, ref: SecretRef) -> None:
        """Registration-time check: ``InvalidInput`` unless ``ref`` is confined to the root.
        Nothing is opened or read."""
        confined_path(self.root, ref.location)

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        if version is not None:
            raise SecretNotFound(
                f"secret {ref.raw} is a file and has no versions; set secret_version to null"
            )
        try:
            data = await asyncio.to_thread(self._read, ref)
            return payload_from_json(data, ref, None)
        except (InvalidInput, SecretNotFound, OSError, ValueError) as exc:
            # The detail is for the operator's log; callers (admins included) learn only that
            # the reference is not usable.
            log.info(
                "file secret not usable",
                extra={"secret_ref": ref.raw, "reason": _reason(exc)},
            )
            raise SecretNotFound(
                f"secret {ref.raw} is not usable: it must be a readable JSON object of strings"
                " inside the file secrets directory"
            ) from None

    async def put(self, ref: SecretRef, payload: Mapping[str, str]) -> str | None:
        """Write ``payload`` to the file, replacing it atomically; files have no version id."""
        data = json.dumps(dict(payload), indent=2, sort_keys=True).encode()
        try:
            await asyncio.to_thread(self._write, ref, data)
        except InvalidInput:
            raise
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
        kept = Path(keep.ref.removeprefix("file://"))
        siblings = [other for other in await self._versions(ref) if other != kept]
        await asyncio.to_thread(self._remove, siblings)
        return len(siblings)

    async def remove(self, ref: SecretRef) -> None:
        await asyncio.to_thread(self._remove, [Path(ref.location), *await self._versions(ref)])

    async def _versions(self, ref: SecretRef) -> list[Path]:
        path = Path(ref.location)
        pattern = f"{path.stem}.{'[0-9a-f]' * 16}{path.suffix or '.json'}"
        return await asyncio.to_thread(lambda: list(path.parent.glob(pattern)))

    def _remove(self, paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                confined_path(self.root, str(path)).unlink()

    async def aclose(self) -> None:
        return None

    def _read(self, ref: SecretRef) -> bytes:
        path = confined_path(self.root, ref.location)
        # O_NOFOLLOW: the resolved path has no symlink left, so one appearing now is a swap.
        # O_NONBLOCK: a FIFO must not hang the worker thread.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValueError("not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        return data

    def _write(self, ref: SecretRef, data: bytes) -> None:
        path = confined_path(self.root, ref.location)
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


def _reason(exc: Exception) -> str:
    if isinstance(exc, InvalidInput | SecretNotFound):
        return exc.message
    if isinstance(exc, OSError):
        return type(exc).__name__
    return str(exc)
