"""Unknown bucket names: their own bounded cache, and no query per random name.

Against the real app on PostgreSQL: a stream of random names must neither evict a hot
bucket's snapshot (the data path would then query for it again) nor cost a query each.
"""

from __future__ import annotations

import asyncio
import uuid

from app.access.directory import LOOKUP_BUDGET, BucketDirectory
from app.errors import BucketNotFound
from tests.e2e.conftest import ALL_OPS, PROJECT, Flow, boto, put_static_secret

MAX_ENTRIES = 1_000


async def hot_flow(make_flow, moto, gateway) -> Flow:  # type: ignore[no-untyped-def]
    flow: Flow = await make_flow(cache_max_entries=MAX_ENTRIES, bucket_cache_ttl=60)
    boto(moto, "s3").create_bucket(Bucket="hot-bucket")
    put_static_secret(moto, "gen3/hot", "AKIAMINIOSTATIC00001", "minio-static-secret-value-0001")
    body = {
        "name": "hot-bucket",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/hot",
    }
    await flow.register(body, None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)
    return flow


async def lookup_all(directory: BucketDirectory, names: list[str]) -> None:
    for name in names:
        try:
            await directory.get(name)
        except BucketNotFound:
            continue
        raise AssertionError(f"{name} found")


async def test_ten_thousand_random_names_neither_evict_nor_query_each(
    make_flow, moto, gateway
) -> None:
    flow = await hot_flow(make_flow, moto, gateway)
    services = flow.services
    directory: BucketDirectory = services.directory
    assert (await flow.presign("submitter", "hot-bucket", "k", "read")).status_code == 200

    queries = services.db.query_count
    names = [f"random-{uuid.uuid4().hex}" for _ in range(10_000)]
    await lookup_all(directory, names)
    spent = services.db.query_count - queries

    # The first LOOKUP_BUDGET names are asked one by one; then the set of names answers,
    # loaded once per window (a slow run may span a few windows).
    assert spent <= LOOKUP_BUDGET + 10, spent
    # Ten times more unknown names than the caches hold, and the hot bucket is still there.
    assert directory.buckets.peek("hot-bucket") is not None
    assert len(directory.unknown) <= MAX_ENTRIES
    before = services.db.query_count
    assert (await flow.presign("submitter", "hot-bucket", "k", "read")).status_code == 200
    assert services.db.query_count == before

    # Names seen again are answered from the negative cache, with no query at all.
    recent = names[-MAX_ENTRIES // 2 :]
    before = services.db.query_count
    await lookup_all(directory, recent)
    assert services.db.query_count == before


async def test_over_http_random_names_are_404_and_cheap(make_flow, moto, gateway) -> None:
    flow = await hot_flow(make_flow, moto, gateway)
    services = flow.services
    headers = flow.user("submitter")
    assert (await flow.presign("submitter", "hot-bucket", "k", "read")).status_code == 200

    before = services.db.query_count

    async def probe(i: int) -> int:
        body = {"bucket": f"nope-{i}-{uuid.uuid4().hex[:8]}", "key": "k", "op": "read"}
        response = await flow.http.post("/presign", json=body, headers=headers)
        return response.status_code

    statuses = await asyncio.gather(*(probe(i) for i in range(500)))
    assert set(statuses) == {404}
    assert services.db.query_count - before <= LOOKUP_BUDGET + 10


async def test_a_bucket_registered_after_its_name_was_missed_is_found_at_once(
    make_flow, moto, gateway
) -> None:
    flow = await hot_flow(make_flow, moto, gateway)
    directory: BucketDirectory = flow.services.directory
    # Enough misses to switch to the set of names, and the new bucket's name among them.
    await lookup_all(directory, [f"filler-{i}" for i in range(LOOKUP_BUDGET + 5)])
    await lookup_all(directory, ["late-bucket"])
    body = {"name": "late-bucket", "provider": "aws", "auth_mode": "workload_identity"}
    created = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
    assert created.status_code == 201
    assert (await directory.get("late-bucket")).name == "late-bucket"
