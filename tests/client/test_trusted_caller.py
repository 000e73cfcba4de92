"""The Fence adapter with a service token, against the real service: Fence's projected
ServiceAccount token from a file, the user in ``on_behalf_of``, the record's authz, and bytes
through every URL. The call sites are listed in test_fence_adapter.py; the routes the service
does not serve yet (batch, delete, bucket listing) are covered there against the stub."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from bucket_registry_client import (
    BucketRegistryClient,
    ConfigurationError,
    Delegated,
    Forbidden,
    LegacyFallback,
    OnBehalfOfInvalid,
    Unauthenticated,
    UseLegacy,
)
from bucket_registry_client.fence import FenceBucketRegistry

from tests.client.conftest import BUCKET, KEY_ID, PROJECT, Trusted

GUID = "dg.TEST/0c6b1b7e-0000-4000-8000-000000000002"
ALICE_INFO = {"user_id": 7, "username": "alice", "client_id": "fence-ui"}


@pytest.fixture
def fence(trusted: Trusted) -> Iterator[FenceBucketRegistry]:
    adapter = FenceBucketRegistry.from_config(
        {
            "FENCE_ENABLE_DYNAMIC_BUCKETS": True,
            "BUCKET_REGISTRY_URL": trusted.url,
            "BUCKET_REGISTRY_TOKEN_PATH": str(trusted.token_path),
        }
    )
    assert adapter.client.uses_service_token
    yield adapter
    adapter.close()


def adapter(trusted: Trusted) -> FenceBucketRegistry:
    client = BucketRegistryClient(trusted.url, token_path=trusted.token_path)
    return FenceBucketRegistry(client, LegacyFallback(enabled=True))


def value(routed: object) -> str:
    assert isinstance(routed, Delegated), routed
    assert isinstance(routed.value, str)
    return routed.value


def test_record_upload_and_download_for_the_users_token(
    fence: FenceBucketRegistry, trusted: Trusted
) -> None:
    token = trusted.token("alice")
    location = f"s3://{BUCKET}/{GUID}/reads.bam"
    put = value(
        fence.get_signed_url(
            location, "upload", 600, authz=[PROJECT], token=token, auth_info=ALICE_INFO
        )
    )
    assert httpx.put(put, content=b"BAM\x01").status_code == 200
    get = value(
        fence.get_signed_url(
            location, "download", 600, authz=[PROJECT], token=token, auth_info=ALICE_INFO
        )
    )
    assert httpx.get(get).content == b"BAM\x01"
    assert trusted.gateway.seen_access_keys == {KEY_ID}


def test_a_passport_user_and_an_anonymous_user(
    fence: FenceBucketRegistry, trusted: Trusted
) -> None:
    location = f"s3://{BUCKET}/{GUID}/open.txt"
    put = value(fence.get_signed_url(location, "upload", 60, authz=[PROJECT], username="alice"))
    assert httpx.put(put, content=b"open").status_code == 200

    anonymous = {"user_id": "-1", "username": "anonymous", "client_id": ""}
    with pytest.raises(Forbidden):
        fence.get_signed_url(location, "download", 60, authz=[PROJECT], auth_info=anonymous)
    trusted.arborist.grant_anonymous("reader", PROJECT)
    get = value(
        fence.get_signed_url(location, "download", 60, authz=[PROJECT], auth_info=anonymous)
    )
    assert httpx.get(get).content == b"open"


def test_data_upload_flow_and_multipart(fence: FenceBucketRegistry, trusted: Trusted) -> None:
    """POST /data/upload without authz, then /data/multipart/*: file_upload on /data_file."""
    token = trusted.token("alice")
    url = value(fence.make_signed_url(GUID, "blank.txt", None, 600, BUCKET, token=token))
    assert httpx.put(url, content=b"blank").status_code == 200

    key = f"{GUID}/big.bin"
    upload_id = value(fence.init_multipart_upload(key, 600, BUCKET, token=token))
    part = value(
        fence.generate_aws_presigned_url_for_part(key, upload_id, 1, 600, BUCKET, token=token)
    )
    sent = httpx.put(part, content=b"Z" * 4096)
    assert sent.status_code == 200
    done = fence.complete_multipart_upload(
        key, upload_id, [{"Etag": sent.headers["etag"], "PartNumber": 1}], 600, BUCKET, token=token
    )
    assert done == Delegated(None)

    # The uploader reads their blank record back under Fence's legacy "uploader" rule.
    read = value(
        fence.get_signed_url(f"s3://{BUCKET}/{key}", "download", 60, legacy="uploader", token=token)
    )
    assert httpx.get(read).content == b"Z" * 4096


def test_the_users_token_failing_is_not_fences(
    fence: FenceBucketRegistry, trusted: Trusted
) -> None:
    location = f"s3://{BUCKET}/{GUID}/x"
    with pytest.raises(OnBehalfOfInvalid) as user_token:
        fence.get_signed_url(location, "download", 60, authz=[PROJECT], token="not-a-jwt")
    assert user_token.value.code == "on_behalf_of_invalid" and user_token.value.fence_status == 401

    with pytest.raises(Forbidden):
        fence.get_signed_url(
            location, "download", 60, authz=[PROJECT], token=trusted.token("mallory")
        )

    # A token for another audience is Fence's own problem: 401 from the registry.
    trusted.token_path.write_text(trusted.cluster.token(audience="another-service"))
    other = adapter(trusted)
    with other, pytest.raises(Unauthenticated) as fence_token:
        other.get_signed_url(
            location, "download", 60, authz=[PROJECT], token=trusted.token("alice")
        )
    assert fence_token.value.code == "unauthenticated"

    trusted.token_path.unlink()
    missing = adapter(trusted)
    with missing, pytest.raises(ConfigurationError):
        missing.get_signed_url(
            location, "download", 60, authz=[PROJECT], token=trusted.token("alice")
        )


def test_unregistered_buckets_take_fences_path(
    fence: FenceBucketRegistry, trusted: Trusted
) -> None:
    routed = fence.get_signed_url(
        "s3://yaml-only/k", "download", 60, authz=[PROJECT], token=trusted.token("alice")
    )
    assert routed == UseLegacy("unregistered", "yaml-only")
    # Resolve answers user tokens: the adapter sends the user's when it has one.
    token = trusted.token("alice")
    assert fence.get_bucket_region(BUCKET, token=token) == Delegated(None)
    assert fence.get_default_upload_bucket("ABC", token=token) == Delegated(BUCKET)


def served(trusted: Trusted, path: str) -> bool:
    """Whether the service serves ``path`` (from its own OpenAPI document)."""
    return path in httpx.get(trusted.url + "/openapi.json", timeout=10).json()["paths"]


def test_routes_the_service_may_not_serve_yet_keep_fences_path(
    fence: FenceBucketRegistry, trusted: Trusted
) -> None:
    """``/fence/buckets``, ``/objects/delete`` and ``unsigned`` are part of the contract; until
    the service has them, Fence's own path answers instead of an error."""
    token = trusted.token("alice")
    legacy = {"S3_BUCKETS": {"yaml-bucket": {"region": "eu-west-1"}}, "GS_BUCKETS": {}}
    listing = fence.get_bucket_region_info(legacy, token=token)
    assert listing["S3_BUCKETS"]["yaml-bucket"] == {"region": "eu-west-1"}
    if served(trusted, "/fence/buckets"):
        assert BUCKET in listing["S3_BUCKETS"]
    else:
        assert listing == legacy

    deleted = fence.delete_data_file(BUCKET, GUID, authz=[PROJECT], token=token)
    if served(trusted, "/objects/delete"):
        assert isinstance(deleted, Delegated)
    else:
        assert deleted == UseLegacy("unsupported")

    plain = fence.get_signed_url(
        f"s3://{BUCKET}/{GUID}/x",
        "download",
        60,
        authz=[PROJECT],
        force_signed_url=False,
        token=token,
    )
    schema = httpx.get(trusted.url + "/openapi.json", timeout=10).json()
    if "unsigned" in schema["components"]["schemas"]["PresignRequest"]["properties"]:
        assert isinstance(plain, Delegated)
    else:
        assert plain == UseLegacy("unsupported", BUCKET)
