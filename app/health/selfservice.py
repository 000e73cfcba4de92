"""Self-service transitions that hang on a validation (docs/self-service.md).

* A pending bucket turns active when a validation passes (``SELF_SERVICE_APPROVAL=validation``),
  or when an admin approves one that has passed (``admin``).
* New static keys are staged in the registry-owned secret, validated against the store, and
  only then made current and pinned on the bucket: one versioned change, so every replica
  drops its signer when the ``NOTIFY`` arrives. A failed validation changes nothing.
* A role bucket's external ID rotates in two phases: a new one is issued next to the current
  one, and replaces it when a validation with it passes.

Every transition is an audited registry change; no secret value reaches the audit row, the
log or the answer.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from app.errors import Conflict, InvalidInput, RegistryError, SecretNotFound
from app.health.probe import CHECKS, BucketProbe, CheckResult, ProbeReport
from app.registry.models import Bucket, utcnow
from app.registry.records import (
    AuthMode,
    BucketRecord,
    BucketStatus,
    Provider,
    secret_fingerprint,
)
from app.registry.selfservice import new_external_id
from app.registry.service import Actor, RegistryService
from app.secrets.base import StagedSecret
from app.secrets.owned import OwnedSecrets
from app.secrets.store import SecretStore
from app.storage.gcs.keys import parse_service_account_key
from app.storage.service import StorageService

log = logging.getLogger(__name__)

S3_KEY_FIELDS = ("access_key_id", "secret_access_key")
# Statuses a bucket may be removed for good from: it serves nothing in either.
PURGEABLE = (BucketStatus.REJECTED, BucketStatus.SUSPENDED)
GCP_KEY_FIELDS = ("service_account_key_json",)


def validation_result(
    report: ProbeReport, *, external_id: str | None = None, secret_ref: str | None = None
) -> dict[str, Any]:
    """What a bucket's record keeps of its last validation: each check and when. A reason
    naming the bucket's ``secret_ref`` (a backend's "secret … not found") keeps only its
    fingerprint: where a secret lives is never stored in a column or shown to a registrant."""
    result: dict[str, Any] = {
        "at": utcnow().isoformat(),
        "ok": report.ok,
        "checks": {
            name: {"status": check.status, "reason": redact_ref(check.reason, secret_ref)}
            for name, check in report.checks.items()
        },
    }
    if external_id is not None:
        result["external_id"] = external_id
    return result


def redact_ref(text: str, secret_ref: str | None) -> str:
    """``text`` with every mention of ``secret_ref`` replaced by its fingerprint."""
    if not secret_ref or secret_ref not in text:
        return text
    return text.replace(secret_ref, secret_fingerprint(secret_ref) or "")


def key_fields(record: BucketRecord) -> tuple[str, ...]:
    """The payload a bucket's keys are PUT as; ``InvalidInput`` for a bucket that has none."""
    if record.auth_mode is not AuthMode.STATIC:
        hint = (
            " rotate its external ID with POST /admin/buckets/{name}/external-id instead"
            if record.auth_mode is AuthMode.ROLE
            else ""
        )
        raise InvalidInput(
            f"credentials: {record.name!r} is a {record.auth_mode.value} bucket and holds no"
            f" keys;{hint}".rstrip(";")
        )
    return GCP_KEY_FIELDS if record.provider is Provider.GCP else S3_KEY_FIELDS


def _check_service_account_key(key_json: str) -> None:
    """``InvalidInput`` (saying what is wrong, never what was sent) unless ``key_json`` is a
    service-account key file the signer can use; checked before anything is stored."""
    try:
        parse_service_account_key(key_json, "service_account_key_json")
    except SecretNotFound as exc:
        reason = exc.message.partition(": ")[2]
        raise InvalidInput(
            f"credentials: service_account_key_json is not a usable service-account key: {reason}"
        ) from None


