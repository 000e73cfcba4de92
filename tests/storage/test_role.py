"""Role buckets: STS AssumeRole sessions, their reuse and refresh, and URL lifetimes within them."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from moto.sts.models import sts_backends

from app.config import Settings
from app.errors import DependencyUnavailable
from app.registry.records import AuthMode, Op, Provider
from app.storage.service import StorageService
from app.storage.sts import RoleNotAssumable, role_session_name
from tests.storage.conftest import ROLE_ARN, DictSecrets, WallClock, make_bucket
from tests.support.moto import MotoServer
from tests.support.net import BackgroundHTTPServer, free_port
from tests.support.s3_gateway import S3Gateway

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def role(moto: MotoServer) -> str:
    iam = boto3.client("iam", endpoint_url=moto.url, region_name="us-east-1")
    arn = iam.create_role(
        RoleName="bucket-registry-data", AssumeRolePolicyDocument=json.dumps(TRUST_POLICY)
    )["Role"]["Arn"]
    assert arn == ROLE_ARN
    return str(arn)


def role_bucket(gateway: S3Gateway, **overrides: Any) -> Any:
    fields = {
        "provider": Provider.MINIO,
        "endpoint": gateway.url,
        "auth_mode": AuthMode.ROLE,
        "role_arn": ROLE_ARN,
        "secret_ref": None,
    }
    return make_bucket(**{**fields, **overrides})


def assumed_roles() -> list[Any]:
    return list(sts_backends["123456789012"]["aws"].assumed_roles)


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def test_role_bucket_round_trip_signs_with_the_session_keys(
    service: StorageService, gateway: S3Gateway, moto_s3: Any, role: str
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    bucket = role_bucket(gateway)
    put = await service.presign(bucket, "results/run 1.vcf", Op.WRITE, 900)
    async with httpx.AsyncClient() as http:
        assert (await http.put(put.url, content=b"ACGT" * 1000)).status_code == 200
        get = await service.presign(bucket, "results/run 1.vcf", Op.READ, 900)
        answer = await http.get(get.url)
    assert answer.content == b"ACGT" * 1000

    [session] = assumed_roles()
    assert session.role_arn == ROLE_ARN
    assert session.access_key_id.startswith("ASIA")
    assert query(get.url)["X-Amz-Credential"].split("/")[0] == session.access_key_id
    assert query(get.url)["X-Amz-Security-Token"] == session.session_token
    assert gateway.seen_access_keys == {session.access_key_id}
    assert service.stats.assume_count == 1


async def test_external_id_session_name_and_duration_reach_sts(
    settings: Settings, secrets: DictSecrets, gateway: S3Gateway, role: str, clock: WallClock
) -> None:
    settings = settings.model_copy(update={"sts_session_duration": 1800})
    signing = StorageService(settings, secrets, clock=clock)
    try:
        bucket = role_bucket(gateway, external_id="gen3-ext-42", name="my-data.bucket")
        signer = await signing.signer_for(bucket, min_lifetime=60)
    finally:
        await signing.aclose()
    [session] = assumed_roles()
    assert session.external_id == "gen3-ext-42"
    assert session.session_name == "bucket-registry-my-data.bucket"
    assert signer.access_key_id == session.access_key_id
    assert signer.credentials_expire_at is not None
    lifetime = signer.credentials_expire_at - clock.now
    assert timedelta(seconds=1790) < lifetime < timedelta(seconds=1810)


def test_role_session_names_are_what_sts_accepts() -> None:
    name = role_session_name("odd name/with:chars*and-a-very-long-tail-" + "x" * 80)
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name)
    assert name.startswith("bucket-registry-odd-name-with-chars-and")
    assert role_session_name(None) == "bucket-registry"


async def test_one_session_serves_many_urls(
    service: StorageService, gateway: S3Gateway, role: str
) -> None:
    bucket = role_bucket(gateway)
    # A cold start under concurrency still assumes the role once.
    signers = await asyncio.gather(
        *(service.signer_for(bucket, min_lifetime=3600) for _ in range(50))
    )
    assert len({id(signer) for signer in signers}) == 1
    for index in range(1000):
        await service.presign(bucket, f"k{index}", Op.READ, 3600)
    assert service.stats.assume_count == 1
    assert len(assumed_roles()) == 1
    assert service.stats.signers_built == 1


async def test_session_is_renewed_only_when_it_cannot_cover_the_url(
    service: StorageService, gateway: S3Gateway, role: str, clock: WallClock
) -> None:
    bucket = role_bucket(gateway)
    first = await service.presign(bucket, "k", Op.READ, 600)
    first_key = query(first.url)["X-Amz-Credential"].split("/")[0]

    clock.advance(2000)  # about 1600 s of the 3600 s session left
    again = await service.presign(bucket, "k", Op.READ, 600)  # needs 600 + 300 margin
    assert service.stats.assume_count == 1
    assert query(again.url)["X-Amz-Credential"].startswith(first_key)

    longer = await service.presign(bucket, "k", Op.READ, 1500)  # needs 1800
    assert service.stats.assume_count == 2
    assert not query(longer.url)["X-Amz-Credential"].startswith(first_key)
    assert service.stats.signers_built == 2


async def test_url_never_outlives_a_session_shorter_than_requested(
    settings: Settings, secrets: DictSecrets, gateway: S3Gateway, moto_s3: Any, role: str
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    moto_s3.put_object(Bucket="data-bucket", Key="k", Body=b"data")
    settings = settings.model_copy(update={"sts_session_duration": 900})
    signing = StorageService(settings, secrets)
    try:
        bucket = role_bucket(gateway)
        urls = [await signing.presign(bucket, "k", Op.READ, 3600) for _ in range(20)]
        signer = await signing.signer_for(bucket, min_lifetime=3600)
    finally:
        await signing.aclose()
    # Fresh sessions cannot cover an hour: the URL is shortened, and the session is not
    # re-assumed on every call in a vain attempt.
    assert signing.stats.assume_count == 1
    assert signer.credentials_expire_at is not None
    for presigned in urls:
        assert 880 <= int(query(presigned.url)["X-Amz-Expires"]) <= 900
        assert presigned.expires_at <= signer.credentials_expire_at
        assert presigned.expires_at.tzinfo is UTC
    async with httpx.AsyncClient() as http:
        assert (await http.get(urls[-1].url)).status_code == 200
        gateway.clock_offset = 901  # the session has expired, and so has the URL
        assert (await http.get(urls[-1].url)).status_code == 403


async def test_unreachable_sts_is_a_dependency_error(
    secrets: DictSecrets, gateway: S3Gateway
) -> None:
    settings = Settings(sts_endpoint_url=f"http://127.0.0.1:{free_port()}")
    signing = StorageService(settings, secrets, max_attempts=2)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await signing.presign(role_bucket(gateway), "k", Op.READ)
    finally:
        await signing.aclose()
    assert caught.value.dependency == "sts"
    assert caught.value.status_code == 503
    assert "unreachable" in caught.value.message
    assert signing.stats.signers_built == 0


class StsStub(BackgroundHTTPServer):
    """An STS that answers every call with one error, counting the calls."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(_StsErrorHandler)
        self.status = status
        self.code = code
        self.calls = 0


