"""The Fence adapter, called with the arguments Fence has at each call site.

Call site in Fence (fence/blueprints/data/) → adapter call (``fence`` is a FenceBucketRegistry;
``token=get_jwt()``, ``auth_info`` from ``_get_auth_info_for_id_or_from_request``):

=====================================================  =========================================
indexd.py ``IndexedFile._get_signed_url`` →            ``fence.get_signed_url(location.url,
``location.get_signed_url(action, expires_in,          action, expires_in, authz=record["authz"],
force_signed_url, r_pays_project, authorized_user)``   force_signed_url=…, r_pays_project=…,
(``/data/download/<guid>``, ``/data/upload/<guid>``)   token=…, auth_info=…)``; a record without
                                                       authz: ``legacy="uploader"|"acl"``; a
                                                       passport user: ``username=…``
indexd.py ``BlankIndex.make_signed_url(file_name,      ``fence.make_signed_url(guid, file_name,
protocol, expires_in, bucket)`` (``/data/upload``)     protocol, expires_in, bucket,
                                                       authz=params.get("authz"), token=…)``
indexd.py ``BlankIndex.init_multipart_upload(key,      ``fence.init_multipart_upload(key,
expires_in, bucket)`` (``/data/multipart/init``)       expires_in, bucket, token=…)``
indexd.py ``BlankIndex.                                ``fence.generate_aws_presigned_url_for_part(
generate_aws_presigned_url_for_part(key, uploadId,     key, uploadId, partNumber, expires_in,
partNumber, expires_in, bucket)``                      bucket, token=…)``
(``/data/multipart/upload``)
indexd.py ``BlankIndex.complete_multipart_upload(      ``fence.complete_multipart_upload(key,
key, uploadId, parts, expires_in, bucket)``            uploadId, parts, expires_in, bucket,
(``/data/multipart/complete``)                         token=…)``
``config["DATA_UPLOAD_BUCKET"]`` (no ``bucket``        ``fence.get_default_upload_bucket(
given)                                                 owner_project, token=…)``; ``bucket=None``
                                                       above does the same
indexd.py ``S3IndexedFileLocation.get_bucket_region``  ``fence.get_bucket_region(bucket, token=…)``
blueprint.py ``get_bucket_region_info``                ``fence.get_bucket_region_info(legacy=
(``GET /data/buckets``)                                <Fence's own answer>)``
indexd.py ``S3IndexedFileLocation.delete(bucket,       ``fence.delete_data_file(bucket, prefix,
file_id)`` → boto_manager.py ``delete_data_file(       authz=record["authz"], token=…)``
bucket, prefix)``
=====================================================  =========================================

Against the real service (it forwards the user's token today) wherever the route exists; the
service-token forms against ``ContractStub`` (tests/client/contract_stub.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bucket_registry_client import (
    DISABLED,
    PROVIDER,
    REGISTRY_EMPTY,
    UNREGISTERED,
    UNSUPPORTED,
    BucketRegistryClient,
    BucketSuspended,
    ConfigurationError,
    Delegated,
    Forbidden,
    Invalid,
    LegacyFallback,
    UseLegacy,
)
from bucket_registry_client.fence import FenceBucketRegistry, fence_caller, record_grant

from tests.client.conftest import BUCKET, PROJECT, Commons
from tests.client.contract_stub import ContractStub
from tests.support.live import LiveServer
from tests.support.net import free_port

GUID = "dg.TEST/7b3d2a1c-0000-4000-8000-000000000001"
ALICE_INFO = {"user_id": 7, "username": "alice", "client_id": ""}


def forwarding(url: str, **fallback: object) -> FenceBucketRegistry:
    fallback.setdefault("enabled", True)
    client = BucketRegistryClient(url, backoff=0.01, max_backoff=0.02)
    return FenceBucketRegistry(client, LegacyFallback(**fallback))  # type: ignore[arg-type]


def delegated(routed: object) -> object:
    assert isinstance(routed, Delegated), routed
    return routed.value


# -- against the real service -------------------------------------------------------------------


def test_download_and_upload_urls_for_an_indexd_location(commons: Commons) -> None:
    token = commons.token("alice")
    location = f"s3://{BUCKET}/{GUID}/sample.vcf"
    with forwarding(commons.url) as fence:
        # /data/upload/<guid>: IndexedFile._get_signed_url(protocol, "upload", expires_in, ...)
        put = delegated(
            fence.get_signed_url(
                location, "upload", 900, authz=[PROJECT], token=token, auth_info=ALICE_INFO
            )
        )
        assert isinstance(put, str)
        assert httpx.put(put, content=b"##fileformat=VCFv4.2\n").status_code == 200

        # /data/download/<guid>: location.get_signed_url("download", expires_in,
        # force_signed_url=True, r_pays_project=None, authorized_user=None)
        get = delegated(
            fence.get_signed_url(
                location,
                "download",
                3600,
                authz=[PROJECT],
                force_signed_url=True,
                r_pays_project=None,
                token=f"Bearer {token}",
                auth_info=ALICE_INFO,
            )
        )
        assert isinstance(get, str) and httpx.get(get).content == b"##fileformat=VCFv4.2\n"


def test_blank_index_upload_and_multipart(commons: Commons) -> None:
    token = commons.token("alice")
    with forwarding(commons.url) as fence:
        # POST /data/upload: BlankIndex.make_signed_url(file_name, protocol, expires_in, bucket)
        url = delegated(
            fence.make_signed_url(GUID, "a.txt", None, 600, BUCKET, authz=[PROJECT], token=token)
        )
        assert isinstance(url, str) and httpx.put(url, content=b"blank").status_code == 200

        # POST /data/multipart/init, /upload, /complete with Fence's key and parts shapes.
        key = f"{GUID}/big.bam"
        upload_id = delegated(fence.init_multipart_upload(key, 600, BUCKET, token=token))
        assert isinstance(upload_id, str)
        part_url = delegated(
            fence.generate_aws_presigned_url_for_part(key, upload_id, 1, 600, BUCKET, token=token)
        )
        assert isinstance(part_url, str)
        sent = httpx.put(part_url, content=b"B" * 2048)
        assert sent.status_code == 200
        parts = [{"Etag": sent.headers["etag"], "PartNumber": 1}]
        done = fence.complete_multipart_upload(key, upload_id, parts, 600, BUCKET, token=token)
        assert done == Delegated(None)

        read = delegated(
            fence.get_signed_url(
                f"s3://{BUCKET}/{key}", "download", 60, authz=[PROJECT], token=token
            )
        )
        assert isinstance(read, str) and httpx.get(read).content == b"B" * 2048


def test_default_upload_bucket_and_region(commons: Commons) -> None:
    token = commons.token("alice")
    with forwarding(commons.url) as fence:
        assert fence.get_default_upload_bucket("ABC", token=token) == Delegated(BUCKET)
        # No commons-wide default: Fence keeps its DATA_UPLOAD_BUCKET.
        assert fence.get_default_upload_bucket(None, token=token) == UseLegacy(UNREGISTERED)
        assert fence.make_signed_url(GUID, "f", None, 60, None, token=token) == UseLegacy(
            UNREGISTERED
        )
        assert fence.get_bucket_region(BUCKET, token=token) == Delegated(None)
        assert fence.get_bucket_region("yaml-only", token=token) == UseLegacy(
            UNREGISTERED, "yaml-only"
        )


def test_per_bucket_and_per_provider_fallback(commons: Commons) -> None:
    token = commons.token("alice")
    with forwarding(commons.url) as fence:
        # A bucket the registry does not know takes Fence's path; others stay delegated.
        assert fence.get_signed_url(
            "s3://yaml-only-bucket/k", "download", 60, authz=[PROJECT], token=token
        ) == UseLegacy(UNREGISTERED, "yaml-only-bucket")
        assert isinstance(
            fence.get_signed_url(f"s3://{BUCKET}/k", "download", 60, authz=[PROJECT], token=token),
            Delegated,
        )
        # gs:// stays with Fence's proxy groups, az:// with Fence, without a registry call.
        assert fence.get_signed_url(
            "gs://gs-bucket/k", "download", 60, authz=[PROJECT], r_pays_project="p", token=token
        ) == UseLegacy(PROVIDER, "gs-bucket")
        assert fence.make_signed_url(GUID, "f", "az", 60, token=token) == UseLegacy(PROVIDER)
        # Anonymous downloads need a service token: Fence's own path, not an error.
        anonymous = {"user_id": "-1", "username": "anonymous", "client_id": ""}
        assert fence.get_signed_url(
            f"s3://{BUCKET}/k", "download", 60, legacy="acl", auth_info=anonymous
        ) == UseLegacy(UNSUPPORTED, BUCKET)


def test_the_registry_decision_stands(commons: Commons) -> None:
    with forwarding(commons.url) as fence:
        with pytest.raises(Forbidden):
            fence.get_signed_url(
                f"s3://{BUCKET}/k", "download", 60, authz=[PROJECT], token=commons.token("mallory")
            )
        assert commons.admin("DELETE", f"/admin/buckets/{BUCKET}").status_code == 200
        # Suspension is a control: never a reason to sign through Fence's YAML instead.
        with pytest.raises(BucketSuspended) as suspended:
            fence.get_signed_url(
                f"s3://{BUCKET}/k", "download", 60, authz=[PROJECT], token=commons.token("alice")
            )
    assert suspended.value.fence_status == 403


def test_an_empty_registry_and_the_switch(live: LiveServer, issuer) -> None:  # type: ignore[no-untyped-def]
    token = issuer.token("alice")
    with forwarding(live.url) as fence:
        assert fence.get_signed_url(
            f"s3://{BUCKET}/k", "download", 60, authz=[PROJECT], token=token
        ) == UseLegacy(REGISTRY_EMPTY, BUCKET)
        assert fence.init_multipart_upload("k", 60, None, token=token) == UseLegacy(REGISTRY_EMPTY)

    with forwarding(f"http://127.0.0.1:{free_port()}", enabled=False) as fence:
        assert fence.get_signed_url(
            f"s3://{BUCKET}/k", "download", 60, authz=[PROJECT], token=token
        ) == UseLegacy(DISABLED, BUCKET)
        assert fence.get_default_upload_bucket(token=token) == UseLegacy(DISABLED)
        legacy = {"S3_BUCKETS": {"yaml-bucket": {"region": "us-east-1"}}, "GS_BUCKETS": {}}
        assert fence.get_bucket_region_info(legacy, token=token) == legacy


def test_arguments_fence_could_get_wrong() -> None:
    with forwarding(f"http://127.0.0.1:{free_port()}") as fence:
        for call in (
            lambda: fence.get_signed_url("s3://b/k", "list", 60, authz=["/a"], token="t"),
            lambda: fence.get_signed_url("not a url", "download", 60, authz=["/a"], token="t"),
            lambda: fence.get_signed_url("s3://b/k", "download", 60, token="t"),
            lambda: fence.get_signed_url("ftp://b/k", "download", 60, authz=["/a"], token="t"),
        ):
            with pytest.raises(Invalid):
                call()


# -- service-token forms, against the contract stub ---------------------------------------------


@pytest.fixture
def stub() -> Iterator[ContractStub]:
    registry = ContractStub().start()
    registry.add_bucket("data-bucket")
    registry.add_bucket("upload-bucket")
    registry.default_upload = "upload-bucket"
    yield registry
    registry.stop()


@pytest.fixture
def fence(stub: ContractStub, tmp_path: Path) -> Iterator[FenceBucketRegistry]:
    token = tmp_path / "token"
    token.write_text(stub.service_token)
    config = {
        "BUCKET_REGISTRY_URL": stub.url,
        "BUCKET_REGISTRY_TOKEN_PATH": str(token),
        "BUCKET_REGISTRY_TIMEOUT": "1.5",
        "BUCKET_REGISTRY_RETRIES": 0,
        "FENCE_ENABLE_DYNAMIC_BUCKETS": True,
        "BUCKET_REGISTRY_LEGACY_PROVIDERS": "azure",
    }
    adapter = FenceBucketRegistry.from_config(config)
    assert adapter.client.timeout == 1.5 and adapter.client.retries == 0
    yield adapter
    adapter.close()


def test_service_token_download_carries_the_record_and_the_user(
    fence: FenceBucketRegistry, stub: ContractStub
) -> None:
    record = {"did": GUID, "authz": ["/programs/A/projects/B"], "urls": ["s3://data-bucket/k"]}
    url = fence.get_signed_url(
        record["urls"][0],
        "download",
        300,
        authz=record["authz"],
        token="alice-jwt",
        auth_info=ALICE_INFO,
    )
    assert isinstance(url, Delegated)
    body = stub.last("/presign").body
    assert body == {
        "bucket": "data-bucket",
        "key": "k",
        "op": "read",
        "expires_in": 300,
        "on_behalf_of": {"token": "alice-jwt"},
        "authz": ["/programs/A/projects/B"],
        "method": "read-storage",
        "audit": {"user_id": "7", "username": "alice"},
    }


def test_service_token_legacy_unsigned_passport_and_requester_pays(
    fence: FenceBucketRegistry, stub: ContractStub
) -> None:
    # A record with only an uploader, and no_force_sign=true: Fence decided, the URL is plain.
    record = {"did": GUID, "uploader": "alice", "urls": ["s3://data-bucket/k"]}
    grant = record_grant(record, "download", force_signed_url=False)
    assert grant.legacy == "uploader" and grant.unsigned
    fence.get_signed_url(
        "s3://data-bucket/k",
        "download",
        60,
        legacy="uploader",
        force_signed_url=False,
        auth_info=ALICE_INFO,
    )
    body = stub.last("/presign").body
    assert body["legacy"] == "uploader" and body["authz"] == [] and body["unsigned"] is True
    assert body["on_behalf_of"] == {"username": "alice"}

    # A GA4GH passport's user: Fence knows only the username.
    fence.get_signed_url(
        "s3://data-bucket/k", "download", 60, authz=["/a"], username="passport-user"
    )
    assert stub.last("/presign").body["on_behalf_of"] == {"username": "passport-user"}

    # gcp is not kept legacy in this configuration: r_pays_project becomes user_project.
    stub.add_bucket("gs-bucket", provider="gcp")
    fence.get_signed_url(
        "gs://gs-bucket/k",
        "download",
        60,
        authz=["/a"],
        r_pays_project="billing-proj-1",
        token="alice-jwt",
    )
    assert stub.last("/presign").body["user_project"] == "billing-proj-1"

    # Anonymous public data.
    anonymous = {"user_id": "-1", "username": "anonymous", "client_id": ""}
    fence.get_signed_url("s3://data-bucket/k", "download", 60, legacy="acl", auth_info=anonymous)
    assert stub.last("/presign").body["on_behalf_of"] == {"anonymous": True}


def test_service_token_uploads(fence: FenceBucketRegistry, stub: ContractStub) -> None:
    assert isinstance(fence.make_signed_url(GUID, "f.txt", None, 60, token="alice-jwt"), Delegated)
    body = stub.last("/presign").body
    # No bucket given: the registry's default upload bucket (Fence's DATA_UPLOAD_BUCKET).
    assert body["bucket"] == "upload-bucket" and body["key"] == f"{GUID}/f.txt"
    assert body["authz"] == ["/data_file"] and body["method"] == "file_upload"

    fence.make_signed_url(GUID, "f.txt", None, 60, "data-bucket", authz=["/a"], token="alice-jwt")
    body = stub.last("/presign").body
    assert body["bucket"] == "data-bucket" and body["method"] == ["create", "write-storage"]

    assert fence.init_multipart_upload(f"{GUID}/f", 60, token="alice-jwt") == Delegated("upload-1")
    assert stub.last("/multipart/init").body["method"] == "file_upload"
    part = fence.generate_aws_presigned_url_for_part(
        f"{GUID}/f", "upload-1", 2, 60, token="alice-jwt"
    )
    assert isinstance(part, Delegated) and stub.last("/multipart/presign").body["part_number"] == 2
    fence.complete_multipart_upload(
        f"{GUID}/f", "upload-1", [{"Etag": "e1", "PartNumber": 1}], 60, token="alice-jwt"
    )
    assert stub.last("/multipart/complete").body["parts"] == [{"part_number": 1, "etag": "e1"}]


def test_service_token_buckets_listing_and_delete(
    fence: FenceBucketRegistry, stub: ContractStub
) -> None:
    legacy = {
        "S3_BUCKETS": {"yaml-bucket": {"region": "eu-west-1"}, "data-bucket": {"region": "old"}},
        "GS_BUCKETS": {},
    }
    merged = fence.get_bucket_region_info(legacy)
    assert merged["S3_BUCKETS"]["yaml-bucket"] == {"region": "eu-west-1"}
    assert merged["S3_BUCKETS"]["data-bucket"]["region"] == "us-east-1"
    assert set(merged["S3_BUCKETS"]) == {"yaml-bucket", "data-bucket", "upload-bucket"}

    deleted = fence.delete_data_file("data-bucket", GUID, authz=["/a"], token="alice-jwt")
    assert deleted == Delegated(1)
    body = stub.last("/objects/delete").body
    assert body["key"] == GUID and body["method"] == "delete" and body["authz"] == ["/a"]


def test_from_config_needs_a_url_when_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FENCE_ENABLE_DYNAMIC_BUCKETS", raising=False)
    with pytest.raises(ConfigurationError):
        FenceBucketRegistry.from_config({"FENCE_ENABLE_DYNAMIC_BUCKETS": "true"})
    with pytest.raises(ConfigurationError):
        FenceBucketRegistry.from_config(
            {"BUCKET_REGISTRY_URL": "http://r", "BUCKET_REGISTRY_TIMEOUT": "soon"}
        )
    off = FenceBucketRegistry.from_config({})
    assert off.fallback.enabled is False
    assert off.get_signed_url("s3://b/k", "download", 60, authz=["/a"], token="t") == UseLegacy(
        DISABLED, "b"
    )
    monkeypatch.setenv("FENCE_ENABLE_DYNAMIC_BUCKETS", "on")
    on = FenceBucketRegistry.from_config({"BUCKET_REGISTRY_URL": "http://r"})
    assert on.fallback.enabled and on.fallback.legacy_providers == {"gcp", "azure"}
    off.close()
    on.close()


def test_fence_caller() -> None:
    assert fence_caller("Bearer jwt").on_behalf_of.to_json() == {"token": "jwt"}
    assert fence_caller(None, ALICE_INFO).on_behalf_of.to_json() == {"username": "alice"}
    assert fence_caller(None, {"user_id": "-1", "username": "anonymous"}).on_behalf_of.anonymous
    assert fence_caller().on_behalf_of.anonymous and fence_caller().audit is None
