"""CredentialVendor: what AssumeRole is asked, durations, and every way STS can say no."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import pytest

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput
from app.registry.records import AuthMode, BucketRecord, Provider
from app.storage.service import StorageService
from app.storage.session_policy import CredentialOp, packed, session_policy
from app.storage.vending import (
    SessionUser,
    VendingRefused,
    session_name,
    session_tags,
    source_identity,
)
from tests.storage.conftest import DictSecrets, make_bucket
from tests.support.moto import MotoServer
from tests.support.net import BackgroundHTTPServer

ROLE_ARN = "arn:aws:iam::123456789012:role/gen3-vended"
USER = SessionUser(name="alice", user_id="42", request_id="0123456789abcdef0123456789abcdef")
READ = (CredentialOp.READ,)


def vending_bucket(**overrides: Any) -> BucketRecord:
    values: dict[str, Any] = {
        "provider": Provider.AWS,
        "auth_mode": AuthMode.ROLE,
        "role_arn": ROLE_ARN,
        "secret_ref": None,
        "credential_vending": True,
    }
    values.update(overrides)
    return make_bucket(**values)


class _StsStub(BaseHTTPRequestHandler):
    """An STS that answers every call with the error (or body) the test sets."""

    answer: ClassVar[tuple[int, bytes]] = (500, b"")
    calls: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        _StsStub.calls.append(dict(parse_qsl(self.rfile.read(length).decode())))
        status, body = _StsStub.answer
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def sts_error(code: str) -> bytes:
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>no</Message></Error>"
        "<RequestId>r-1</RequestId></ErrorResponse>"
    ).encode()


@pytest.fixture
def sts_stub() -> Any:
    _StsStub.calls = []
    server = BackgroundHTTPServer(_StsStub).start()
    yield server
    server.stop()


@pytest.fixture
async def vending(sts_stub: Any, secrets: DictSecrets) -> Any:
    settings = Settings(sts_endpoint_url=sts_stub.url, endpoint_allowlist=["127.0.0.1"])
    service = StorageService(settings, secrets, max_attempts=1)
    yield service
    await service.aclose()


@pytest.mark.parametrize(
    ("status", "code", "raised", "message"),
    [
        (403, "AccessDenied", VendingRefused, "sts:SetSourceIdentity and sts:TagSession"),
        (400, "ValidationError", VendingRefused, "maximum session duration"),
        (400, "PackedPolicyTooLarge", InvalidInput, "too large once packed"),
        (400, "Throttling", DependencyUnavailable, "STS AssumeRole failed (Throttling)"),
        (500, "InternalFailure", DependencyUnavailable, "STS AssumeRole failed"),
    ],
)
async def test_sts_refusals_are_named(
    vending: StorageService, status: int, code: str, raised: type[Exception], message: str
) -> None:
    _StsStub.answer = (status, sts_error(code))
    with pytest.raises(raised, match=re.escape(message)) as caught:
        await vending.vend_credentials(vending_bucket(), "data/", READ, None, USER)
    error = caught.value
    assert not isinstance(error, InvalidInput) or code == "PackedPolicyTooLarge"
    if raised is VendingRefused:
        assert getattr(error, "status_code", None) == 503
        assert getattr(error, "code", None) == "credential_vending_refused"


async def test_an_answer_without_keys_is_an_outage(vending: StorageService) -> None:
    body = (
        b'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        b"<AssumeRoleResult><Credentials><AccessKeyId>ASIA1</AccessKeyId></Credentials>"
        b"</AssumeRoleResult></AssumeRoleResponse>"
    )
    _StsStub.answer = (200, body)
    with pytest.raises(DependencyUnavailable, match="without usable credentials"):
        await vending.vend_credentials(vending_bucket(), "data/", READ, None, USER)


async def test_a_bucket_sts_endpoint_goes_through_the_destination_policy(
    vending: StorageService,
) -> None:
    # Registration refuses it already; a row written before a policy change still cannot
    # make the registry call the metadata service.
    bucket = vending_bucket(sts_endpoint="http://169.254.169.254")
    with pytest.raises(DependencyUnavailable, match="STS not contacted"):
        await vending.vend_credentials(bucket, "data/", READ, None, USER)
    assert _StsStub.calls == []


async def test_an_unreachable_sts_is_503(secrets: DictSecrets) -> None:
    settings = Settings(sts_endpoint_url="http://127.0.0.1:9", endpoint_allowlist=["127.0.0.1"])
    service = StorageService(settings, secrets, max_attempts=1)
    try:
        with pytest.raises(DependencyUnavailable, match="STS is unreachable"):
            await service.vend_credentials(vending_bucket(), "data/", READ, None, USER)
    finally:
        await service.aclose()


async def test_vending_is_off_unless_the_bucket_turns_it_on(vending: StorageService) -> None:
    with pytest.raises(InvalidInput, match="does not vend"):
        await vending.vend_credentials(
            vending_bucket(credential_vending=False), "data/", READ, None, USER
        )
    assert _StsStub.calls == []


async def test_what_assume_role_is_asked(moto: MotoServer, secrets: DictSecrets) -> None:
    from moto.sts.models import sts_backends

    settings = Settings(sts_endpoint_url=moto.url, endpoint_allowlist=["127.0.0.1"])
    service = StorageService(settings, secrets)
    try:
        bucket = vending_bucket(external_id="ext-1", name="commons-data")
        ops = (CredentialOp.READ, CredentialOp.LIST)
        vended = await service.vend_credentials(bucket, "data/ab/", ops, 1200, USER)
    finally:
        await service.aclose()
    sessions = [
        role
        for account in sts_backends.values()
        for backend in account.values()
        for role in backend.assumed_roles
        if role.access_key_id == vended.access_key_id
    ]
    assert len(sessions) == 1
    session = sessions[0]
    assert json.loads(session.policy) == session_policy("commons-data", "data/ab/", ops)
    assert session.policy == packed(session_policy("commons-data", "data/ab/", ops))
    assert session.role_arn == ROLE_ARN
    assert session.external_id == "ext-1"
    assert session.session_name == "0123456789abcdef0123456789abcdef-alice"
    assert vended.source_identity == "alice"
    assert 1170 <= (vended.expiration - datetime.now(UTC)).total_seconds() <= 1200


def test_durations(secrets: DictSecrets) -> None:
    vendor = StorageService(
        Settings(max_credential_ttl=7200, default_credential_ttl=3600), secrets
    ).vendor
    bucket = vending_bucket()
    assert vendor.duration_for(bucket, None) == 3600
    assert vendor.duration_for(bucket, 900) == 900
    assert vendor.duration_for(bucket, 10**6) == 7200
    lower = vending_bucket(max_credential_ttl=1800)
    assert vendor.duration_for(lower, None) == 1800
    assert vendor.duration_for(lower, 3000) == 1800
    with pytest.raises(InvalidInput, match="at least 900"):
        vendor.duration_for(bucket, 899)


def test_a_static_bucket_asks_its_stores_sts() -> None:
    # The STS for a static bucket is its store's, at its endpoint unless sts_endpoint says.
    bucket = vending_bucket(
        provider=Provider.MINIO,
        auth_mode=AuthMode.STATIC,
        role_arn=None,
        secret_ref="file:///secrets/data-bucket",
        endpoint="http://127.0.0.1:9000",
    )
    vendor = StorageService(Settings(), DictSecrets()).vendor
    assert vendor._sts_endpoint(bucket) == "http://127.0.0.1:9000"
    other = vending_bucket(
        provider=Provider.MINIO,
        auth_mode=AuthMode.STATIC,
        endpoint="http://127.0.0.1:9000",
        sts_endpoint="http://127.0.0.1:9001",
    )
    assert vendor._sts_endpoint(other) == "http://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("user", "identity", "name"),
    [
        (SessionUser("alice@example.org"), "alice@example.org", "alice@example.org"),
        (SessionUser("a b/ö", request_id="r:1"), "a-b--", "r-1-a-b--"),
        (SessionUser("x"), "x_", "x_"),
        (SessionUser("u" * 100, request_id="f" * 40), "u" * 64, "f" * 32 + "-" + "u" * 31),
    ],
)
def test_names_sts_accepts(user: SessionUser, identity: str, name: str) -> None:
    assert source_identity(user) == identity
    assert session_name(user) == name


def test_tags_name_the_user_within_sts_rules() -> None:
    user = SessionUser(
        "Zoë <z@x>", user_id="7", client_id="cli", via="system:serviceaccount:default:fence"
    )
    tags = {tag["Key"]: tag["Value"] for tag in session_tags(user, "b" * 300)}
    assert tags["gen3-user"] == "Zoë -z@x-"
    assert tags["gen3-via"] == "system:serviceaccount:default:fence"
    assert len(tags["gen3-bucket"]) == 256
    assert "gen3-request-id" not in tags


async def test_the_sts_client_pool_keeps_one_client_per_identity_and_closes_the_oldest(
    sts_stub: Any,
) -> None:
    from aiobotocore.session import AioSession

    from app.netguard import NetGuard
    from app.storage.credentials import SigningCredentials
    from app.storage.sts_clients import StsClients, client_key

    pool = StsClients(AioSession(), NetGuard(["127.0.0.1"]), max_clients=2)
    first = SigningCredentials("AKIAFIRST", "first-secret")
    second = SigningCredentials("AKIASECOND", "second-secret")
    try:
        registry = await pool.client(sts_stub.url, "us-east-1")
        assert await pool.client(sts_stub.url, "us-east-1") is registry
        keyed = await pool.client(sts_stub.url, "us-east-1", first)
        assert (
            keyed is not registry and await pool.client(sts_stub.url, "us-east-1", first) is keyed
        )
        # Rotated keys (same id, new secret) are another identity, so another client.
        rotated = await pool.client(
            sts_stub.url, "us-east-1", SigningCredentials("AKIAFIRST", "new")
        )
        assert rotated is not keyed
        assert pool.created == 3 and len(pool) == 2  # the least recently used one was closed
        await pool.client(sts_stub.url, "us-east-1", second)
        assert len(pool) == 2
        # No secret is held as a key of the pool.
        assert "first-secret" not in repr(client_key(sts_stub.url, "us-east-1", first, None))
    finally:
        await pool.aclose()
    assert len(pool) == 0
