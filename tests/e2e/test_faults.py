"""Dependency outages through real processes on 127.0.0.1: the service degrades safely and
recovers on its own (docs/targets.md)."""

from __future__ import annotations

import asyncio
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

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
from tests.support.net import BackgroundHTTPServer
from tests.support.tcp_proxy import TcpProxy


def minio(gateway_url: str) -> dict[str, Any]:
    return {
        "name": "minio-abc",
        "provider": "minio",
        "endpoint": gateway_url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
    }


async def send(signed: dict[str, Any], content: bytes | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(signed["method"], signed["url"], content=content)


async def prepared(flow: Flow, moto, gateway) -> None:
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio(gateway.url), None, ALL_OPS)
    flow.arborist.grant("submitter", "writer", PROJECT)
    flow.arborist.grant("submitter", "reader", PROJECT)


@pytest.fixture
def db_proxy(postgres) -> Any:
    proxy = TcpProxy("127.0.0.1", 5432).start()
    yield proxy
    proxy.cut()


async def test_database_outage_keeps_warm_presigns_and_refuses_writes(
    make_flow, moto, gateway, pg_url, db_proxy
) -> None:
    proxied = pg_url.replace("127.0.0.1:5432", db_proxy.address)
    flow: Flow = await make_flow(database_url=proxied, authz_cache_ttl=30)
    await prepared(flow, moto, gateway)
    assert (await flow.presign("submitter", "minio-abc", "k/warm", "write")).status_code == 200

    db_proxy.cut()
    for i in range(20):
        signed = await flow.presign("submitter", "minio-abc", f"k/during-outage-{i}", "write")
        assert signed.status_code == 200, signed.text
    assert (await send(signed.json(), b"still signing")).status_code == 200

    body = {**minio(gateway.url), "name": "written-during-outage"}
    create = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
    assert create.status_code == 503 and create.json()["error"] == "dependency_unavailable"
    patch = await flow.call(
        "PATCH", "/admin/buckets/minio-abc", json={"labels": {"a": "b"}}, headers=flow.admin
    )
    assert patch.status_code == 503
    assert (await flow.call("GET", "/_status/ready")).status_code == 503
    assert (await flow.call("GET", "/_status")).status_code == 200

    db_proxy.restore()
    deadline = time.monotonic() + 15
    while (await flow.call("GET", "/_status/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the service did not reconnect to the database"
        await asyncio.sleep(0.2)
    # Nothing was half-written, and writes work again without a restart.
    engine = create_async_engine(pg_url)
    async with engine.connect() as connection:
        names = (await connection.execute(sa.text("SELECT name FROM bucket"))).scalars().all()
        audited = (
            await connection.execute(sa.text("SELECT bucket_name, action FROM bucket_audit"))
        ).all()
    await engine.dispose()
    assert names == ["minio-abc"]
    assert all(name == "minio-abc" for name, _ in audited)
    assert ("minio-abc", "update") not in audited
    again = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
    assert again.status_code == 201


async def test_arborist_outage_denies_the_data_path(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=0)
    await prepared(flow, moto, gateway)
    assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 200

    flow.arborist.stop()
    down = await flow.presign("submitter", "minio-abc", "k/a", "read")
    assert down.status_code == 503 and "url" not in down.json()
    flow.arborist.start()

    flow.arborist.delay = 1.5  # beyond the 1 s timeout the tests configure
    slow = await flow.presign("submitter", "minio-abc", "k/a", "read")
    assert slow.status_code == 503
    flow.arborist.delay = 0

    flow.arborist.fail_with = 502
    assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 503
    flow.arborist.fail_with = None
    assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 200


async def test_cached_decisions_expire_during_an_arborist_outage(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=1)
    await prepared(flow, moto, gateway)
    assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 200
    flow.arborist.stop()
    try:
        # Within the decision TTL the answer Arborist gave still stands ...
        assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 200
        await asyncio.sleep(1.2)
        # ... and never beyond it.
        assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 503
    finally:
        flow.arborist.start()


async def test_secrets_outage_grace_period_then_503_then_recovery(
    make_flow, moto, gateway, monkeypatch
) -> None:
    port = urlsplit(moto.url).port
    proxy = TcpProxy("127.0.0.1", port).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://{proxy.address}")
    try:
        flow: Flow = await make_flow(secret_cache_ttl=0.3, secret_grace_period=3.0)
        await prepared(flow, moto, gateway)
        assert (await flow.presign("submitter", "minio-abc", "k/a", "write")).status_code == 200

        proxy.cut()
        await asyncio.sleep(0.5)  # past the TTL: the next use must refresh and cannot
        within = await flow.presign("submitter", "minio-abc", "k/a", "write")
        assert within.status_code == 200, within.text
        assert (await send(within.json(), b"grace")).status_code == 200
        assert flow.services.secrets.cache.stats.stale_served >= 1

        await asyncio.sleep(3.3)  # past the grace period
        after = await flow.presign("submitter", "minio-abc", "k/a", "write")
        assert after.status_code == 503 and after.json()["error"] == "dependency_unavailable"
        assert STATIC_SECRET not in after.text

        proxy.restore()
        recovered = await flow.presign("submitter", "minio-abc", "k/a", "write")
        assert recovered.status_code == 200
    finally:
        proxy.cut()


class _ThrottlingSts(BaseHTTPRequestHandler):
    """Answers STS with ``Throttling`` a set number of times, then relays to moto."""

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner.calls += 1
        if owner.throttle > 0:
            owner.throttle -= 1
            payload = (
                b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                b"<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
                b"</Error><RequestId>1</RequestId></ErrorResponse>"
            )
            self.send_response(400)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = httpx.post(owner.upstream + self.path, content=body, headers=headers, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "text/xml"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)


async def test_sts_throttling_is_retried_then_503_never_500(
    make_flow, moto, gateway, monkeypatch
) -> None:
    sts = BackgroundHTTPServer(_ThrottlingSts)
    sts.upstream, sts.calls, sts.throttle = moto.url, 0, 1000  # type: ignore[attr-defined]
    sts.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    try:
        flow: Flow = await make_flow()
        boto(moto, "s3").create_bucket(Bucket="gen3-abc-role")
        body = {
            "name": "gen3-abc-role",
            "provider": "aws",
            "region": "us-east-1",
            "auth_mode": "role",
            "role_arn": ROLE_ARN,
        }
        await flow.register(body, None, ALL_OPS)
        flow.arborist.grant("submitter", "reader", PROJECT)

        throttled = await flow.presign("submitter", "gen3-abc-role", "k/a", "read")
        assert throttled.status_code == 503, throttled.text
        assert throttled.json()["error"] == "dependency_unavailable"
        assert sts.calls >= 2  # type: ignore[attr-defined]  (retried with backoff)

        sts.throttle = 1  # type: ignore[attr-defined]  # one more refusal, then STS answers
        recovered = await flow.presign("submitter", "gen3-abc-role", "k/a", "read")
        assert recovered.status_code == 200, recovered.text
    finally:
        sts.stop()


async def test_arborist_unable_to_judge_a_token_is_503_and_never_cached(
    make_flow, moto, gateway, caplog
) -> None:
    """Arborist answers 401 when its own JWKS fetch fails: an outage, not a denial."""
    flow: Flow = await make_flow(authz_cache_ttl=30)
    await prepared(flow, moto, gateway)
    token = flow.user("submitter")["Authorization"].removeprefix("Bearer ")
    flow.arborist.jwks_broken = True
    for _ in range(2):
        down = await flow.presign("submitter", "minio-abc", "k/a", "read")
        assert down.status_code == 503, down.text
    told = [getattr(record, "arborist_message", "") for record in caplog.records]
    assert any("error decoding token" in message for message in told)
    assert all(token not in repr(record.__dict__) for record in caplog.records)
    flow.arborist.jwks_broken = False
    # Had the 401 been cached as a denial this would be 403 for the next 30 s.
    assert (await flow.presign("submitter", "minio-abc", "k/a", "read")).status_code == 200

    # A truthy non-boolean is no grant either (a user with no cached decision yet).
    flow.arborist.grant("reviewer", "reader", PROJECT)
    flow.arborist.answer_with = (200, {"auth": "yes"})
    assert (await flow.presign("reviewer", "minio-abc", "k/b", "read")).status_code == 503
    flow.arborist.answer_with = None
