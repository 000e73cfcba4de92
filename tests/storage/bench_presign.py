"""Microbenchmark: our presign fast path against botocore's ``generate_presigned_url``.

Run from the repository root: ``.venv/bin/python -m tests.storage.bench_presign [N]``.
No network: the bucket uses static keys from an in-memory secret source.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import botocore.session
from botocore.config import Config

from app.config import Settings
from app.registry.records import Op, Provider
from app.storage.service import StorageService
from tests.storage.conftest import STATIC_KEY_ID, STATIC_SECRET, DictSecrets, make_bucket

KEY = "programs/DEV/projects/ABC/sample 0001/reads.bam"


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def main(n: int) -> None:
    secrets = DictSecrets()
    secrets.put(
        "file:///secrets/data-bucket",
        {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET},
    )
    service = StorageService(Settings(), secrets)
    bucket = make_bucket(provider=Provider.AWS, region="us-east-1")
    signer = await service.signer_for(bucket, min_lifetime=3600)
    client = botocore.session.Session().create_client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id=STATIC_KEY_ID,
        aws_secret_access_key=STATIC_SECRET,
        config=Config(signature_version="s3v4"),
    )

    ours = per_call_us(lambda: signer.presign(KEY, "GET", 3600), n)
    theirs = per_call_us(
        lambda: client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket.name, "Key": KEY}, ExpiresIn=3600
        ),
        n,
    )

    loop_start = time.perf_counter()
    for _ in range(n):
        await service.presign(bucket, KEY, Op.READ, 3600)
    warm = (time.perf_counter() - loop_start) / n * 1e6
    await service.aclose()

    print(f"S3BucketSigner.presign            {ours:7.1f} µs/call")
    print(f"StorageService.presign (warm)     {warm:7.1f} µs/call")
    print(f"client.generate_presigned_url     {theirs:7.1f} µs/call")
    print(f"speed-up                          {theirs / ours:7.1f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
