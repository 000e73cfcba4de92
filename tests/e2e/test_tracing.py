"""Optional tracing: one span per request, child spans per dependency call."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.main import create_app
from app.tracing import Tracing
from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    ROLE_ARN,
    STATIC_KEY_ID,
    STATIC_SECRET,
    boto,
    put_static_secret,
)


async def test_spans_for_requests_and_dependencies(
    flow_settings, moto, gateway, issuer, arborist
) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(flow_settings(), tracing=Tracing(exporter=exporter, batch=False))
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    arborist.make_admin("admin")
    arborist.grant("submitter", "reader", PROJECT)
    admin = {"Authorization": f"Bearer {issuer.token('admin')}"}
    user = {"Authorization": f"Bearer {issuer.token('submitter')}"}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r"
        ) as http:
            for body in (
                {
                    "name": "minio-abc",
                    "provider": "minio",
                    "endpoint": gateway.url,
                    "auth_mode": "static",
                    "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
                },
                {"name": "gen3-role", "provider": "aws", "auth_mode": "role", "role_arn": ROLE_ARN},
            ):
                assert (
                    await http.post("/admin/buckets", json=body, headers=admin)
                ).status_code == 201
                binding = {"resource_path": PROJECT, "allowed_ops": ALL_OPS}
                await http.post(
                    f"/admin/buckets/{body['name']}/bindings", json=binding, headers=admin
                )
            exporter.clear()
            for bucket in ("minio-abc", "gen3-role"):
                response = await http.post(
                    "/presign", json={"bucket": bucket, "key": "k/v", "op": "read"}, headers=user
                )
                assert response.status_code == 200, response.text

    spans = exporter.get_finished_spans()
    requests = [span for span in spans if span.name == "POST /presign"]
    assert len(requests) == 2
    by_name = {span.name: span for span in spans}
    for dependency in ("arborist", "database", "secrets:aws-sm", "sts"):
        assert dependency in by_name, sorted(by_name)
        child = by_name[dependency]
        assert child.parent is not None
        assert child.parent.span_id in {span.context.span_id for span in requests}
    assert requests[0].attributes["http.route"] == "/presign"
    assert requests[0].attributes["http.response.status_code"] == 200
    text = " ".join(str(dict(span.attributes or {})) for span in spans)
    assert STATIC_SECRET not in text and "submitter" not in text
