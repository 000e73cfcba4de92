"""``import-fence-config``: plan the registrations a fence-config.yaml implies, then apply them.

Promises:

- **Idempotent.** ``plan`` compares the file with the registry; a second run finds nothing to
  change, so ``apply`` writes no row, no audit entry and no secret.
- **All or nothing.** Every entry is validated while planning; ``apply`` refuses a plan with
  an invalid entry, writes the secrets first (a secret nobody references yet is harmless), then
  every registration in one database transaction, with one ``import`` audit row per bucket.
  A bucket changed by someone else since the plan was made aborts the whole transaction.
- **No key in the database.** Keys from ``AWS_CREDENTIALS`` go to the secrets backend with
  ``--write-secrets`` (never overwriting a secret that exists: it may hold rotated keys); only
  the reference is registered. Without the keys in the backend a new static bucket is imported
  **suspended** and labelled ``gen3.pending=credentials``; a later run that finds the secret
  resumes it.
- **The file owns what it describes**: an entry's fields (provider, endpoint, credentials
  mode, upload flags, ...), the importer's ``gen3.*`` labels, and the operations of the
  bindings it creates (a bucket leaving the upload allow-list loses write access). Prefixes and
  bindings are added, never removed; other labels, other bindings and an admin's suspension
  are left alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from app.config import Settings
from app.errors import (
    DependencyUnavailable,
    InvalidInput,
    RegistryError,
    SecretNotFound,
)
from app.fence_config.mapping import (
    NO_REGION_NOTE,
    OWNED_LABELS,
    PENDING_CREDENTIALS,
    PENDING_LABEL,
    BindingSpec,
    DesiredBucket,
    MappingOptions,
    map_fence_config,
)
from app.fence_config.reader import AwsCredential, FenceBucketConfig
from app.migration.plan import (
    ChangeKind,
    ImportPlan,
    PlannedChange,
    SecretAction,
    SecretState,
)
from app.registry.changes import RegisteredBucket
from app.registry.records import BUCKET_FIELDS, SELF_SERVICE_FIELDS, BucketStatus, Provider
from app.registry.service import Actor, RegistryService, row_values
from app.registry.validation import validate_bucket_spec
from app.secrets.base import AWS_SM, FILE, backend_scheme
from app.secrets.store import SecretStore

RegionLookup = Callable[[str], Awaitable[str]]
# Bounds on --lookup-regions: how many buckets one import asks about, and how many at once.
MAX_REGION_LOOKUPS = 200
_REGION_LOOKUP_CONCURRENCY = 8

IMPORT_ACTION = "import"
# Backends that accept writes (``SecretStore.put``); others need the operator to store the keys.
WRITABLE_SCHEMES = frozenset({AWS_SM, FILE})
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+=.@-]")


@dataclass(slots=True)
class ImportResult:
    plan: ImportPlan
    applied: list[PlannedChange]
    secrets_written: list[str]


class ImportRefused(InvalidInput):
    """The plan has invalid entries; nothing was written."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    owner_project: str | None = None
    resource_paths: tuple[str, ...] = ("/",)
    gcp_service_account: str | None = None
    # Where keys from AWS_CREDENTIALS go: prefix + credential name (``.json`` for files).
    secret_prefix: str | None = None


def default_secret_prefix(settings: Settings) -> str | None:
    """The secret location the configured backend gets by default, if it has an obvious one."""
    scheme = backend_scheme(settings.secrets_backend)
    if scheme == AWS_SM:
        return "aws-sm://gen3/bucket-registry/"
    if scheme == FILE and settings.file_secrets_dir is not None:
        return f"file://{settings.file_secrets_dir.resolve()}/"
    return None


def secret_ref_for(credential: AwsCredential, prefix: str | None) -> str:
    """The reference the keys of ``credential`` are stored under."""
    if not prefix:
        raise InvalidInput(
            f"no secret location for AWS_CREDENTIALS.{credential.name}: the configured secrets"
            " backend has no default; pass --secret-prefix (e.g. vault://secret/gen3/)"
        )
    name = _UNSAFE_NAME_CHARS.sub("-", credential.name).strip("-") or "credential"
    suffix = ".json" if prefix.startswith("file://") else ""
    return f"{prefix}{name}{suffix}"


# -- planning ---------------------------------------------------------------------------------