class SelfService:
    def __init__(
        self,
        registry: RegistryService,
        probe: BucketProbe,
        secrets: SecretStore,
        storage: StorageService,
        owned: OwnedSecrets,
        *,
        approval: str = "validation",
    ) -> None:
        self.registry = registry
        self.probe = probe
        self.secrets = secrets
        self.storage = storage
        self.owned = owned
        self.approval = approval

    @property
    def validation_activates(self) -> bool:
        return self.approval == "validation"

    async def _probe(self, record: BucketRecord, *, write_probe: bool = False) -> ProbeReport:
        if record.auth_mode is AuthMode.STATIC and not record.secret_ref:
            report = ProbeReport(record.name)
            report.checks["secret_accessible"] = CheckResult(
                "fail", f"no keys yet: PUT them to /admin/buckets/{record.name}/credentials"
            )
            for name in CHECKS[1:]:
                report.checks[name] = CheckResult("skipped", "no usable credentials")
            return report
        return await self.probe.run(record, write_probe=write_probe)

    async def _probe_candidate(
        self, record: BucketRecord, *, write_probe: bool = False, **changes: Any
    ) -> ProbeReport:
        # A candidate gets an id of its own: its signer must neither replace nor retire the one
        # the bucket is serving with.
        candidate = dataclasses.replace(record, id=uuid.uuid4(), **changes)
        try:
            return await self.probe.run(candidate, write_probe=write_probe)
        finally:
            self.storage.invalidate_bucket(candidate.id)

    async def validate(self, name: str, actor: Actor, *, write_probe: bool = False) -> ProbeReport:
        """Run the checks, keep the result on the bucket, and apply what a pass decides: a
        pending bucket turns active (unless an admin must approve), a pending external ID
        becomes the bucket's."""
        record = await self.registry.load_record(name)
        row = await self.registry.get_bucket(name)
        pending_id = row.pending_external_id
        if pending_id:
            report = await self._probe_candidate(
                record, external_id=pending_id, write_probe=write_probe
            )
        else:
            report = await self._probe(record, write_probe=write_probe)
        result = validation_result(
            report, external_id="pending" if pending_id else None, secret_ref=record.secret_ref
        )
        activates = report.ok and self.validation_activates
        transitions = bool(pending_id) or (activates and record.status is BucketStatus.PENDING)
        if not report.ok or not transitions:
            await self.registry.store_validation(name, result)
            return report

        def compute(current: Bucket) -> dict[str, Any]:
            changes: dict[str, Any] = {"validation": result}
            if pending_id and current.pending_external_id == pending_id:
                changes.update(external_id=pending_id, pending_external_id=None)
            if activates and current.status == BucketStatus.PENDING:
                changes["status"] = BucketStatus.ACTIVE.value
            return changes

        action = "rotate" if pending_id else "validate"
        await self.registry.change(name, actor, action, compute)
        return report

    async def approve(self, name: str, actor: Actor) -> Bucket:
        def compute(current: Bucket) -> dict[str, Any]:
            if current.status not in (BucketStatus.PENDING, BucketStatus.REJECTED):
                raise Conflict(
                    f"bucket {name!r} is {current.status}; only pending buckets are approved"
                )
            if not (current.validation or {}).get("ok"):
                raise Conflict(
                    f"bucket {name!r} has not passed validation; run"
                    f" POST /admin/buckets/{name}/validate first"
                )
            return {"status": BucketStatus.ACTIVE.value}

        return await self.registry.change(name, actor, "approve", compute)

    async def reject(self, name: str, actor: Actor) -> Bucket:
        def compute(current: Bucket) -> dict[str, Any]:
            if current.status != BucketStatus.PENDING:
                raise Conflict(
                    f"bucket {name!r} is {current.status}; only pending buckets are rejected"
                    " (suspend an active one)"
                )
            return {"status": BucketStatus.REJECTED.value}

        return await self.registry.change(name, actor, "reject", compute)

    async def put_credentials(
        self, name: str, payload: Mapping[str, str], actor: Actor, *, registrant: bool
    ) -> ProbeReport:
        """Stage, validate, then make current ``payload`` as the bucket's keys.

        Raises ``InvalidInput`` (nothing changed) when the keys fail validation.
        """
        record = await self.registry.load_record(name)
        expected = key_fields(record)
        if sorted(payload) != sorted(expected):
            raise InvalidInput(
                f"credentials: a {record.provider.value} bucket takes {list(expected)}"
            )
        if record.status is BucketStatus.REJECTED and registrant:
            raise Conflict("the bucket was rejected; only a bucket admin can change it now")
        if "service_account_key_json" in payload:
            _check_service_account_key(payload["service_account_key_json"])
        row = await self.registry.get_bucket(name)
        owned = self.owned.ref_for(row.project_resource, name)
        staged = await self.secrets.stage(owned, payload)
        report = await self._probe_candidate(
            record,
            secret_ref=staged.ref,
            secret_version=staged.version,
            status=BucketStatus.ACTIVE,
        )
        if not report.ok:
            await self._discard(owned, staged)
            raise InvalidInput(
                "credentials: the new keys did not pass validation; nothing was changed",
                details={"errors": [redact_ref(error, staged.ref) for error in report.errors]},
            )
        await self.secrets.promote(owned, staged)
        result = validation_result(report, secret_ref=staged.ref)
        holds_admin_approval = not self.validation_activates

        def compute(current: Bucket) -> dict[str, Any]:
            changes: dict[str, Any] = {
                "secret_ref": staged.ref,
                "secret_version": staged.version,
                "validation": result,
            }
            if current.status == BucketStatus.PENDING and self.validation_activates:
                changes["status"] = BucketStatus.ACTIVE.value
            elif registrant and holds_admin_approval and current.status == BucketStatus.ACTIVE:
                # New keys from a registrant are a new registration to the approving admin.
                changes["status"] = BucketStatus.PENDING.value
            return changes

        extra = {"access_key_id": payload["access_key_id"]} if "access_key_id" in payload else {}
        await self.registry.change(name, actor, "rotate", compute, audit_extra=extra)
        return report

    async def _discard(self, owned: str, staged: StagedSecret) -> None:
        try:
            await self.secrets.discard(owned, staged)
        except RegistryError as exc:
            # The staged version is not current and no bucket names it: harmless, but say so.
            log.warning("a refused staged secret could not be discarded: %s", exc.message)

    async def rotate_external_id(self, name: str, actor: Actor) -> str:
        """Issue the bucket's next external ID; it replaces the current one when a
        validation with it passes (``validate``)."""
        issued = new_external_id()

        def compute(current: Bucket) -> dict[str, Any]:
            if current.auth_mode != AuthMode.ROLE:
                raise InvalidInput(f"external_id: {name!r} is not a role bucket")
            return {"pending_external_id": issued}

        await self.registry.change(name, actor, "rotate", compute)
        return issued

    async def purge(self, name: str, actor: Actor) -> bool:
        """Remove a rejected or suspended bucket for good (admins only; the router checks).

        The keys the registry holds for it go first, so a failure there (503) leaves the
        bucket as it was, still serving nothing; then the row, its prefixes and bindings, in
        one audited, announced change. Returns whether registry-held keys were removed.
        """
        row = await self.registry.get_bucket(name)
        if row.status not in PURGEABLE:
            raise Conflict(
                f"bucket {name!r} is {row.status}; only rejected or suspended buckets can be"
                " removed (suspend it first)"
            )
        removed_keys = False
        if self.owned.prefix is not None:
            owned = self.owned.ref_for(row.project_resource, name)
            try:
                await self.secrets.remove(owned)
                removed_keys = True
            except SecretNotFound as exc:
                # Nothing stored there, or the registry may not delete it: the bucket goes
                # either way, and the log says what is left behind.
                log.warning("registry-held keys not removed: %s", exc.message)
        await self.registry.remove_bucket(name, actor, statuses=PURGEABLE)
        return removed_keys

    async def prune_credentials(self, name: str, actor: Actor) -> int:
        """Remove the kept previous versions of the bucket's registry-held keys."""
        row = await self.registry.get_bucket(name)
        owned = self.owned.ref_for(row.project_resource, name)
        if not row.secret_ref or not self.owned.owns(row.secret_ref):
            raise InvalidInput(f"credentials: {name!r} holds no keys submitted through the API")
        removed = await self.secrets.prune(owned, StagedSecret(row.secret_ref, row.secret_version))
        await self.registry.note(name, actor, "prune", {"versions_removed": removed})
        return removed
