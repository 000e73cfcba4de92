"""Temporary credentials from STS AssumeRole, shared by every bucket that names the same role."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from app.cache import AsyncCache
from app.config import Settings
from app.errors import DependencyUnavailable
from app.netguard import GuardedResolver, NetGuard, refusal_in
from app.storage.base import as_utc, utcnow
from app.storage.credentials import SigningCredentials

log = logging.getLogger(__name__)

# (role ARN, external id, SourceIdentity): a session with a source identity is a different one.
SessionKey = tuple[str, str | None, str | None]

# Answers from STS that retrying cannot fix: the role's trust policy, the external id or the
# requested duration is wrong. They are configuration errors, not outages.
_NOT_ASSUMABLE = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ValidationError",
        "MalformedPolicyDocument",
        "RegionDisabledException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)

_SESSION_NAME_FORBIDDEN = re.compile(r"[^\w+=,.@-]", re.ASCII)

# However large the refresh margin, a role is re-assumed for lifetime reasons at most this often.
MIN_REUSE_SECONDS = 60


class RoleNotAssumable(DependencyUnavailable):
    """STS refused the role (trust policy, external id, duration): the bucket is misconfigured."""

    code = "role_not_assumable"

    def __init__(self, role_arn: str, sts_code: str) -> None:
        super().__init__("sts", f"role {role_arn} cannot be assumed by the registry ({sts_code})")
        self.role_arn = role_arn
        self.sts_code = sts_code


@dataclass(frozen=True, slots=True)
class AssumedSession:
    role_arn: str
    external_id: str | None = field(repr=False)
    session_name: str
    credentials: SigningCredentials

    @property
    def expires_at(self) -> datetime:
        assert self.credentials.expires_at is not None
        return self.credentials.expires_at


def role_session_name(bucket_name: str | None) -> str:
    """A RoleSessionName that tells CloudTrail readers which service and bucket assumed the role."""
    raw = f"bucket-registry-{bucket_name}" if bucket_name else "bucket-registry"
    return _SESSION_NAME_FORBIDDEN.sub("-", raw)[:64]


class StsSessions:
    """Assumes roles and keeps each ``(role_arn, external_id, source_identity)`` session until
    shortly before expiry.

    ``session_for`` answers from the cache while the session can still sign for the caller's
    lifetime, and otherwise assumes the role again, once for all concurrent callers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: AioSession | None = None,
        clock: Callable[[], datetime] | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        observe: Callable[[str, float, bool], None] | None = None,
        netguard: NetGuard | None = None,
    ) -> None:
        self._settings = settings
        guard = netguard or NetGuard(settings.endpoint_allowlist).trusting(
            settings.sts_endpoint_url
        )
        self._observe = observe
        self._session = session or AioSession()
        self._now = clock or utcnow
        self._config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            connector_args={"resolver": GuardedResolver(guard)},
        )
        self.margin = float(settings.sts_refresh_margin)
        self.duration = settings.sts_session_duration
        # Expirations are wall-clock instants set by STS, so the cache ages entries on the same
        # clock rather than on a monotonic one.
        epoch = self._epoch_seconds
        self._sessions: AsyncCache[SessionKey, AssumedSession] = AsyncCache(
            "sts_sessions", ttl=0, max_entries=settings.cache_max_entries, clock=epoch
        )
        # Never stores anything (ttl 0): it only makes concurrent forced refreshes share one call.
        self._refreshes: AsyncCache[tuple[SessionKey, datetime], AssumedSession] = AsyncCache(
            "sts_refreshes", ttl=0, clock=epoch
        )
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._exit_stack = AsyncExitStack()
        self.assume_count = 0

    def _epoch_seconds(self) -> float:
        return self._now().timestamp()

    @property
    def session_cache(self) -> AsyncCache[SessionKey, AssumedSession]:
        """The session cache, for metrics; read its ``stats``, do not write to it."""
        return self._sessions

    def required_seconds(self, min_lifetime: int) -> float:
        """How long credentials must still live to be used for a URL living ``min_lifetime``.

        Normally ``min_lifetime + margin``. But a fresh session cannot give more than its full
        duration, so the demand is capped at ``duration - margin`` (and at least a minute below
        the duration): otherwise every call for a long URL would assume the role again and
        still have its URL shortened. With the cap, long URLs cost one AssumeRole per margin.
        """
        return min(
            min_lifetime + self.margin,
            self.duration - max(self.margin, MIN_REUSE_SECONDS),
        )

    def covers(self, expires_at: datetime | None, min_lifetime: int) -> bool:
        if expires_at is None:
            return True
        left = (expires_at - self._now()).total_seconds()
        return left >= self.required_seconds(min_lifetime)

    async def session_for(
        self,
        role_arn: str,
        external_id: str | None,
        min_remaining: int,
        *,
        bucket_name: str | None = None,
        source_identity: str | None = None,
    ) -> AssumedSession:
        """A session for the role that can sign URLs living ``min_remaining`` seconds.

        If even a fresh session is shorter than that, the caller must shorten its URLs to the
        session's remaining life (see ``base.lifetime_within``). ``source_identity`` is set on
        the session (the registry's own name, for buckets whose trust policy allows
        ``sts:SetSourceIdentity``), so CloudTrail shows it on every use of the session.
        """
        key: SessionKey = (role_arn, external_id, source_identity)

        def assume() -> Awaitable[AssumedSession]:
            return self._assume(
                role_arn, external_id, role_session_name(bucket_name), source_identity
            )

        session = await self._sessions.get(key, assume, ttl=self._ttl)
        if self.covers(session.expires_at, min_remaining):
            return session
        fresh = await self._refreshes.get((key, session.expires_at), assume)
        if fresh.expires_at > session.expires_at:
            self._sessions.set(key, fresh, ttl=self._ttl)
        return fresh

    def invalidate(self, role_arn: str, external_id: str | None) -> None:
        self._sessions.invalidate_where(lambda key: key[:2] == (role_arn, external_id))

    def _ttl(self, session: AssumedSession) -> float:
        return (session.expires_at - self._now()).total_seconds() - self.margin

    async def _assume(
        self,
        role_arn: str,
        external_id: str | None,
        session_name: str,
        source_identity: str | None = None,
    ) -> AssumedSession:
        client = await self._sts_client()
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": session_name,
            "DurationSeconds": self.duration,
        }
        if external_id:
            params["ExternalId"] = external_id
        if source_identity:
            params["SourceIdentity"] = source_identity
        self.assume_count += 1
        started = time.perf_counter()
        ok = False
        try:
            answer = await client.assume_role(**params)
            ok = True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            if code in _NOT_ASSUMABLE:
                raise RoleNotAssumable(role_arn, code) from exc
            raise DependencyUnavailable("sts", f"STS AssumeRole failed ({code})") from exc
        except NoCredentialsError as exc:
            raise DependencyUnavailable(
                "sts", "the registry has no AWS credentials to call STS with"
            ) from exc
        except BotoCoreError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise DependencyUnavailable("sts", f"STS not contacted: {refused.message}") from exc
            raise DependencyUnavailable(
                "sts", f"STS is unreachable ({type(exc).__name__})"
            ) from exc
        finally:
            if self._observe is not None:
                self._observe("sts", time.perf_counter() - started, ok)
        creds = answer.get("Credentials") if isinstance(answer, dict) else None
        fields = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
        if not isinstance(creds, dict) or not all(creds.get(name) for name in fields):
            raise DependencyUnavailable("sts", "STS answered AssumeRole without usable credentials")
        if not isinstance(creds["Expiration"], datetime):
            raise DependencyUnavailable("sts", "STS answered AssumeRole without an expiry")
        log.info(
            "assumed role",
            extra={
                "role_arn": role_arn,
                "session_name": session_name,
                "expires": str(creds["Expiration"]),
            },
        )
        return AssumedSession(
            role_arn=role_arn,
            external_id=external_id,
            session_name=session_name,
            credentials=SigningCredentials(
                access_key_id=creds["AccessKeyId"],
                secret_access_key=creds["SecretAccessKey"],
                session_token=creds["SessionToken"],
                expires_at=as_utc(creds["Expiration"]),
            ),
        )

    async def _sts_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                region = self._session.get_config_variable("region") or "us-east-1"
                self._client = await self._exit_stack.enter_async_context(
                    self._session.create_client(
                        "sts",
                        region_name=region,
                        endpoint_url=self._settings.sts_endpoint_url,
                        config=self._config,
                    )
                )
        return self._client

    async def aclose(self) -> None:
        self._client = None
        await self._exit_stack.aclose()
        self._sessions.clear()
