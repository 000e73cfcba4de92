"""/metrics: scraped after real traffic; bounded labels; no user names, keys or tokens."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
)


async def test_metrics_after_traffic(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=30)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(
        {
            "name": "minio-abc",
            "provider": "minio",
            "endpoint": gateway.url,
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
        },
        "incoming/",
        ALL_OPS,
    )
    flow.arborist.grant("submitter", "reader", PROJECT)
    for _ in range(3):
        assert (
            await flow.presign("submitter", "minio-abc", "incoming/secret-key-name", "read")
        ).status_code == 200
    assert (
        await flow.presign("intruder", "minio-abc", "incoming/secret-key-name", "read")
    ).status_code == 403
    assert (await flow.presign("submitter", "nope-bucket", "incoming/a", "read")).status_code == 404

    scrape = await flow.call("GET", "/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(scrape.text)}

    def value(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in families[name].samples
            if sample.name in (name, name + "_total", name + "_count")
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    assert (
        value("bucket_registry_presign_decisions", provider="minio", op="read", decision="allowed")
        == 3
    )
    assert (
        value(
            "bucket_registry_presign_decisions", provider="minio", op="read", decision="forbidden"
        )
        == 1
    )
    assert (
        value(
            "bucket_registry_presign_decisions",
            provider="unknown",
            op="read",
            decision="bucket_not_found",
        )
        == 1
    )
    assert (
        value(
            "bucket_registry_http_request_duration_seconds",
            route="/presign",
            status="200",
            method="POST",
        )
        == 3
    )
    assert (
        value(
            "bucket_registry_http_request_duration_seconds",
            route="/admin/buckets/{name}/bindings",
            method="POST",
        )
        == 1
    )
    assert value("bucket_registry_cache_hits", cache="buckets") >= 2
    assert value("bucket_registry_cache_loads", cache="secrets") == 1
    assert value("bucket_registry_secret_fetches", backend="aws-sm") == 1
    assert value("bucket_registry_dependency_duration_seconds", dependency="arborist") >= 2
    assert value("bucket_registry_dependency_duration_seconds", dependency="database") >= 1
    assert "bucket_registry_cache_size" in families
    assert "bucket_registry_sts_assume_role" in families

    text = scrape.text
    for private in (
        "submitter",
        "intruder",
        "secret-key-name",
        "minio-abc",
        STATIC_SECRET,
        STATIC_KEY_ID,
    ):
        assert private not in text
    assert flow.issuer.token("submitter")[:40] not in text
