"""How a Fence bucket entry becomes a registration: shared by the importer and the fallback.

The rules (docs/migration.md explains them to operators):

- ``S3_BUCKETS`` → provider ``aws``; with ``endpoint_url`` → ``minio`` when the URL says so,
  else ``s3_compatible``, with the URL as the endpoint (the endpoint allow-list applies).
- ``cred: NAME`` with keys → ``static``; the keys go to a secret (``credential_ref`` names it)
  and only the reference is registered. With ``role-arn`` → ``role``: the registry assumes the
  role with its own identity, so the keys are not needed at all.
- ``cred: '*'`` (public; Fence never signs) → ``public: true`` under ``workload_identity``
  with the label ``gen3.public=true``: reads get unsigned URLs, as Fence gave, and the label
  says why the bucket holds no credentials.
- Regex keys (matched by Fence as ``^key$``) → skipped: the registry registers exact names.
- ``GS_BUCKETS`` → provider ``gcp`` under ``workload_identity`` with a signing service account
  (the entry's ``registry.service_account`` or the importer's ``--gcp-service-account``); without
  one the entry is skipped, since Fence's per-user signing keys have no registry equivalent.
- Upload: buckets in ``ALLOWED_DATA_UPLOAD_BUCKETS`` or named by ``DATA_UPLOAD_BUCKET`` allow
  uploads; ``DATA_UPLOAD_BUCKET`` becomes the default upload bucket.
- Bindings: Fence let any indexd record point into any configured bucket and authorized it by
  the record's ``authz``. Each bucket gets a whole-bucket binding per configured resource path
  (default ``/``, Arborist's root): read and delete on S3 buckets (read on GCS), plus write and
  multipart where uploads are allowed. For Fence's trusted calls these are the guardrail the
  record's ``authz`` is checked within; a direct user call is checked on the bound path itself,
  so users without a grant there are refused until an admin binds narrower paths — the
  mapping fails closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from app.errors import InvalidInput
from app.fence_config.reader import (
    AwsCredential,
    FenceBucketConfig,
    GsBucketEntry,
    S3BucketEntry,
)
from app.registry.changes import BindingSpec
from app.registry.keys import validate_prefix
from app.registry.records import BUCKET_FIELDS, AuthMode, Provider
from app.registry.schemas import BucketCreate
from app.registry.selfservice import with_owner_project
from app.registry.validation import validate_bucket_spec, validate_external_id

SOURCE_LABEL = "gen3.source"
SOURCE_VALUE = "fence-config"
CRED_LABEL = "gen3.fence-cred"
PUBLIC_LABEL = "gen3.public"
PENDING_LABEL = "gen3.pending"
PENDING_CREDENTIALS = "credentials"
# Labels the importer owns: it sets and removes them; every other label is left alone.
OWNED_LABELS = frozenset({SOURCE_LABEL, CRED_LABEL, PUBLIC_LABEL, PENDING_LABEL})

DEFAULT_RESOURCE_PATHS: tuple[str, ...] = ("/",)

# Fields the importer keeps equal to the file on an existing registration. ``owner_project``
# and ``status`` join them only when the file (or the command line) says something about them;
# ``labels`` are merged, never replaced.
_ALWAYS_MANAGED = frozenset(BUCKET_FIELDS) - {"name", "owner_project", "status", "labels"}

_CREDENTIAL_FIELDS = (
    "role_arn",
    "external_id",
    "pending_external_id",
    "secret_ref",
    "secret_version",
    "service_account",
)

CredentialRef = Callable[[AwsCredential], str]

NO_REGION_NOTE = (
    "no region: Fence looked it up at startup; the registry signs for us-east-1 unless a region"
    " is set (import with --lookup-regions to ask S3)"
)


@dataclass(frozen=True, slots=True)
class DesiredBucket:
    """What the file says one registration should be."""

    name: str
    source: str
    spec: dict[str, Any]
    managed: frozenset[str]
    prefixes: tuple[str, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()
    # The YAML keys that must sit in the secret named by spec["secret_ref"], if any.
    credential: AwsCredential | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    source: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    source: str
    name: str
    message: str


@dataclass(slots=True)
class MappedConfig:
    desired: list[DesiredBucket] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    invalid: list[InvalidEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MappingOptions:
    owner_project: str | None = None
    resource_paths: tuple[str, ...] = DEFAULT_RESOURCE_PATHS
    gcp_service_account: str | None = None
    endpoint_allowlist: tuple[str, ...] = ()


def map_fence_config(
    config: FenceBucketConfig, options: MappingOptions, credential_ref: CredentialRef
) -> MappedConfig:
    """Every entry of ``config`` as a desired registration, a skip with its reason, or an error."""
    result = MappedConfig()
    for entry in config.s3_buckets:
        if entry.is_pattern:
            result.skipped.append(
                SkippedEntry(
                    entry.source,
                    entry.key,
                    "regex key: Fence matches it as ^key$ against each file's bucket, but the"
                    " registry registers exact bucket names. Add an S3_BUCKETS entry per real"
                    " bucket (same cred) and import again, or register each with"
                    " POST /admin/buckets",
                ),
            )
            continue
        _collect(
            result,
            entry.source,
            entry.key,
            partial(map_s3_entry, entry, entry.key, config, options, credential_ref),
        )
    for gs in config.gs_buckets:
        _collect(result, gs.source, gs.name, partial(_gs, gs, config, options))
    return result


def _collect(
    result: MappedConfig, source: str, name: str, build: Callable[[], DesiredBucket | SkippedEntry]
) -> None:
    try:
        outcome = build()
    except InvalidInput as exc:
        result.invalid.append(InvalidEntry(source, name, f"{source}: {exc.message}"))
        return
    if isinstance(outcome, SkippedEntry):
        result.skipped.append(outcome)
    else:
        result.desired.append(outcome)


def map_s3_entry(
    entry: S3BucketEntry,
    name: str,
    config: FenceBucketConfig,
    options: MappingOptions,
    credential_ref: CredentialRef,
) -> DesiredBucket:
    """The registration for bucket ``name`` under ``entry`` (``name`` differs from the key only
    for regex keys, which the fallback serves per matching name). ``InvalidInput`` if invalid."""
    notes: list[str] = []
    provider = Provider.AWS
    endpoint = None
    if entry.endpoint_url:
        provider = (
            Provider.MINIO if "minio" in entry.endpoint_url.lower() else Provider.S3_COMPATIBLE
        )
        endpoint = entry.endpoint_url.rstrip("/")
    labels = {SOURCE_LABEL: SOURCE_VALUE}
    spec: dict[str, Any] = {
        "name": name,
        "provider": provider.value,
        "region": entry.region,
        "endpoint": endpoint,
        "requester_pays": entry.requester_pays,
        "public": entry.is_public,
        "data_upload_allowed": config.upload_allowed(name),
        "is_default_upload": name == config.data_upload_bucket,
        "owner_project": options.owner_project,
    }
    credential: AwsCredential | None = None
    if entry.is_public:
        spec["auth_mode"] = AuthMode.WORKLOAD_IDENTITY.value
        labels[PUBLIC_LABEL] = "true"
        notes.append(
            "public bucket (cred '*'): reads get unsigned URLs, as Fence gave; writes, if any,"
            " are signed with the registry's own identity"
        )
    else:
        cred = config.aws_credentials[entry.cred]
        labels[CRED_LABEL] = cred.name
        if entry.role_arn:
            spec["auth_mode"] = AuthMode.ROLE.value
            spec["role_arn"] = entry.role_arn
            notes.append(
                f"role bucket: Fence assumed the role with AWS_CREDENTIALS.{cred.name}; the"
                " registry assumes it with its own identity (add the registry's IAM role to the"
                " role's trust policy); the keys are not copied"
            )
        else:
            spec["auth_mode"] = AuthMode.STATIC.value
            if cred.secret_ref:
                spec["secret_ref"] = cred.secret_ref
                spec["secret_version"] = cred.secret_version
            else:
                spec["secret_ref"] = credential_ref(cred)
                credential = cred
    if not entry.region and not endpoint and not entry.is_public:
        notes.append(NO_REGION_NOTE)
    spec["labels"] = labels
    return _finish(entry.source, spec, entry.registry, credential, options, notes)


def _gs(
    entry: GsBucketEntry, config: FenceBucketConfig, options: MappingOptions
) -> DesiredBucket | SkippedEntry:
    notes: list[str] = []
    block = entry.registry
    service_account = block.get("service_account") or options.gcp_service_account
    if not service_account and "auth_mode" not in block:
        return SkippedEntry(
            entry.source,
            entry.name,
            "GCS bucket without a signing identity: Fence signs GCS URLs with per-user service"
            " account keys it manages itself, which the registry does not have. Import again"
            " with --gcp-service-account EMAIL (the registry signs as that account through"
            " IAM signBlob under Workload Identity), or give the entry"
            " registry: {auth_mode: static, secret_ref: <secret holding service_account_key_json>}",
        )
    if config.upload_allowed(entry.name):
        notes.append("listed for uploads, but Fence only uploads to S3_BUCKETS; not marked")
    spec: dict[str, Any] = {
        "name": entry.name,
        "provider": Provider.GCP.value,
        "region": entry.region,
        "auth_mode": AuthMode.WORKLOAD_IDENTITY.value,
        "service_account": service_account or None,
        "owner_project": options.owner_project,
        "labels": {SOURCE_LABEL: SOURCE_VALUE},
        "data_upload_allowed": False,
        "is_default_upload": False,
    }
    return _finish(entry.source, spec, block, None, options, notes)


def _finish(
    source: str,
    spec: dict[str, Any],
    block: Mapping[str, Any],
    credential: AwsCredential | None,
    options: MappingOptions,
    notes: list[str],
) -> DesiredBucket:
    managed = set(_ALWAYS_MANAGED)
    if options.owner_project is not None:
        managed.add("owner_project")
    derived_ref = spec.get("secret_ref")
    if "auth_mode" in block:
        # A block that names the auth mode describes the credentials completely (an export
        # writes every one that is set): nothing derived from the Fence keys survives.
        for key in _CREDENTIAL_FIELDS:
            spec[key] = None
    for key, value in block.items():
        if key not in ("prefixes", "bindings"):
            spec[key] = value
            if key in ("owner_project", "status", "project_resource"):
                managed.add(key)
    if "auth_mode" in block:
        # An export's block names any external ID being rotated in: one left out is unset.
        # (project_resource is managed only when the block has the key, null included.)
        managed.add("pending_external_id")
    if credential is not None and (
        spec.get("auth_mode") != AuthMode.STATIC.value or spec.get("secret_ref") != derived_ref
    ):
        # The registry block points the bucket elsewhere: the YAML keys are not needed.
        credential = None
    pending_external_id = spec.pop("pending_external_id", None)
    spec = _validated_shape(spec)
    spec = validate_bucket_spec(with_owner_project(spec), options.endpoint_allowlist)
    spec["pending_external_id"] = _pending_external_id(pending_external_id, spec)

    prefixes = tuple(validate_prefix(p) for p in _string_list(block.get("prefixes"), "prefixes"))
    if "bindings" in block:
        bindings = tuple(_binding(raw) for raw in _list(block.get("bindings"), "bindings"))
        prefixes += tuple(b.prefix for b in bindings if b.prefix and b.prefix not in prefixes)
    else:
        ops = {"read": True}
        if Provider(spec["provider"]).speaks_s3:
            ops["delete"] = True
        if spec["data_upload_allowed"]:
            ops.update(write=True, multipart=True)
        bindings = tuple(BindingSpec.of(path, ops) for path in options.resource_paths)
        if not bindings:
            notes.append("no binding: every presign is refused until an admin binds the bucket")
    return DesiredBucket(
        name=spec["name"],
        source=source,
        spec=spec,
        managed=frozenset(managed),
        prefixes=tuple(dict.fromkeys(prefixes)),
        bindings=tuple(dict.fromkeys(bindings)),
        credential=credential,
        notes=tuple(notes),
    )


def _pending_external_id(value: Any, spec: Mapping[str, Any]) -> str | None:
    """An external ID being rotated in, checked as the current one is."""
    if value is None:
        return None
    validate_external_id(value, AuthMode(spec["auth_mode"]), "registry.pending_external_id")
    return value


def _validated_shape(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        model = BucketCreate.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        # Only where and what, never pydantic's echo of the input value.
        raise InvalidInput(f"{where}: {first.get('msg', 'invalid')}") from None
    return model.model_dump(mode="json")


def _binding(raw: Any) -> BindingSpec:
    if not isinstance(raw, Mapping):
        raise InvalidInput("registry.bindings: each binding must be a mapping")
    unknown = sorted(set(raw) - {"prefix", "resource_path", "allowed_ops"})
    if unknown:
        raise InvalidInput(f"registry.bindings: unknown fields {unknown}")
    ops = raw.get("allowed_ops")
    if not isinstance(ops, Mapping):
        raise InvalidInput("registry.bindings: allowed_ops must be a mapping of booleans")
    return BindingSpec.of(str(raw.get("resource_path") or ""), ops, raw.get("prefix"))


def _list(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"registry.{what}: must be a list")
    return value


def _string_list(value: Any, what: str) -> list[str]:
    items = _list(value, what)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"registry.{what}: must be a list of strings")
    return list(items)
