"""Where the registry keeps keys submitted through the API: references it owns, one per bucket.

Keys a project member PUTs for a static bucket never go where the member says: the registry
writes them under its own prefix (``SELF_SERVICE_SECRETS``), grouped by project, so the
registry's own secrets policy can be scoped to that prefix and no one can point a bucket at a
secret stored for someone else.

Backends with paths (AWS Secrets Manager, Vault, files) nest the reference under the prefix:
``<prefix>/projects/<project path>/<bucket>``. Backends with flat names (a Kubernetes
namespace, a GCP project's secrets) append one name to the prefix's last segment:
``<prefix>-<bucket>-<hash>``, where the hash covers project and bucket, so two buckets never
share a name however their project paths are spelled, and the name is valid there (a
Kubernetes name is a lowercase DNS-1123 subdomain; a GCP secret id takes ``[A-Za-z0-9_-]``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from app.errors import DependencyUnavailable, InvalidInput
from app.secrets.base import (
    AWS_SM,
    FILE,
    GCP_SM,
    K8S,
    VAULT,
    backend_scheme,
    parse_secret_ref,
)

# Characters every backend's names accept; anything else in a project path is hashed away.
_SAFE = re.compile(r"^[A-Za-z0-9_.@+=-]+$")
# Backends whose own versioning a rotation can use, with the prefix used when none is set.
_DEFAULT_PREFIX = {
    AWS_SM: "aws-sm://bucket-registry/self-service",
    VAULT: "vault://secret/bucket-registry/self-service",
    # The chart's namespace for bucket secrets in a release namespace ``gen3``; the chart sets
    # the prefix itself from the namespace it creates.
    K8S: "k8s://gen3-bucket-secrets/self-service",
}
_FLAT = frozenset({K8S, GCP_SM})
_FLAT_HASH = 16
# Kubernetes names are at most 253 characters; versions add ``-`` and 10 characters.
_MAX_FLAT_NAME = 240
_NOT_K8S_NAME = re.compile(r"[^a-z0-9-]+")
_NOT_GCP_ID = re.compile(r"[^A-Za-z0-9_-]+")


class OwnedSecrets:
    """Builds the registry-owned reference of a bucket's API-submitted keys."""

    def __init__(
        self,
        prefix: str | None,
        *,
        default_backend: str,
        file_dir: Path | None = None,
        gcp_project: str | None = None,
    ) -> None:
        if prefix is None:
            scheme = backend_scheme(default_backend)
            prefix = _DEFAULT_PREFIX.get(scheme)
            if prefix is None and scheme == FILE and file_dir is not None:
                prefix = f"file://{file_dir.resolve()}/self-service"
            if prefix is None and scheme == GCP_SM and gcp_project:
                prefix = f"gcp-sm://projects/{gcp_project}/secrets/bucket-registry"
        self.prefix = prefix.rstrip("/") if prefix else None
        self.scheme = self.prefix.partition("://")[0] if self.prefix else None
        if self.prefix and self.scheme in _FLAT:
            try:
                parse_secret_ref(self.prefix, default_backend)
            except InvalidInput as exc:
                raise ValueError(f"SELF_SERVICE_SECRETS: {exc.message}") from None

    def ref_for(self, project_resource: str | None, bucket: str) -> str:
        """The bucket's registry-owned reference (see the module docstring); 503 when no
        prefix is configured for this backend."""
        if self.prefix is None:
            raise DependencyUnavailable(
                "secrets",
                "no registry-owned secrets location is configured for API-submitted keys"
                " (set SELF_SERVICE_SECRETS)",
            )
        if self.scheme in _FLAT:
            return self._flat_ref(project_resource, bucket)
        if project_resource:
            segments = project_resource.strip("/").split("/")
            if all(_SAFE.match(segment) for segment in segments):
                where = "projects/" + "/".join(segments)
            else:
                where = "projects/" + hashlib.sha256(project_resource.encode()).hexdigest()[:24]
        else:
            where = "admin"
        name = bucket if _SAFE.match(bucket) else hashlib.sha256(bucket.encode()).hexdigest()[:24]
        suffix = ".json" if self.scheme == FILE else ""
        return f"{self.prefix}/{where}/{name}{suffix}"

    def _flat_ref(self, project_resource: str | None, bucket: str) -> str:
        assert self.prefix is not None
        # The hash, not the readable part, is what keeps names apart: "a/b-c" and "a-b/c"
        # flatten alike.
        digest = hashlib.sha256(f"{project_resource or ''}\0{bucket}".encode()).hexdigest()
        if self.scheme == K8S:
            readable = _NOT_K8S_NAME.sub("-", bucket.lower()).strip("-")
        else:
            readable = _NOT_GCP_ID.sub("-", bucket).strip("-")
        base = self.prefix
        room = _MAX_FLAT_NAME - len(base.rsplit("/", 1)[-1]) - _FLAT_HASH - 2
        readable = readable[: max(room, 0)].rstrip("-")
        name = f"{base}-{readable}" if readable else base
        return f"{name}-{digest[:_FLAT_HASH]}"

    def owns(self, ref: str | None) -> bool:
        if not (ref and self.prefix):
            return False
        joint = "-" if self.scheme in _FLAT else "/"
        return ref.startswith(self.prefix + joint)
