"""AWS Secrets Manager backend against a real moto server (and a few misbehaving HTTP stubs)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import pytest

from app.config import Settings
from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.aws_sm import AwsSecretsManagerResolver
from app.secrets.base import SecretRef, parse_secret_ref
from app.secrets.store import SecretStore
from tests.secrets.conftest import FakeClock
from tests.support.moto import MotoServer
from tests.support.net import BackgroundHTTPServer

CREDS = {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "first-secret-value"}
ROTATED = {"access_key_id": "AKIAEXAMPLE2", "secret_access_key": "second-secret-value"}


def sm_client(server: MotoServer) -> Any:
    return boto3.client("secretsmanager", endpoint_url=server.url, region_name="us-east-1")


def ref(raw: str) -> SecretRef:
    return parse_secret_ref(raw, "aws_sm")


@pytest.fixture
async def resolver(moto: MotoServer) -> AsyncIterator[AwsSecretsManagerResolver]:
    backend = AwsSecretsManagerResolver(endpoint_url=moto.url)
    yield backend
    await backend.aclose()


async def test_reads_the_current_version(moto: MotoServer, resolver: AwsSecretsManagerResolver):
    created = sm_client(moto).create_secret(Name="gen3/creds", SecretString=json.dumps(CREDS))

    payload = await resolver.get(ref("aws-sm://gen3/creds"), None)

    assert payload == CREDS
    assert payload.version == created["VersionId"]


async def test_a_pinned_version_id_reads_that_version(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    sm = sm_client(moto)
    first = sm.create_secret(Name="pinned", SecretString=json.dumps(CREDS))["VersionId"]
    sm.put_secret_value(SecretId="pinned", SecretString=json.dumps(ROTATED))

    assert await resolver.get(ref("aws-sm://pinned"), first) == CREDS
    assert await resolver.get(ref("aws-sm://pinned"), None) == ROTATED


async def test_a_bare_arn_resolves_and_a_binary_secret_is_read(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    arn = sm_client(moto).create_secret(
        Name="binary-creds", SecretBinary=json.dumps(CREDS).encode()
    )["ARN"]

    assert await resolver.get(ref(arn), None) == CREDS


async def test_one_client_per_region_is_reused(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    sm_client(moto).create_secret(Name="reuse", SecretString=json.dumps(CREDS))
    for _ in range(5):
        await resolver.get(ref("aws-sm://reuse"), None)
    assert len(resolver._clients) == 1


async def test_missing_secret_and_version_are_not_found(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    sm_client(moto).create_secret(Name="exists", SecretString=json.dumps(CREDS))

    with pytest.raises(SecretNotFound, match="ResourceNotFoundException"):
        await resolver.get(ref("aws-sm://does-not-exist"), None)
    with pytest.raises(SecretNotFound):
        await resolver.get(ref("aws-sm://exists"), "00000000-0000-0000-0000-000000000000")


async def test_a_payload_that_is_not_a_json_object_is_refused(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    sm_client(moto).create_secret(Name="plain", SecretString="hunter2-plaintext")

    with pytest.raises(SecretNotFound) as caught:
        await resolver.get(ref("aws-sm://plain"), None)
    assert "hunter2" not in str(caught.value)


async def test_put_creates_then_adds_versions(
    moto: MotoServer, resolver: AwsSecretsManagerResolver
):
    target = ref("aws-sm://imported/from-fence")

    first = await resolver.put(target, CREDS)
    second = await resolver.put(target, ROTATED)

    assert first and second and first != second
    assert await resolver.get(target, first) == CREDS
    assert await resolver.get(target, None) == ROTATED
    stored = sm_client(moto).get_secret_value(SecretId="imported/from-fence")
    assert json.loads(stored["SecretString"]) == ROTATED


async def test_a_stopped_server_is_unavailable_after_retries(private_moto: MotoServer):
    sm_client(private_moto).create_secret(Name="outage", SecretString=json.dumps(CREDS))
    # A short read timeout: a stopped server may leave pooled keep-alive connections hanging.
    backend = AwsSecretsManagerResolver(endpoint_url=private_moto.url, read_timeout=1.0)
    try:
        assert await backend.get(ref("aws-sm://outage"), None) == CREDS
        private_moto.stop()
        with pytest.raises(SecretUnavailable, match="unreachable"):
            await backend.get(ref("aws-sm://outage"), None)
    finally:
        await backend.aclose()


class _Misbehaving(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if owner.delay:
            time.sleep(owner.delay)
        status, code = owner.answer
        body = json.dumps({"__type": code, "message": "details that must not be passed on"})
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "ThrottlingException", SecretUnavailable),
        (500, "InternalServiceError", SecretUnavailable),
        (503, "ServiceUnavailable", SecretUnavailable),
        (400, "AccessDeniedException", SecretNotFound),
        (400, "DecryptionFailure", SecretNotFound),
    ],
)
async def test_error_codes_map_to_domain_errors(status: int, code: str, error: type[Exception]):
    server = BackgroundHTTPServer(_Misbehaving)
    server.answer = (status, code)  # type: ignore[attr-defined]
    server.delay = 0.0  # type: ignore[attr-defined]
    server.start()
    backend = AwsSecretsManagerResolver(endpoint_url=server.url, max_attempts=1)
    try:
        with pytest.raises(error) as caught:
            await backend.get(ref("aws-sm://anything"), None)
        assert code in str(caught.value)
        assert "must not be passed on" not in str(caught.value)
    finally:
        await backend.aclose()
        server.stop()


async def test_a_slow_server_times_out_as_unavailable():
    server = BackgroundHTTPServer(_Misbehaving)
    server.answer = (200, "unused")  # type: ignore[attr-defined]
    server.delay = 1.0  # type: ignore[attr-defined]
    server.start()
    backend = AwsSecretsManagerResolver(endpoint_url=server.url, read_timeout=0.2, max_attempts=1)
    try:
        with pytest.raises(SecretUnavailable, match="ReadTimeoutError"):
            await backend.get(ref("aws-sm://slow"), None)
    finally:
        await backend.aclose()
        server.stop()


# --- through the store --------------------------------------------------------------------


def store_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"secret_cache_ttl": 10.0, "secret_grace_period": 30.0}
    values.update(overrides)
    return Settings(**values)


async def test_rotation_is_picked_up_after_the_ttl_and_not_before(
    moto: MotoServer, clock: FakeClock
):
    sm = sm_client(moto)
    sm.create_secret(Name="rotating", SecretString=json.dumps(CREDS))
    store = SecretStore(
        store_settings(),
        {"aws_sm": AwsSecretsManagerResolver(endpoint_url=moto.url)},
        clock=clock,
    )
    try:
        assert await store.get("aws-sm://rotating", None) == CREDS
        sm.put_secret_value(SecretId="rotating", SecretString=json.dumps(ROTATED))

        clock.advance(8.9)  # the jittered TTL is at least 9 s
        assert await store.get("aws-sm://rotating", None) == CREDS
        clock.advance(1.2)
        assert await store.get("aws-sm://rotating", None) == ROTATED
        assert store.backend_stats["aws-sm"].fetch_count == 2
    finally:
        await store.aclose()


async def test_grace_serves_the_last_value_during_an_outage_then_gives_up(
    private_moto: MotoServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    sm_client(private_moto).create_secret(Name="graceful", SecretString=json.dumps(CREDS))
    store = SecretStore(
        store_settings(),
        {
            "aws_sm": AwsSecretsManagerResolver(
                endpoint_url=private_moto.url, read_timeout=1.0, max_attempts=1
            )
        },
        clock=clock,
    )
    try:
        assert await store.get("aws-sm://graceful", None) == CREDS
        private_moto.stop()

        clock.advance(10.0 + 25.0)  # expired, inside the 30 s grace period
        with caplog.at_level("WARNING"):
            assert await store.get("aws-sm://graceful", None) == CREDS
        assert store.cache.stats.stale_served == 1
        assert store.backend_stats["aws-sm"].unavailable == 1
        assert any("stale" in record.getMessage() for record in caplog.records)
        assert "first-secret-value" not in caplog.text

        clock.advance(10.0)  # past the grace period
        with pytest.raises(SecretUnavailable):
            await store.get("aws-sm://graceful", None)
    finally:
        await store.aclose()


async def test_the_default_backend_follows_aws_endpoint_url(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    arn = sm_client(moto).create_secret(Name="from-env", SecretString=json.dumps(CREDS))["ARN"]
    store = SecretStore(store_settings())
    try:
        assert await store.get(arn, None) == CREDS
        assert await store.get("aws-sm://from-env", None) == CREDS
    finally:
        await store.aclose()
