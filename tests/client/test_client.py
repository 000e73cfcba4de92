"""The client against the running service over real HTTP, forwarding the user's token (the
mode the service serves today; service-token calls are in test_service_token.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from bucket_registry_client import (
    AsyncBucketRegistryClient,
    BucketNotFound,
    BucketRegistryClient,
    BucketSuspended,
    ConfigurationError,
    Forbidden,
    Invalid,
    NotFound,
    OnBehalfOf,
    PresignedUrl,
    RegistryClientError,
    RegistryEmpty,
    ResolvedBucket,
    Unauthenticated,
    Unavailable,
)

from tests.client.conftest import BUCKET, KEY_ID, PROJECT, SECRET, Commons
from tests.support.live import LiveServer
from tests.support.net import free_port


def client_for(url: str, **options: object) -> BucketRegistryClient:
    options.setdefault("backoff", 0.01)
    options.setdefault("max_backoff", 0.02)
    return BucketRegistryClient(url, **options)  # type: ignore[arg-type]


def test_resolve_returns_metadata_and_never_credentials(commons: Commons) -> None:
    with client_for(commons.url) as client:
        bucket = client.resolve(BUCKET, commons.token("alice"))

    assert bucket.name == BUCKET and bucket.provider == "minio" and bucket.is_active
    assert bucket.endpoint == commons.gateway.url
    assert bucket.data_upload_allowed and bucket.is_default_upload
    assert [(b.prefix, b.resource_path) for b in bucket.bindings] == [("", PROJECT)]
    assert bucket.bindings[0].allowed_ops["write"] is True
    assert bucket.billing_projects == []
    assert not hasattr(bucket, "secret_ref")


def test_presigned_urls_move_bytes(commons: Commons) -> None:
    token = commons.token("alice")
    with client_for(commons.url) as client:
        put = client.presign(BUCKET, "incoming/sample.vcf", "write", token, expires_in=600)
        assert put.method == "PUT"
        assert 0 < (put.expires_at - datetime.now(UTC)).total_seconds() <= 600
        assert httpx.put(put.url, content=b"##fileformat=VCFv4.2\n").status_code == 200

        get = client.presign(BUCKET, "incoming/sample.vcf", "read", f"Bearer {token}")
        assert httpx.get(get.url).content == b"##fileformat=VCFv4.2\n"
    # Every byte went through a signature made with the registry's static key.
    assert commons.gateway.seen_access_keys == {KEY_ID}


def test_multipart_upload_through_part_urls(commons: Commons) -> None:
    token = commons.token("alice")
    with client_for(commons.url) as client:
        upload_id = client.multipart_init(BUCKET, "big/genome.bam", token)
        part = client.presign_part(BUCKET, "big/genome.bam", upload_id, 1, token)
        sent = httpx.put(part.url, content=b"A" * 1024)
        assert sent.status_code == 200
        # Fence's own shape for parts.
        client.multipart_complete(
            BUCKET,
            "big/genome.bam",
            upload_id,
            [{"PartNumber": 1, "Etag": sent.headers["etag"]}],
            token,
        )
        read = client.presign(BUCKET, "big/genome.bam", "read", token)
        assert httpx.get(read.url).content == b"A" * 1024

        aborted = client.multipart_init(BUCKET, "big/aborted.bam", token)
        client.multipart_abort(BUCKET, "big/aborted.bam", aborted, token)


def test_default_upload_bucket(commons: Commons) -> None:
    with client_for(commons.url) as client:
        assert client.default_upload_bucket("ABC", commons.token("alice")).name == BUCKET
        with pytest.raises(BucketNotFound) as missing:
            client.default_upload_bucket(None, commons.token("alice"))
    assert missing.value.status == 404 and missing.value.fence_status == 404


def test_errors_are_typed(commons: Commons) -> None:
    with client_for(commons.url, retries=0) as client:
        with pytest.raises(BucketNotFound) as not_found:
            client.resolve("no-such-bucket", commons.token("alice"))
        assert not_found.value.code == "bucket_not_found"
        assert not isinstance(not_found.value, RegistryEmpty)

        with pytest.raises(Forbidden) as denied:
            client.presign(BUCKET, "incoming/x", "read", commons.token("mallory"))
        assert denied.value.code == "forbidden"

        with pytest.raises(Invalid) as invalid:
            client.presign(BUCKET, "../escape", "read", commons.token("alice"))
        assert invalid.value.status == 400 and invalid.value.fence_status == 400

        with pytest.raises(Unauthenticated) as unauthenticated:
            client.resolve(BUCKET, "not-a-token")
        assert unauthenticated.value.code == "unauthenticated"

        assert commons.admin("DELETE", f"/admin/buckets/{BUCKET}").status_code == 200
        with pytest.raises(BucketSuspended) as suspended:
            client.presign(BUCKET, "incoming/x", "read", commons.token("alice"))
        assert suspended.value.code == "bucket_suspended"
    assert isinstance(suspended.value, Forbidden) and suspended.value.fence_status == 403
    assert all(isinstance(e.value, RegistryClientError) for e in (not_found, denied, suspended))
    assert SECRET not in str(denied.value) + str(suspended.value)


def test_503_is_retried_with_backoff_then_unavailable(commons: Commons) -> None:
    token = commons.token("alice")
    commons.arborist.fail_with = 500
    waits: list[float] = []
    with client_for(commons.url, retries=2, sleep=waits.append, max_backoff=0.02) as client:
        with pytest.raises(Unavailable) as down:
            client.presign(BUCKET, "incoming/x", "read", token)
    assert down.value.status == 503 and down.value.code == "dependency_unavailable"
    # Three attempts: two waits, growing, capped by max_backoff (the registry asks for 1 s).
    assert waits == [0.02, 0.02]


def test_a_transient_503_is_absorbed(commons: Commons) -> None:
    commons.arborist.fail_with = 500

    def recover(_seconds: float) -> None:
        commons.arborist.fail_with = None

    with client_for(commons.url, retries=2, sleep=recover) as client:
        assert client.presign(BUCKET, "incoming/x", "read", commons.token("alice")).url


def test_an_unreachable_registry_is_unavailable() -> None:
    with client_for(f"http://127.0.0.1:{free_port()}", retries=1, timeout=1) as client:
        with pytest.raises(Unavailable) as down:
            client.resolve(BUCKET, "token")
    assert down.value.status is None and "did not answer" in down.value.message
    assert down.value.code == "unreachable"


def test_user_project_and_resumable_reach_the_registry(commons: Commons) -> None:
    """Both are gcp-only: the service refusing them for an S3 bucket proves they were sent."""
    token = commons.token("alice")
    with client_for(commons.url) as client:
        with pytest.raises(Invalid) as billed:
            client.presign(BUCKET, "incoming/x", "read", token, user_project="billing-proj-1")
        with pytest.raises(Invalid) as resumable:
            client.presign(BUCKET, "incoming/x", "write", token, resumable=True)
    assert "user_project" in billed.value.message
    assert "resumable" in resumable.value.message


def test_arguments_are_refused_before_sending() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with client_for(unreachable, retries=0) as client:
        for call in (
            lambda: client.presign(BUCKET, "k", "list", "t"),
            lambda: client.presign(BUCKET, "", "read", "t"),
            lambda: client.presign(BUCKET, "k", "read", "t", expires_in=0),
            lambda: client.presign_part(BUCKET, "k", "u", 0, "t"),
            lambda: client.multipart_complete(BUCKET, "k", "u", [{"PartNumber": 1}], "t"),
            lambda: client.multipart_complete(BUCKET, "k", "u", [], "t"),
            lambda: client.delete_objects(BUCKET, "t"),
            lambda: client.resolve("", "t"),
        ):
            with pytest.raises(Invalid) as refused:
                call()
            assert refused.value.status is None and refused.value.code == "invalid_argument"


def test_a_missing_user_token_is_a_configuration_error() -> None:
    """Forwarding needs the user's token: a username or anonymous caller is Fence's
    deployment missing its service token, a typed error Fence maps to 503, not a 500."""
    unreachable = f"http://127.0.0.1:{free_port()}"
    with client_for(unreachable, retries=0) as client:
        for user in (OnBehalfOf.user("alice"), OnBehalfOf.nobody()):
            with pytest.raises(ConfigurationError) as missing:
                client.presign(BUCKET, "k", "read", user)
            assert missing.value.code == "user_token_missing"
            assert missing.value.fence_status == 503
        with pytest.raises(ConfigurationError):
            client.resolve(BUCKET)
    with pytest.raises(ConfigurationError):
        BucketRegistryClient("registry:8000")
    with pytest.raises(ConfigurationError):
        BucketRegistryClient("http://registry", retries=-1)
    with pytest.raises(ConfigurationError):
        BucketRegistryClient("http://registry", timeout=0)


def test_an_empty_registry_is_its_own_error(live: LiveServer, issuer) -> None:  # type: ignore[no-untyped-def]
    token = issuer.token("alice")
    with client_for(live.url) as client:
        for call in (
            lambda: client.resolve(BUCKET, token),
            lambda: client.default_upload_bucket("ABC", token),
            lambda: client.presign(BUCKET, "k", "read", token),
        ):
            with pytest.raises(RegistryEmpty) as empty:
                call()
            assert isinstance(empty.value, BucketNotFound) and isinstance(empty.value, NotFound)
            assert empty.value.details == {"registry_empty": True}


async def test_async_client(commons: Commons) -> None:
    token = commons.token("alice")
    async with AsyncBucketRegistryClient(commons.url, backoff=0.01) as client:
        assert (await client.resolve(BUCKET, token)).name == BUCKET
        put = await client.presign(BUCKET, "incoming/async.txt", "write", token)
        async with httpx.AsyncClient() as http:
            assert (await http.put(put.url, content=b"async")).status_code == 200
        with pytest.raises(BucketNotFound):
            await client.resolve("no-such-bucket", token)
        with pytest.raises(Forbidden):
            await client.presign(BUCKET, "incoming/x", "read", commons.token("mallory"))
        upload_id = await client.multipart_init(BUCKET, "incoming/async.bin", token)
        await client.multipart_abort(BUCKET, "incoming/async.bin", upload_id, token)


def test_an_unsigned_url_has_no_expiry_and_public_is_read() -> None:
    unsigned = PresignedUrl.from_json(
        {"url": "https://b.s3.amazonaws.com/k", "method": "GET", "expires_at": None}
    )
    assert unsigned.expires_at is None and unsigned.headers == {}
    resolved = ResolvedBucket.from_json(
        {
            "name": "b",
            "provider": "aws",
            "auth_mode": "workload_identity",
            "status": "active",
            "public": True,
            "billing_projects": ["gen3-billing-1"],
        }
    )
    assert resolved.public is True and resolved.billing_projects == ["gen3-billing-1"]