async def plan_import(
    config: FenceBucketConfig,
    registry: RegistryService,
    secrets: SecretStore,
    *,
    options: ImportOptions,
    write_secrets: bool = False,
    region_lookup: RegionLookup | None = None,
) -> ImportPlan:
    """What importing ``config`` would change, entry by entry; reads only (the registry,
    for static keys whether their secret already exists, and with ``region_lookup`` the
    region of each AWS bucket the file gives none)."""
    refs: dict[str, str] = {}

    def credential_ref(credential: AwsCredential) -> str:
        ref = secret_ref_for(credential, options.secret_prefix)
        owner = refs.setdefault(ref, credential.name)
        if owner != credential.name:
            raise InvalidInput(
                f"AWS_CREDENTIALS.{credential.name} and AWS_CREDENTIALS.{owner} would share the"
                f" secret {ref}; rename one"
            )
        secrets.parse(ref)
        return ref

    mapped = map_fence_config(
        config,
        MappingOptions(
            owner_project=options.owner_project,
            resource_paths=options.resource_paths,
            gcp_service_account=options.gcp_service_account,
            endpoint_allowlist=tuple(registry.endpoint_allowlist),
        ),
        credential_ref,
    )
    if region_lookup is not None:
        mapped.desired = await _with_regions(
            mapped.desired, region_lookup, tuple(registry.endpoint_allowlist)
        )
    current = await registry.snapshot(d.name for d in mapped.desired)
    actions = await _secret_actions(mapped.desired, secrets, write_secrets)

    changes: list[PlannedChange] = []
    for desired in mapped.desired:
        action = actions.get(desired.spec.get("secret_ref") or "") if desired.credential else None
        try:
            change = _plan_one(desired, current.get(desired.name), action, registry, write_secrets)
        except InvalidInput as exc:
            change = PlannedChange(
                ChangeKind.INVALID, desired.name, desired.source, reason=exc.message
            )
        change.notes[:0] = list(desired.notes)
        changes.append(change)
    for skipped in mapped.skipped:
        changes.append(
            PlannedChange(ChangeKind.SKIP, skipped.name, skipped.source, reason=skipped.reason)
        )
    for invalid in mapped.invalid:
        changes.append(
            PlannedChange(ChangeKind.INVALID, invalid.name, invalid.source, reason=invalid.message)
        )
    _check_defaults(changes, await registry.default_upload_holders())
    order = {entry: i for i, entry in enumerate(_source_order(config))}
    changes.sort(key=lambda change: order.get(change.source, len(order)))
    return ImportPlan(
        source=config.source,
        changes=changes,
        secrets=sorted(actions.values(), key=lambda action: action.ref),
        warnings=list(config.warnings),
        write_secrets=write_secrets,
    )


async def _with_regions(
    desired: list[DesiredBucket], lookup: RegionLookup, allowlist: tuple[str, ...]
) -> list[DesiredBucket]:
    """``desired`` with the missing AWS regions asked of S3, each answer or failure noted."""
    wanted = [
        i
        for i, bucket in enumerate(desired)
        if bucket.spec["provider"] == Provider.AWS.value and not bucket.spec.get("region")
    ]
    gate = asyncio.Semaphore(_REGION_LOOKUP_CONCURRENCY)

    async def one(i: int) -> DesiredBucket:
        bucket = desired[i]
        notes = [note for note in bucket.notes if note != NO_REGION_NOTE]
        if wanted.index(i) >= MAX_REGION_LOOKUPS:
            notes.append(
                f"no region: not looked up (at most {MAX_REGION_LOOKUPS} per import); the"
                " registry signs for us-east-1 unless a region is set"
            )
            return replace(bucket, notes=tuple(notes))
        async with gate:
            try:
                region = await lookup(bucket.name)
                spec = validate_bucket_spec({**bucket.spec, "region": region}, allowlist)
            except RegistryError as exc:
                notes.append(
                    f"no region: the lookup failed ({exc.message}); the registry signs for"
                    " us-east-1 unless a region is set"
                )
                return replace(bucket, notes=tuple(notes))
        notes.append(f"region {region}: from S3 HeadBucket (x-amz-bucket-region)")
        return replace(bucket, spec=spec, notes=tuple(notes))

    found = await asyncio.gather(*(one(i) for i in wanted))
    merged = list(desired)
    for i, bucket in zip(wanted, found, strict=True):
        merged[i] = bucket
    return merged


def _source_order(config: FenceBucketConfig) -> list[str]:
    return [entry.source for entry in config.s3_buckets] + [
        entry.source for entry in config.gs_buckets
    ]


