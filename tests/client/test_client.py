"""The Fence client against the running service over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from bucket_registry_client import (
    AsyncBucketRegistryClient,
    BucketRegistryClient,
    Forbidden,
    Invalid,
    NotFound,
    PresignedUrl,
    RegistryClientError,
    ResolvedBucket,
    Unauthorized,
    Unavailable,
    UseYamlFallback,
    dynamic_buckets_enabled,
)

from tests.client.conftest import BUCKET, KEY_ID, PROJECT, SECRET, Commons
from tests.support.live import LiveServer
from tests.support.net import free_port


def client_for(url: str, **options: object) -> BucketRegistryClient:
    options.setdefault("enabled", True)
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
        with pytest.raises(NotFound) as missing:
            client.default_upload_bucket(None, commons.token("alice"))
    assert missing.value.status == 404


def test_errors_are_typed(commons: Commons) -> None:
    with client_for(commons.url, retries=0) as client:
        with pytest.raises(NotFound) as not_found:
            client.resolve("no-such-bucket", commons.token("alice"))
        assert not_found.value.code == "bucket_not_found"

        with pytest.raises(Forbidden) as denied:
            client.presign(BUCKET, "incoming/x", "read", commons.token("mallory"))
        assert denied.value.code == "forbidden"

        with pytest.raises(Invalid):
            client.presign(BUCKET, "../escape", "read", commons.token("alice"))

        with pytest.raises(Unauthorized):
            client.resolve(BUCKET, "not-a-token")

        assert commons.admin("DELETE", f"/admin/buckets/{BUCKET}").status_code == 200
        with pytest.raises(Forbidden) as suspended:
            client.presign(BUCKET, "incoming/x", "read", commons.token("alice"))
        assert suspended.value.code == "bucket_suspended"
    assert all(isinstance(e.value, RegistryClientError) for e in (not_found, denied, suspended))
    assert SECRET not in str(denied.value) + str(suspended.value)


def test_503_is_retried_with_backoff_then_unavailable(commons: Commons) -> None:
    token = commons.token("alice")
    commons.arborist.fail_with = 500
    waits: list[float] = []
    with client_for(commons.url, retries=2, sleep=waits.append) as client:
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


def test_switched_off_it_never_calls_and_says_use_the_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with BucketRegistryClient(unreachable, enabled=False) as client:
        with pytest.raises(UseYamlFallback) as fallback:
            client.presign(BUCKET, "k", "read", "token")
    assert fallback.value.reason == "disabled"
    assert not isinstance(fallback.value, RegistryClientError)

    monkeypatch.delenv("FENCE_ENABLE_DYNAMIC_BUCKETS", raising=False)
    assert dynamic_buckets_enabled() is False
    monkeypatch.setenv("FENCE_ENABLE_DYNAMIC_BUCKETS", "false")
    with BucketRegistryClient(unreachable) as client, pytest.raises(UseYamlFallback):
        client.resolve(BUCKET, "token")
    monkeypatch.setenv("FENCE_ENABLE_DYNAMIC_BUCKETS", "True")
    with BucketRegistryClient(unreachable, retries=0) as client, pytest.raises(Unavailable):
        client.resolve(BUCKET, "token")


def test_an_empty_registry_tells_fence_to_keep_its_yaml(live: LiveServer, issuer) -> None:  # type: ignore[no-untyped-def]
    token = issuer.token("alice")
    with client_for(live.url) as client:
        for call in (
            lambda: client.resolve(BUCKET, token),
            lambda: client.default_upload_bucket("ABC", token),
            lambda: client.presign(BUCKET, "k", "read", token),
        ):
            with pytest.raises(UseYamlFallback) as fallback:
                call()
            assert fallback.value.reason == "registry_empty"


async def test_async_client(commons: Commons) -> None:
    token = commons.token("alice")
    async with AsyncBucketRegistryClient(commons.url, enabled=True, backoff=0.01) as client:
        assert (await client.resolve(BUCKET, token)).name == BUCKET
        put = await client.presign(BUCKET, "incoming/async.txt", "write", token)
        async with httpx.AsyncClient() as http:
            assert (await http.put(put.url, content=b"async")).status_code == 200
        with pytest.raises(NotFound):
            await client.resolve("no-such-bucket", token)
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
        }
    )
    assert resolved.public is True
