"""``bucket-registry export``: the registry as Fence-style YAML or as JSON, for review and rollback.

``fence-yaml`` writes ``AWS_CREDENTIALS`` / ``S3_BUCKETS`` / ``GS_BUCKETS`` /
``ALLOWED_DATA_UPLOAD_BUCKETS`` / ``DATA_UPLOAD_BUCKET`` as Fence reads them, with each
credential entry naming the ``secret_ref`` that holds its keys instead of the keys (the keys
never leave the secrets manager). Every bucket entry also carries a ``registry:`` block (ignored
by Fence) with the whole registration, so importing the export gives back the same registry.
To roll Fence back, copy the keys from each ``secret_ref`` into ``AWS_CREDENTIALS``.

``json`` writes every registration, with its prefixes and bindings, as one document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from app.fence_config.mapping import CRED_LABEL, PUBLIC_LABEL
from app.fence_config.reader import PUBLIC_CRED
from app.registry.changes import RegisteredBucket
from app.registry.records import BUCKET_FIELDS, SELF_SERVICE_FIELDS, AuthMode, Op, Provider
from app.registry.service import RegistryService, row_values

FORMATS = ("fence-yaml", "json")
JSON_FORMAT_VERSION = "bucket-registry/v1"
# Role and workload-identity buckets name a credential in Fence's format, but the registry
# signs with its own identity: the entry is a placeholder an operator fills in on rollback.
IDENTITY_CRED = "bucket-registry-identity"
# Said by the entry's Fence keys already (and not reset by a block's auth_mode).
_FENCE_LEVEL_FIELDS = frozenset({"name", "region", "endpoint", "requester_pays"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class ExportedBucket:
    values: dict[str, Any]
    prefixes: tuple[str, ...]
    bindings: tuple[dict[str, Any], ...]
    meta: dict[str, Any]


async def collect(registry: RegistryService) -> list[ExportedBucket]:
    """Every registration with its prefixes and bindings (three queries, whatever the size)."""
    return [_exported(current) for current in (await registry.snapshot()).values()]


def _exported(current: RegisteredBucket) -> ExportedBucket:
    row = current.row
    bindings = tuple(
        {
            **({"prefix": prefix} if prefix else {}),
            "resource_path": path,
            "allowed_ops": {op.value: True for op in Op if op.value in ops},
        }
        for prefix, path, ops in current.bindings
    )
    return ExportedBucket(
        values=row_values(row),
        prefixes=tuple(sorted(current.prefixes)),
        bindings=bindings,
        meta={
            "id": str(row.id),
            "version": row.version,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
        },
    )


def render_json(buckets: Sequence[ExportedBucket], *, now: datetime | None = None) -> str:
    document = {
        "format": JSON_FORMAT_VERSION,
        "exported_at": (now or datetime.now(UTC)).isoformat(),
        "buckets": [
            {
                **bucket.meta,
                **bucket.values,
                "prefixes": list(bucket.prefixes),
                "bindings": list(bucket.bindings),
            }
            for bucket in buckets
        ],
    }
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def render_fence_yaml(buckets: Sequence[ExportedBucket], *, now: datetime | None = None) -> str:
    creds = _CredentialNames()
    s3: dict[str, Any] = {}
    gs: dict[str, Any] = {}
    allowed: list[str] = []
    default_upload = None
    for bucket in buckets:
        # Static buckets first: a role bucket that Fence knew under the same credential name
        # then points at the entry that says where the keys are.
        if bucket.values["auth_mode"] == AuthMode.STATIC.value:
            creds.cred_for(bucket.values)
    for bucket in buckets:
        values = bucket.values
        provider = Provider(values["provider"])
        block = _registry_block(bucket)
        if provider is Provider.GCP:
            gs[values["name"]] = _without_none({"region": values["region"], "registry": block})
            continue
        entry: dict[str, Any] = {"cred": creds.cred_for(values)}
        if values["region"]:
            entry["region"] = values["region"]
        if values["endpoint"]:
            entry["endpoint_url"] = values["endpoint"]
        if values["role_arn"]:
            entry["role-arn"] = values["role_arn"]
        if values["requester_pays"]:
            entry["requester_pays"] = True
        entry["registry"] = block
        s3[values["name"]] = entry
        if values["data_upload_allowed"]:
            allowed.append(values["name"])
        if values["is_default_upload"] and values["owner_project"] is None:
            default_upload = values["name"]
    document = {
        "AWS_CREDENTIALS": creds.entries,
        "S3_BUCKETS": s3,
        "GS_BUCKETS": gs,
        "ALLOWED_DATA_UPLOAD_BUCKETS": allowed,
        "DATA_UPLOAD_BUCKET": default_upload or "",
    }
    stamp = (now or datetime.now(UTC)).isoformat()
    header = (
        f"# Exported from the Bucket Registry at {stamp}.\n"
        "# Fence's bucket settings, with a secret_ref where Fence expects keys: no key is ever\n"
        "# exported. For a Fence rollback, copy the keys from each secret_ref into\n"
        "# AWS_CREDENTIALS. The registry: blocks (ignored by Fence) let\n"
        "# `bucket-registry import-fence-config` restore these exact registrations.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _registry_block(bucket: ExportedBucket) -> dict[str, Any]:
    values = bucket.values
    block: dict[str, Any] = {
        "provider": values["provider"],
        "auth_mode": values["auth_mode"],
        "status": values["status"],
        "labels": dict(values["labels"] or {}),
        # Always written, null included: an import moves a bucket between projects (or out of
        # one) only when its block says so, and an export made before this field keeps them.
        "project_resource": values["project_resource"],
    }
    # GS_BUCKETS entries carry only a region at Fence's level: the rest stays in the block.
    fence_level = (
        _FENCE_LEVEL_FIELDS if Provider(values["provider"]).speaks_s3 else {"name", "region"}
    )
    # Self-service fields too: which project manages the bucket (its registrants' reach) and
    # an external ID being rotated in; a pending or rejected status travels as any status.
    for key in (*BUCKET_FIELDS, *SELF_SERVICE_FIELDS):
        if key in block or key in fence_level:
            continue
        value = values[key]
        if value is not None and value is not False and value != []:
            block[key] = value
    if bucket.prefixes:
        block["prefixes"] = list(bucket.prefixes)
    block["bindings"] = list(bucket.bindings)
    return block


class _CredentialNames:
    """Fence credential names for the exported buckets, one per (secret_ref, version)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, str]] = {}
        self._by_secret: dict[tuple[str, str | None], str] = {}

    def cred_for(self, values: dict[str, Any]) -> str:
        labels = values["labels"] or {}
        auth_mode = AuthMode(values["auth_mode"])
        if auth_mode is AuthMode.STATIC and values["secret_ref"]:
            key = (values["secret_ref"], values["secret_version"])
            name = self._by_secret.get(key)
            if name is None:
                wanted = labels.get(CRED_LABEL) or _name_from_ref(values["secret_ref"])
                name = self._unique(wanted)
                entry = {"secret_ref": values["secret_ref"]}
                if values["secret_version"]:
                    entry["secret_version"] = values["secret_version"]
                self.entries[name] = entry
                self._by_secret[key] = name
            return name
        public = values.get("public") or labels.get(PUBLIC_LABEL) == "true"
        if public and auth_mode is AuthMode.WORKLOAD_IDENTITY:
            return PUBLIC_CRED
        name = labels.get(CRED_LABEL) or IDENTITY_CRED
        self.entries.setdefault(name, {})
        return name

    def _unique(self, wanted: str) -> str:
        name, n = wanted, 2
        while name in self.entries:
            name, n = f"{wanted}-{n}", n + 1
        return name


def _name_from_ref(ref: str) -> str:
    tail = ref.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
    return _UNSAFE.sub("-", tail) or "credential"


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