async def _secret_actions(
    desired: Sequence[DesiredBucket], secrets: SecretStore, write_secrets: bool
) -> dict[str, SecretAction]:
    actions: dict[str, SecretAction] = {}
    for bucket in desired:
        credential = bucket.credential
        ref = bucket.spec.get("secret_ref")
        if credential is None or not ref or ref in actions:
            continue
        state = await _secret_state(secrets, ref, credential)
        if state is SecretState.MISSING and write_secrets:
            state = SecretState.WRITE
        actions[ref] = SecretAction(credential.name, ref, state, credential)
    return actions


async def _secret_state(secrets: SecretStore, ref: str, credential: AwsCredential) -> SecretState:
    if not credential.has_keys:
        return SecretState.NO_KEYS
    try:
        current = await secrets.get(ref)
    except SecretNotFound:
        return SecretState.MISSING
    except DependencyUnavailable:
        return SecretState.UNKNOWN
    wanted = credential.payload()
    same = all(current.get(key) == value for key, value in wanted.items()) and (
        "session_token" in wanted or not current.get("session_token")
    )
    return SecretState.PRESENT if same else SecretState.DIFFERS


def _plan_one(
    desired: DesiredBucket,
    existing: RegisteredBucket | None,
    action: SecretAction | None,
    registry: RegistryService,
    write_secrets: bool,
) -> PlannedChange:
    notes: list[str] = []
    pending = action is not None and not action.available
    if action is not None:
        notes.extend(_secret_notes(action, desired.name, write_secrets))
        if action.state is SecretState.UNKNOWN and write_secrets:
            raise InvalidInput(
                f"the secrets backend did not answer for {action.ref}; cannot tell whether"
                " to write it. Retry when it is reachable"
            )
        if action.state is SecretState.WRITE and _scheme(action.ref) not in WRITABLE_SCHEMES:
            raise InvalidInput(
                f"the secrets backend of {action.ref} does not accept writes; store"
                f" AWS_CREDENTIALS.{action.cred_name} there yourself and import without"
                " --write-secrets"
            )

    spec = dict(desired.spec)
    if existing is None:
        if pending and "status" not in desired.managed:
            spec["status"] = BucketStatus.SUSPENDED.value
            spec["labels"] = {**spec["labels"], PENDING_LABEL: PENDING_CREDENTIALS}
        row = registry.validate_spec(spec)
        return PlannedChange(
            ChangeKind.CREATE,
            desired.name,
            desired.source,
            row=row,
            add_prefixes=desired.prefixes,
            add_bindings=desired.bindings,
            notes=notes,
            secret=action,
        )

    before = row_values(existing.row)
    after = dict(before)
    for key in desired.managed:
        after[key] = spec.get(key)
    after["labels"] = _merged_labels(before.get("labels") or {}, spec["labels"])
    was_pending = (before.get("labels") or {}).get(PENDING_LABEL) == PENDING_CREDENTIALS
    if was_pending and pending:
        after["labels"][PENDING_LABEL] = PENDING_CREDENTIALS
    elif was_pending and "status" not in desired.managed:
        # Suspended by an earlier import only for want of its keys: they are there now.
        after["status"] = BucketStatus.ACTIVE.value
    elif pending:
        notes.append(f"left {before['status']}: the import never suspends a registered bucket")
    after = registry.validate_spec(after)
    diff = {
        key: (before[key], after[key])
        for key in (*BUCKET_FIELDS, *SELF_SERVICE_FIELDS)
        if before[key] != after[key]
    }

    add_prefixes = tuple(p for p in desired.prefixes if p not in existing.prefixes)
    add_bindings: list[BindingSpec] = []
    set_bindings: list[tuple[frozenset[str], BindingSpec]] = []
    present: dict[tuple[str | None, str], list[frozenset[str]]] = {}
    for prefix, path, ops in existing.bindings:
        present.setdefault((prefix, path), []).append(ops)
    for binding in desired.bindings:
        found = present.get((binding.prefix, binding.resource_path))
        if not found:
            add_bindings.append(binding)
        elif any(ops != binding.ops for ops in found):
            # The file owns the bindings it describes: a bucket leaving the upload allow-list
            # must lose write access, not keep it in a stale binding.
            set_bindings.append((found[0], binding))
    changes = diff or add_prefixes or add_bindings or set_bindings
    kind = ChangeKind.UPDATE if changes else ChangeKind.UNCHANGED
    return PlannedChange(
        kind,
        desired.name,
        desired.source,
        row=after,
        diff=diff,
        add_prefixes=add_prefixes,
        add_bindings=tuple(add_bindings),
        set_bindings=tuple(set_bindings),
        bucket_id=existing.row.id,
        version=existing.row.version,
        notes=notes,
        secret=action,
    )


