"""Multipart uploads: SDK calls for create/complete/abort, presigned URLs for the parts."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from app.errors import InvalidInput
from app.registry.records import AuthMode, Op, Provider
from app.storage.service import StorageService
from tests.storage.conftest import ROLE_ARN, STATIC_KEY_ID, make_bucket
from tests.support.s3_gateway import S3Gateway

PART_SIZE = 5 * 1024 * 1024


def bucket_for(gateway: S3Gateway, auth: str) -> Any:
    if auth == "role":
        return make_bucket(
            provider=Provider.S3_COMPATIBLE,
            endpoint=gateway.url,
            auth_mode=AuthMode.ROLE,
            role_arn=ROLE_ARN,
            secret_ref=None,
        )
    return make_bucket(provider=Provider.MINIO, endpoint=gateway.url)


@pytest.mark.parametrize("auth", ["static", "role"])
async def test_three_part_upload_reads_back_as_the_concatenation(
    service: StorageService, gateway: S3Gateway, moto_s3: Any, auth: str
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    bucket = bucket_for(gateway, auth)
    key = "uploads/big genome.bam"
    parts = [os.urandom(PART_SIZE) for _ in range(3)]

    signer = await service.signer_for(bucket, min_lifetime=3600)
    upload_id = await signer.create_multipart_upload(key)
    etags = []
    async with httpx.AsyncClient(timeout=60) as http:
        for number, data in enumerate(parts, start=1):
            url = (await service.presign_upload_part(bucket, key, upload_id, number)).url
            answer = await http.put(url, content=data)
            assert answer.status_code == 200, answer.text
            etags.append((number, answer.headers["ETag"]))
        await signer.complete_multipart_upload(key, upload_id, list(reversed(etags)))
        download = await http.get((await service.presign(bucket, key, Op.READ)).url)
    assert download.content == b"".join(parts)

    # Every request, SDK-signed or presigned, was checked and carried the signer's key.
    assert gateway.rejections == []
    assert gateway.seen_access_keys == {signer.access_key_id}
    assert [seen.query_signed for seen in gateway.seen] == [False, True, True, True, False, True]
    if auth == "static":
        assert signer.access_key_id == STATIC_KEY_ID
    else:
        assert signer.access_key_id.startswith("ASIA")


async def test_abort_discards_the_upload(
    service: StorageService, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    bucket = bucket_for(gateway, "static")
    signer = await service.signer_for(bucket, min_lifetime=600)
    upload_id = await signer.create_multipart_upload("a.bin")
    async with httpx.AsyncClient() as http:
        url = (await service.presign_upload_part(bucket, "a.bin", upload_id, 1)).url
        assert (await http.put(url, content=b"x" * 1024)).status_code == 200
    assert moto_s3.list_multipart_uploads(Bucket="data-bucket").get("Uploads")

    await signer.abort_multipart_upload("a.bin", upload_id)
    assert not moto_s3.list_multipart_uploads(Bucket="data-bucket").get("Uploads")
    with pytest.raises(InvalidInput, match="NoSuchUpload"):
        await signer.abort_multipart_upload("a.bin", upload_id)


async def test_part_numbers_are_checked(service: StorageService, gateway: S3Gateway) -> None:
    bucket = bucket_for(gateway, "static")
    for bad in (0, 10_001):
        with pytest.raises(InvalidInput, match="part_number"):
            await service.presign_upload_part(bucket, "a.bin", "upload", bad)
    # Keys are checked once per request, by the access layer (tests/e2e/test_data_path.py).
