"""Concurrency: cold stampedes collapse into single loads; concurrent admin writes serialize."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    ROLE_ARN,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
)


async def test_cold_stampede_costs_one_load_of_each_kind(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=30)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    static = {
        "name": "minio-abc",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
    }
    role = {"name": "gen3-abc-role", "provider": "aws", "auth_mode": "role", "role_arn": ROLE_ARN}
    await flow.register(static, None, ALL_OPS)
    await flow.register(role, None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)
    headers = flow.user("submitter")
    # Verify the token once so the stampede measures the bucket path, not JWKS.
    assert (await flow.call("GET", "/resolve/minio-abc", headers=headers)).status_code == 200
    services = flow.services
    services.directory.forget_everything()

    # Both buckets bind the same resource path, so the second reuses the first's decision.
    cases = (("minio-abc", 1, 0, 1), ("gen3-abc-role", 0, 1, 0))
    for bucket, secret_fetches, sts_calls, arborist_calls in cases:
        before = (
            services.db.query_count,
            services.secrets.fetch_count,
            services.storage.sts.assume_count,
            flow.arborist.call_count,
        )
        body = {"bucket": bucket, "key": "k/v", "op": "read"}
        responses = await asyncio.gather(
            *(flow.http.post("/presign", json=body, headers=headers) for _ in range(100))
        )
        assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
        after = (
            services.db.query_count,
            services.secrets.fetch_count,
            services.storage.sts.assume_count,
            flow.arborist.call_count,
        )
        assert [b - a for a, b in zip(before, after, strict=True)] == [
            1,
            secret_fetches,
            sts_calls,
            arborist_calls,
        ]


async def test_fifty_concurrent_patches_one_winner_per_version(make_flow) -> None:
    flow: Flow = await make_flow()
    body = {"name": "gen3-abc-role", "provider": "aws", "auth_mode": "role", "role_arn": ROLE_ARN}
    assert (
        await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
    ).status_code == 201

    async def patch(i: int, version: int) -> httpx.Response:
        return await flow.http.patch(
            "/admin/buckets/gen3-abc-role",
            json={"labels": {"writer": f"{version}-{i}"}},
            headers={**flow.admin, "If-Match": f'"{version}"'},
        )

    winners: list[str] = []
    for round_ in range(3):
        version = 1 + round_
        responses = await asyncio.gather(*(patch(i, version) for i in range(50)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 1 and codes.count(412) == 49, sorted(set(codes))
        winners.append(f"{version}-{codes.index(200)}")
    final = (await flow.call("GET", "/admin/buckets/gen3-abc-role", headers=flow.admin)).json()
    assert final["version"] == 4 and final["labels"] == {"writer": winners[-1]}
    audit = (
        await flow.call("GET", "/admin/buckets/gen3-abc-role/audit", headers=flow.admin)
    ).json()
    updates = [row for row in audit if row["action"] == "update"]
    assert [row["diff"]["after"]["labels"] for row in updates] == [
        {"writer": w} for w in reversed(winners)
    ]