def _merged_labels(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The admin's labels kept, the importer's own ``gen3.*`` labels as the file says now."""
    labels = {key: value for key, value in current.items() if key not in OWNED_LABELS}
    labels.update(desired)
    return labels


def _secret_notes(action: SecretAction, bucket: str, write_secrets: bool) -> list[str]:
    where = f"AWS_CREDENTIALS.{action.cred_name}"
    if action.state is SecretState.WRITE:
        return [f"keys of {where} will be written to {action.ref}"]
    if action.state is SecretState.DIFFERS:
        return [
            f"{action.ref} holds other keys than {where} (rotated since?); left unchanged —"
            " the registry signs with what the secret holds"
        ]
    if action.state is SecretState.NO_KEYS:
        return [
            f"{where} holds no keys: store {{access_key_id, secret_access_key}} at"
            f" {action.ref}, then import again (or POST /admin/buckets/{bucket}/resume)"
        ]
    if action.state is SecretState.UNKNOWN:
        return [
            f"the secrets backend did not answer for {action.ref}; treated as missing. Import"
            " again with --write-secrets when it is reachable"
        ]
    if action.state is SecretState.MISSING and not write_secrets:
        return [
            f"keys of {where} are not in the secrets backend: import again with"
            f" --write-secrets to store them at {action.ref} (or store them there yourself and"
            " import again); the bucket stays suspended until then"
        ]
    return []


def _scheme(ref: str) -> str:
    scheme, sep, _ = ref.partition("://")
    return scheme if sep else AWS_SM


def _check_defaults(changes: list[PlannedChange], holders: Mapping[str | None, str]) -> None:
    """At most one default upload bucket per project and one global, after the import."""
    planned = {change.name: change for change in changes if change.writes}
    claims: dict[str | None, list[PlannedChange]] = {}
    for change in changes:
        if change.kind in (ChangeKind.CREATE, ChangeKind.UPDATE, ChangeKind.UNCHANGED) and (
            change.row.get("is_default_upload")
        ):
            claims.setdefault(change.row.get("owner_project"), []).append(change)
    for scope, claimants in claims.items():
        label = f"project {scope!r}" if scope else "the whole commons"
        holder = holders.get(scope)
        keeps = holder is not None and holder not in {c.name for c in claimants}
        if keeps and holder in planned:
            keeps = bool(planned[holder].row.get("is_default_upload"))
        if len(claimants) > 1 or keeps:
            others = sorted({c.name for c in claimants} | ({holder} if keeps and holder else set()))
            for change in claimants:
                if change.kind is ChangeKind.UNCHANGED:
                    continue
                change.kind = ChangeKind.INVALID
                change.reason = (
                    f"{change.source}: {', '.join(others)} would all be the default upload"
                    f" bucket for {label}; unset is_default_upload on the registered one first"
                    " (PATCH /admin/buckets/{name})"
                )


# -- applying ---------------------------------------------------------------------------------


async def apply_import(
    plan: ImportPlan, registry: RegistryService, secrets: SecretStore, *, actor: Actor
) -> ImportResult:
    """Write the plan: secrets first, then every registration in one transaction."""
    if plan.invalid:
        raise ImportRefused(
            "the import was refused; nothing was written:\n"
            + "\n".join(f"  {change.reason}" for change in plan.invalid)
        )
    written: list[str] = []
    for action in plan.secret_writes:
        try:
            await secrets.put(action.ref, action.credential.payload())
        except RegistryError as exc:
            raise DependencyUnavailable(
                "secrets",
                f"writing {action.ref} failed ({exc.message}); no registration was written"
                + (f"; already written: {', '.join(written)}" if written else ""),
            ) from None
        written.append(action.ref)
    if plan.writes:
        await registry.apply_batch(
            [change.as_write() for change in plan.writes], actor, action=IMPORT_ACTION
        )
    return ImportResult(plan=plan, applied=plan.writes, secrets_written=written)


__all__ = [
    "ChangeKind",
    "ImportOptions",
    "ImportPlan",
    "ImportRefused",
    "ImportResult",
    "PlannedChange",
    "SecretAction",
    "SecretState",
    "apply_import",
    "default_secret_prefix",
    "plan_import",
    "secret_ref_for",
]
