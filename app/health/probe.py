"""``validate``: a dry run of everything a bucket needs, reported check by check.

Nothing in the registry changes. The presign test is really sent: a presigned HEAD of a probe
key answered 200 or 404 means the store and our signature agree; 403 means they do not.
"""

from __future__ import annotations

import secrets as random_tokens
from dataclasses import dataclass, field
from typing import Literal

import httpx
from aiobotocore.session import AioSession

from app.errors import RegistryError
from app.logs import request_id_var
from app.netguard import refusal_in
from app.registry.records import AuthMode, BucketRecord, Provider
from app.secrets.store import SecretStore
from app.storage.base import BucketSigner
from app.storage.credentials import SigningCredentials
from app.storage.gcs.downscope import DownscopedToken
from app.storage.gcs.objects import ObjectCalls
from app.storage.gcs.signer import GcsBucketSigner
from app.storage.s3 import S3BucketSigner
from app.storage.service import StorageService
from app.storage.session_policy import CredentialOp
from app.storage.vending import SessionUser, VendedCredentials

PROBE_PREFIX = ".bucket-registry-probe/"
CheckStatus = Literal["pass", "fail", "skipped"]
CHECKS = ("secret_accessible", "role_assumable", "bucket_listable", "presign_test")
# Run for buckets that vend credentials: a vended session must be refused outside its prefix.
SCOPE_CHECK = "scope_enforced"
PROBE_USER = "bucket-registry-probe"


@dataclass(slots=True)
class CheckResult:
    status: CheckStatus
    reason: str


@dataclass(slots=True)
class ProbeReport:
    bucket: str
    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks.values())

    @property
    def errors(self) -> list[str]:
        return [f"{name}: {c.reason}" for name, c in self.checks.items() if c.status == "fail"]


def _reason(exc: Exception) -> str:
    # Domain errors carry messages written for callers; anything else is summarised by type so
    # an SDK's text (which may quote request details) never reaches the report.
    if isinstance(exc, RegistryError):
        return exc.message
    return f"{type(exc).__name__} while talking to the store"


