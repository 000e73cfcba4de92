"""Static-key buckets end to end: every request goes through the SigV4-checking gateway."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.registry.records import Op, Provider
from app.storage.service import StorageService
from tests.storage.conftest import STATIC_KEY_ID, make_bucket
from tests.support.s3_gateway import S3Gateway


def gateway_bucket(gateway: S3Gateway, **overrides: Any) -> Any:
    return make_bucket(provider=Provider.MINIO, endpoint=gateway.url, **overrides)


async def test_put_then_get_returns_the_same_bytes(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    bucket = gateway_bucket(gateway)
    key = "incoming/ünï cødé+%~.bin"
    payload = bytes(range(256)) * 64

    put = await service.presign(bucket, key, Op.WRITE, 600)
    assert put.method == "PUT"
    async with httpx.AsyncClient() as http:
        assert (await http.put(put.url, content=payload)).status_code == 200
        get = await service.presign(bucket, key, Op.READ, 600)
        answer = await http.get(get.url)
    assert answer.status_code == 200
    assert answer.content == payload
    assert gateway.rejections == []
    assert [seen.access_key_id for seen in gateway.seen] == [STATIC_KEY_ID, STATIC_KEY_ID]
    assert moto_s3.get_object(Bucket="data-bucket", Key=key)["Body"].read() == payload


async def test_delete_url_removes_the_object(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    moto_s3.put_object(Bucket="data-bucket", Key="old.txt", Body=b"x")
    delete = await service.presign(gateway_bucket(gateway), "old.txt", Op.DELETE)
    assert delete.method == "DELETE"
    async with httpx.AsyncClient() as http:
        assert (await http.delete(delete.url)).status_code == 204
    assert moto_s3.list_objects_v2(Bucket="data-bucket").get("KeyCount") == 0


async def test_tampered_signature_is_refused(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    moto_s3.put_object(Bucket="data-bucket", Key="a.txt", Body=b"secret data")
    url = (await service.presign(gateway_bucket(gateway), "a.txt", Op.READ)).url
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = "0" if signature[-1] != "0" else "1"
    async with httpx.AsyncClient() as http:
        tampered = await http.get(url[:-1] + flipped)
        other_key = await http.get(url.replace("/a.txt?", "/b.txt?"))
        longer = await http.get(url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"))
    for answer in (tampered, other_key, longer):
        assert answer.status_code == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in answer.content
    assert gateway.seen == []


async def test_expired_url_is_refused(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    moto_s3.put_object(Bucket="data-bucket", Key="a.txt", Body=b"data")
    presigned = await service.presign(gateway_bucket(gateway), "a.txt", Op.READ, 60)
    async with httpx.AsyncClient() as http:
        assert (await http.get(presigned.url)).status_code == 200
        gateway.clock_offset = 61
        answer = await http.get(presigned.url)
    assert answer.status_code == 403
    assert b"Request has expired" in answer.content


async def test_unknown_key_is_refused(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    gateway.keyring.clear()
    url = (await service.presign(gateway_bucket(gateway), "a.txt", Op.READ)).url
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
        anonymous = await http.get(gateway.url + "/data-bucket/a.txt")
    assert answer.status_code == 403
    assert b"<Code>InvalidAccessKeyId</Code>" in answer.content
    assert anonymous.status_code == 403


async def test_head_and_list_use_the_same_credentials(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    signer = await service.signer_for(gateway_bucket(gateway), min_lifetime=60)
    await signer.head_bucket()
    await signer.list_one()
    assert [(seen.method, seen.query_signed) for seen in gateway.seen] == [
        ("HEAD", False),
        ("GET", False),
    ]
    assert gateway.seen_access_keys == {STATIC_KEY_ID}


async def test_store_errors_become_dependency_errors(
    service: StorageService, gateway: S3Gateway
) -> None:
    from app.errors import DependencyUnavailable

    signer = await service.signer_for(gateway_bucket(gateway), min_lifetime=60)
    with pytest.raises(DependencyUnavailable) as caught:
        await signer.head_bucket()  # no such bucket in moto
    assert caught.value.dependency == "storage"
    assert STATIC_KEY_ID not in caught.value.message