class _StsErrorHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        stub: StsStub = self.server.owner  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        stub.calls += 1
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>{stub.code}</Code>"
            "<Message>User: arn:aws:iam::123456789012:user/registry is not authorized</Message>"
            "</Error><RequestId>r-1</RequestId></ErrorResponse>"
        ).encode()
        self.send_response(stub.status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sts_stub(request: pytest.FixtureRequest) -> Any:
    status, code = request.param
    stub = StsStub(status, code).start()
    yield stub
    stub.stop()


@pytest.mark.parametrize("sts_stub", [(403, "AccessDenied")], indirect=True)
async def test_refused_role_is_reported_without_secrets(
    sts_stub: StsStub, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    signing = StorageService(Settings(sts_endpoint_url=sts_stub.url), secrets, max_attempts=3)
    try:
        with pytest.raises(RoleNotAssumable) as caught:
            await signing.presign(role_bucket(gateway, external_id="s3cr3t-ext"), "k", Op.READ)
    finally:
        await signing.aclose()
    assert sts_stub.calls == 1  # a refusal is not retried
    assert caught.value.code == "role_not_assumable"
    assert caught.value.status_code == 503
    assert (
        caught.value.message == f"role {ROLE_ARN} cannot be assumed by the registry (AccessDenied)"
    )


@pytest.mark.parametrize(
    "sts_stub", [(400, "Throttling"), (503, "ServiceUnavailable")], indirect=True
)
async def test_throttling_is_retried_then_reported(
    sts_stub: StsStub, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    signing = StorageService(Settings(sts_endpoint_url=sts_stub.url), secrets, max_attempts=2)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await signing.signer_for(role_bucket(gateway), min_lifetime=60)
    finally:
        await signing.aclose()
    assert sts_stub.calls == 2
    assert not isinstance(caught.value, RoleNotAssumable)
    assert caught.value.message == f"STS AssumeRole failed ({sts_stub.code})"