class BucketProbe:
    def __init__(
        self, secrets: SecretStore, storage: StorageService, http: httpx.AsyncClient
    ) -> None:
        self.secrets = secrets
        self.storage = storage
        self.http = http
        self._aio_session: AioSession | None = None

    async def run(self, bucket: BucketRecord, *, write_probe: bool = False) -> ProbeReport:
        report = ProbeReport(bucket.name)
        checks = report.checks
        if bucket.secret_ref:
            try:
                payload = await self.secrets.get(bucket.secret_ref, bucket.secret_version)
                checks["secret_accessible"] = CheckResult(
                    "pass", f"resolved ({len(payload)} fields)"
                )
            except Exception as exc:
                checks["secret_accessible"] = CheckResult("fail", _reason(exc))
        else:
            checks["secret_accessible"] = CheckResult("skipped", "no secret_ref is set")

        if bucket.auth_mode is AuthMode.ROLE and bucket.role_arn:
            try:
                session = await self.storage.sts.session_for(
                    bucket.role_arn,
                    bucket.external_id,
                    60,
                    bucket_name=bucket.name,
                    source_identity=self.storage.signing_source_identity(bucket),
                )
                checks["role_assumable"] = CheckResult(
                    "pass", f"session valid until {session.expires_at.isoformat()}"
                )
            except Exception as exc:
                checks["role_assumable"] = CheckResult("fail", _reason(exc))
        else:
            checks["role_assumable"] = CheckResult("skipped", f"auth_mode is {bucket.auth_mode}")

        if any(check.status == "fail" for check in checks.values()):
            for name in ("bucket_listable", "presign_test"):
                checks[name] = CheckResult("skipped", "no usable credentials")
            return report

        try:
            signer = await self.storage.signer_for(bucket, min_lifetime=60)
        except Exception as exc:
            for name in ("bucket_listable", "presign_test"):
                checks[name] = CheckResult("fail", _reason(exc))
            return report

        try:
            await signer.list_one()
            checks["bucket_listable"] = CheckResult("pass", "ListObjectsV2 answered")
        except Exception as exc:
            checks["bucket_listable"] = CheckResult("fail", _reason(exc))

        if bucket.provider is Provider.GCP:
            checks["presign_test"] = await self._gcs_presign_test(signer)
        else:
            checks["presign_test"] = await self._presign_test(signer)
        if write_probe:
            checks["write_probe"] = await self._write_probe(signer)
        if bucket.credential_vending:
            if isinstance(signer, GcsBucketSigner):
                checks[SCOPE_CHECK] = await self._gcs_scope_probe(bucket, signer, write=write_probe)
            else:
                checks[SCOPE_CHECK] = await self._scope_probe(bucket, signer, write=write_probe)
        return report

    async def _scope_probe(
        self, bucket: BucketRecord, signer: BucketSigner, *, write: bool
    ) -> CheckResult:
        """Vend a session for a probe prefix and ask the store for something outside it.

        Listing the whole bucket is what the bucket's own credentials just did
        (``bucket_listable``), so a refusal of the vended session proves the store applies
        the session policy. With ``write``, a write outside is tried too (and removed if the
        store accepts it), after a write inside that must succeed.
        """
        if not isinstance(signer, S3BucketSigner):
            return CheckResult("skipped", "only S3-speaking and gcp buckets vend credentials")
        ops = (CredentialOp.LIST, CredentialOp.WRITE, CredentialOp.DELETE)
        scope, vended = await self._vend_for_probe(bucket, ops if write else ops[:1])
        if isinstance(vended, Exception):
            return CheckResult("fail", f"no credential vended: {_reason(vended)}")
        if not isinstance(vended, VendedCredentials):
            return CheckResult("skipped", "only S3-speaking buckets vend credentials")
        scoped = S3BucketSigner(
            bucket.name,
            signer.layout,
            SigningCredentials(
                vended.access_key_id,
                vended.secret_access_key,
                vended.session_token,
                vended.expiration,
            ),
            signer.client_options,
            session=self._session(),
        )
        inside = await self._send(scoped, "", "GET", {"list-type": "2", "prefix": scope})
        if isinstance(inside, str) or inside.status_code != 200:
            return CheckResult("fail", f"a listing inside the scope failed ({_said(inside)})")
        outside = await self._send(scoped, "", "GET", {"list-type": "2"})
        if isinstance(outside, str) or not _refused(outside):
            return CheckResult(
                "fail",
                "the store did not refuse a listing outside the vended scope"
                f" ({_said(outside)}): it does not enforce session policies; turn"
                " credential_vending off",
            )
        if write:
            written = await self._send(scoped, scope + "probe", "PUT", None, b"scope")
            if isinstance(written, str) or written.status_code >= 300:
                return CheckResult("fail", f"a write inside the scope failed ({_said(written)})")
            await self._send(scoped, scope + "probe", "DELETE", None)
            stray = PROBE_PREFIX + "outside-" + random_tokens.token_hex(8)
            escaped = await self._send(scoped, stray, "PUT", None, b"scope")
            if isinstance(escaped, str) or not _refused(escaped):
                if not isinstance(escaped, str) and escaped.status_code < 300:
                    await self._send(signer, stray, "DELETE", None)
                return CheckResult(
                    "fail",
                    f"the store did not refuse a write outside the vended scope ({_said(escaped)})",
                )
        return CheckResult(
            "pass",
            f"a session vended for {scope} was refused outside it"
            + (" (listing and write)" if write else " (listing)"),
        )

    async def _vend_for_probe(
        self, bucket: BucketRecord, ops: tuple[CredentialOp, ...]
    ) -> tuple[str, object]:
        """A fresh probe prefix and what the bucket vends for it, for as short as it may (the
        exception instead, when vending fails: the check reports it)."""
        scope = PROBE_PREFIX + "scope-" + random_tokens.token_hex(8) + "/"
        user = SessionUser(PROBE_USER, request_id=request_id_var.get())
        duration = self.storage.shortest_credential_duration(bucket)
        try:
            return scope, await self.storage.vend_credentials(bucket, scope, ops, duration, user)
        except Exception as exc:
            return scope, exc

    async def _gcs_scope_probe(
        self, bucket: BucketRecord, signer: GcsBucketSigner, *, write: bool
    ) -> CheckResult:
        """Vend a downscoped token for a probe prefix and ask Cloud Storage for something
        outside it.

        The token lists inside the prefix and is refused a listing of the whole bucket, which
        the bucket's own account just made (``bucket_listable``). With ``write``, it also
        writes and reads back an object inside and is refused a write outside (403). The
        boundary holds no role that deletes, so what the probe wrote is removed as the
        bucket's own account, a stray write outside included.
        """
        ops = (CredentialOp.LIST, CredentialOp.READ, CredentialOp.WRITE)
        scope, vended = await self._vend_for_probe(bucket, ops if write else ops[:1])
        if isinstance(vended, Exception):
            return CheckResult("fail", f"no token vended: {_reason(vended)}")
        if not isinstance(vended, DownscopedToken):
            return CheckResult("skipped", "the bucket vends no downscoped tokens")
        written: list[str] = []
        try:
            verdict = await self._gcs_scope_checks(
                signer.calls_as(vended.access_token), scope, written, write=write
            )
        except Exception as exc:
            verdict = CheckResult("fail", f"Cloud Storage did not answer: {_reason(exc)}")
        leftovers = [note for name in written if (note := await _remove(signer, name))]
        if leftovers:
            verdict.reason += "; " + "; ".join(leftovers)
        return verdict

    async def _gcs_scope_checks(
        self, scoped: ObjectCalls, scope: str, written: list[str], *, write: bool
    ) -> CheckResult:
        """The verdict on what ``scoped`` may do; names of objects it wrote go to ``written``."""
        inside = await scoped.list(scope)
        if inside != 200:
            return CheckResult("fail", f"a listing inside the scope failed (answered {inside})")
        escapes = []
        listing = await scoped.list("")
        if listing != 403:
            escapes.append(f"a listing of the whole bucket (answered {listing})")
        if write:
            name = scope + "probe"
            body = random_tokens.token_bytes(32)
            uploaded = await scoped.upload(name, body)
            if uploaded < 300:
                written.append(name)
            if uploaded != 200:
                return CheckResult("fail", f"a write inside the scope failed (answered {uploaded})")
            status, content = await scoped.read(name)
            if status != 200:
                return CheckResult("fail", f"a read inside the scope failed (answered {status})")
            if content != body:
                return CheckResult("fail", "the object read back inside the scope differs")
            stray = PROBE_PREFIX + "outside-" + random_tokens.token_hex(8)
            escaped = await scoped.upload(stray, b"scope")
            if escaped < 300:
                written.append(stray)
            if escaped != 403:
                escapes.append(f"a write of {stray} (answered {escaped})")
        if escapes:
            return CheckResult(
                "fail",
                "Cloud Storage did not refuse " + " nor ".join(escapes) + " outside the vended"
                " scope: it does not enforce access boundaries; turn credential_vending off",
            )
        return CheckResult(
            "pass",
            f"a token vended for {scope} was refused outside it"
            + (" (listing and write)" if write else " (listing)"),
        )

    def _session(self) -> AioSession:
        if self._aio_session is None:
            self._aio_session = AioSession()
        return self._aio_session

    async def _send(
        self,
        signer: BucketSigner,
        key: str,
        method: str,
        params: dict[str, str] | None,
        content: bytes | None = None,
    ) -> httpx.Response | str:
        signed = await self.storage.sign_with(signer, key, method, 60, params=params)
        try:
            return await self.http.request(
                method, signed.url, headers=signed.headers, content=content, timeout=10
            )
        except httpx.HTTPError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                return f"not sent: {refused.message}"
            return f"no answer ({type(exc).__name__})"

    async def _presign_test(self, signer: BucketSigner) -> CheckResult:
        key = PROBE_PREFIX + "presign-" + random_tokens.token_hex(8)
        try:
            signed = await self.storage.sign_with(signer, key, "HEAD", 60)
        except RegistryError as exc:
            return CheckResult("fail", exc.message)
        try:
            response = await self.http.head(signed.url, headers=signed.headers, timeout=10)
        except httpx.HTTPError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                return CheckResult("fail", f"not sent: {refused.message}")
            return CheckResult("fail", f"the store did not answer ({type(exc).__name__})")
        if response.status_code in (200, 404):
            return CheckResult("pass", f"the store accepted the signature ({response.status_code})")
        if response.status_code == 403:
            return CheckResult("fail", "the store rejected the presigned URL (403)")
        return CheckResult("fail", f"unexpected answer {response.status_code} from the store")

    async def _gcs_presign_test(self, signer: BucketSigner) -> CheckResult:
        # For gcp the check is that a V4 URL can be produced with the bucket's identity (under
        # Workload Identity that exercises IAM signBlob); listing above already proved access.
        key = PROBE_PREFIX + "presign-" + random_tokens.token_hex(8)
        try:
            signed = await self.storage.sign_with(signer, key, "HEAD", 60)
        except RegistryError as exc:
            return CheckResult("fail", exc.message)
        if "X-Goog-Signature=" not in signed.url:
            return CheckResult("fail", "the signer produced no V4 signature")
        return CheckResult("pass", f"V4 URL signed as {signer.access_key_id}")

    async def _write_probe(self, signer: BucketSigner) -> CheckResult:
        key = PROBE_PREFIX + "write-" + random_tokens.token_hex(8)
        body = random_tokens.token_bytes(64)
        steps = (("PUT", body), ("GET", None), ("DELETE", None))
        for method, content in steps:
            signed = await self.storage.sign_with(signer, key, method, 60)
            try:
                response = await self.http.request(
                    method, signed.url, headers=signed.headers, content=content, timeout=10
                )
            except httpx.HTTPError as exc:
                refused = refusal_in(exc)
                if refused is not None:
                    return CheckResult("fail", f"{method} not sent: {refused.message}")
                return CheckResult("fail", f"{method} failed ({type(exc).__name__})")
            if response.status_code >= 300:
                return CheckResult("fail", f"{method} answered {response.status_code}")
            if method == "GET" and response.content != body:
                return CheckResult("fail", "the object read back differs from what was written")
        return CheckResult("pass", f"wrote, read back and deleted {key}")


async def _remove(signer: GcsBucketSigner, name: str) -> str | None:
    """Delete ``name`` as the bucket's own account; a note for the report when that fails."""
    try:
        await signer.delete_object(name)
    except Exception as exc:
        return f"{name} was left behind ({_reason(exc)}): delete it by hand"
    return None


def _refused(response: httpx.Response) -> bool:
    """S3's answer to a request the caller's policy does not allow."""
    return response.status_code == 403 and b"<Code>AccessDenied</Code>" in response.content


def _said(answer: httpx.Response | str) -> str:
    return answer if isinstance(answer, str) else f"answered {answer.status_code}"
