"""``credentials()``: the client asks the running service for temporary keys (``POST
/credentials``) over real HTTP, the keys move bytes through the gateway (which enforces the
session policy), and refusals arrive as the client's typed errors."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from bucket_registry_client import (
    AsyncBucketRegistryClient,
    BucketNotFound,
    BucketRegistryClient,
    Forbidden,
    GcsAccessToken,
    Grant,
    Invalid,
    OnBehalfOf,
    S3Credentials,
    Unavailable,
)

from tests.client.conftest import BUCKET, FENCE_SA, PROJECT, SECRET, Commons, Trusted
from tests.support.moto import MotoServer

VENDED = "client-vended"


def register_vending_bucket(commons: Commons, moto: MotoServer, secret_ref: str) -> None:
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=VENDED)
    created = commons.admin(
        "POST",
        "/admin/buckets",
        json={
            "name": VENDED,
            "provider": "minio",
            "endpoint": commons.gateway.url,
            "auth_mode": "static",
            "secret_ref": secret_ref,
            "data_upload_allowed": True,
            "credential_vending": True,
        },
    )
    assert created.status_code == 201, created.text
    bound = commons.admin(
        "POST",
        f"/admin/buckets/{VENDED}/bindings",
        json={
            "resource_path": PROJECT,
            "allowed_ops": {"read": True, "write": True, "delete": True, "multipart": True},
        },
    )
    assert bound.status_code == 201, bound.text


@pytest.fixture
def vending(commons: Commons, live, moto: MotoServer) -> Commons:  # type: ignore[no-untyped-def]
    register_vending_bucket(commons, moto, f"file://{live.secrets_dir}/client-data.json")
    return commons


def s3_with(commons: Commons, keys: S3Credentials):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=keys.endpoint,
        region_name=keys.region,
        aws_access_key_id=keys.access_key_id,
        aws_secret_access_key=keys.secret_access_key,
        aws_session_token=keys.session_token,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_credentials_move_bytes_inside_the_prefix_only(vending: Commons) -> None:
    token = vending.token("alice")
    with BucketRegistryClient(vending.url) as client:
        keys = client.credentials(
            VENDED, "incoming/alice/", ["read", "write", "list"], token, duration=900
        )
    assert isinstance(keys, S3Credentials)
    assert (keys.bucket, keys.prefix, keys.endpoint) == (
        VENDED,
        "incoming/alice/",
        vending.gateway.url,
    )
    assert 0 < (keys.expiration - datetime.now(UTC)).total_seconds() <= 900
    # The secret parts stay out of the object's repr (and so out of a log line of it).
    assert keys.secret_access_key not in repr(keys) and keys.session_token not in repr(keys)
    assert vending.gateway.sts_calls[-1].params["DurationSeconds"] == "900"

    s3 = s3_with(vending, keys)
    s3.put_object(Bucket=VENDED, Key="incoming/alice/a.txt", Body=b"alice's")
    assert s3.get_object(Bucket=VENDED, Key="incoming/alice/a.txt")["Body"].read() == b"alice's"
    with pytest.raises(ClientError) as outside:
        s3.put_object(Bucket=VENDED, Key="incoming/bob/x", Body=b"!")
    assert outside.value.response["Error"]["Code"] == "AccessDenied"


def test_refusals_are_typed_and_checked_before_sending(vending: Commons) -> None:
    token = vending.token("alice")
    with BucketRegistryClient(vending.url, retries=0) as client:
        with pytest.raises(Forbidden):
            client.credentials(VENDED, "incoming/", ["read"], vending.token("mallory"))
        with pytest.raises(BucketNotFound):
            client.credentials("no-such-bucket", "", ["read"], token)
        # The commons' own bucket does not vend: 400 credential_vending_off.
        with pytest.raises(Invalid) as off:
            client.credentials(BUCKET, "incoming/", ["read"], token)
        assert off.value.code == "credential_vending_off" and off.value.status == 400
        with pytest.raises(Invalid) as short:
            client.credentials(VENDED, "incoming/", ["read"], token, duration=60)
        assert short.value.status == 400 and "900" in str(short.value)
        sent = len(vending.gateway.sts_calls)
        for prefix, ops in (
            ("incoming", ["read"]),
            ("incoming/", []),
            ("incoming/", ["multipart"]),
            ("incoming/", "read"),
        ):
            with pytest.raises(Invalid) as early:
                client.credentials(VENDED, prefix, ops, token)
            assert early.value.status is None  # refused by the client, not the registry
    assert len(vending.gateway.sts_calls) == sent
    assert SECRET not in str(off.value)


def test_an_sts_outage_is_unavailable(vending: Commons) -> None:
    token = vending.token("alice")
    # The bucket's STS at a port where nothing listens.
    patched = vending.admin(
        "PATCH", f"/admin/buckets/{VENDED}", json={"sts_endpoint": "http://127.0.0.1:9"}
    )
    assert patched.status_code == 200, patched.text
    # The registry retries STS with backoff before it answers 503: a budget longer than the
    # client's default 2 s, so the answer (not the client's own timeout) is what is checked.
    with BucketRegistryClient(vending.url, retries=0, timeout=30.0) as client:
        with pytest.raises(Unavailable) as down:
            client.credentials(VENDED, "incoming/", ["read"], token)
    assert down.value.status == 503 and down.value.code == "dependency_unavailable"


async def test_the_async_client(vending: Commons) -> None:
    token = vending.token("alice")
    async with AsyncBucketRegistryClient(vending.url, backoff=0.01) as client:
        keys = await client.credentials(VENDED, "incoming/", ["write"], token)
        assert isinstance(keys, S3Credentials)
        s3 = s3_with(vending, keys)
        s3.put_object(Bucket=VENDED, Key="incoming/async", Body=b"async")
        with pytest.raises(Forbidden):
            await client.credentials(VENDED, "incoming/", ["read"], vending.token("mallory"))


def test_a_trusted_caller_asks_for_the_user_it_names(trusted: Trusted, moto: MotoServer) -> None:
    secrets_dir = trusted.token_path.parent / "secrets"
    register_vending_bucket(trusted, moto, f"file://{secrets_dir}/client-data.json")
    with BucketRegistryClient(trusted.url, token_path=trusted.token_path) as client:
        keys = client.credentials(
            VENDED,
            "incoming/",
            ["read"],
            OnBehalfOf.user("alice"),
            grant=Grant(authz=(PROJECT,)),
        )
        assert isinstance(keys, S3Credentials)
        call = trusted.gateway.sts_calls[-1]
        assert call.source_identity == "alice" and call.tags["gen3-via"] == FENCE_SA
        with pytest.raises(Invalid):
            client.credentials(VENDED, "incoming/", ["read"], OnBehalfOf.user("alice"))


def test_a_gcp_answer_is_a_token_without_aws_fields() -> None:
    answer = {
        "access_token": "ya29.downscoped-example",
        "expiration": "2030-01-01T00:00:00.5Z",
        "bucket": "gen3-gcs",
        "prefix": "incoming/",
        "provider": "gcp",
    }

    def registry(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/credentials"
        return httpx.Response(200, json=answer)

    client = BucketRegistryClient("http://registry", transport=httpx.MockTransport(registry))
    token = client.credentials("gen3-gcs", "incoming/", ["read"], "user-token")
    assert isinstance(token, GcsAccessToken)
    assert token.expiration.year == 2030 and token.access_token not in repr(token)
