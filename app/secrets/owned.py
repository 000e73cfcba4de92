"""Where the registry keeps keys submitted through the API: references it owns, one per bucket.

Keys a project member PUTs for a static bucket never go where the member says: the registry
writes them under its own prefix (``SELF_SERVICE_SECRETS``), grouped by project, so the
registry's own secrets policy can be scoped to that prefix and no one can point a bucket at a
secret stored for someone else.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from app.errors import DependencyUnavailable
from app.secrets.base import AWS_SM, FILE, VAULT, backend_scheme

# Characters every backend's names accept; anything else in a project path is hashed away.
_SAFE = re.compile(r"^[A-Za-z0-9_.@+=-]+$")
# Backends whose own versioning a rotation can use, with the prefix used when none is set.
_DEFAULT_PREFIX = {
    AWS_SM: "aws-sm://bucket-registry/self-service",
    VAULT: "vault://secret/bucket-registry/self-service",
}


class OwnedSecrets:
    """Builds the registry-owned reference of a bucket's API-submitted keys."""

    def __init__(
        self, prefix: str | None, *, default_backend: str, file_dir: Path | None = None
    ) -> None:
        if prefix is None:
            scheme = backend_scheme(default_backend)
            prefix = _DEFAULT_PREFIX.get(scheme)
            if prefix is None and scheme == FILE and file_dir is not None:
                prefix = f"file://{file_dir.resolve()}/self-service"
        self.prefix = prefix.rstrip("/") if prefix else None

    def ref_for(self, project_resource: str | None, bucket: str) -> str:
        """``<prefix>/projects/<project path>/<bucket>`` (``<prefix>/admin/<bucket>`` for a
        bucket of no project); 503 when no prefix is configured for this backend."""
        if self.prefix is None:
            raise DependencyUnavailable(
                "secrets",
                "no registry-owned secrets location is configured for API-submitted keys"
                " (set SELF_SERVICE_SECRETS)",
            )
        if project_resource:
            segments = project_resource.strip("/").split("/")
            if all(_SAFE.match(segment) for segment in segments):
                where = "projects/" + "/".join(segments)
            else:
                where = "projects/" + hashlib.sha256(project_resource.encode()).hexdigest()[:24]
        else:
            where = "admin"
        name = bucket if _SAFE.match(bucket) else hashlib.sha256(bucket.encode()).hexdigest()[:24]
        suffix = ".json" if self.prefix.startswith(f"{FILE}://") else ""
        return f"{self.prefix}/{where}/{name}{suffix}"

    def owns(self, ref: str | None) -> bool:
        return bool(ref and self.prefix and ref.startswith(self.prefix + "/"))
