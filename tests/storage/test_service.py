"""StorageService: which signer a bucket gets, when it changes, and what a URL may live."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput, SecretNotFound
from app.registry.records import AuthMode, BucketStatus, Op, Provider
from app.storage.base import BucketSigner
from app.storage.service import StorageService
from tests.storage.conftest import STATIC_KEY_ID, STATIC_SECRET, DictSecrets, WallClock, make_bucket
from tests.support.moto import MotoServer
from tests.support.net import BackgroundHTTPServer
from tests.support.s3_gateway import S3Gateway

ROTATED = {"access_key_id": "AKIAROTATEDEXAMPLE01", "secret_access_key": "rotated-secret"}


def gateway_bucket(gateway: S3Gateway, **overrides: Any) -> Any:
    return make_bucket(provider=Provider.MINIO, endpoint=gateway.url, **overrides)


def expires_param(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


# -- lifetimes -------------------------------------------------------------------------------


def test_clamp_expires_in(secrets: DictSecrets) -> None:
    service = StorageService(Settings(), secrets)
    assert service.clamp_expires_in(None) == 3600
    assert service.clamp_expires_in(120) == 120
    assert service.clamp_expires_in(10**9) == 3600
    assert service.clamp_expires_in(0) == 1
    assert service.clamp_expires_in(-5) == 1
    custom = StorageService(
        Settings(default_presigned_url_ttl=600, max_presigned_url_ttl=900), secrets
    )
    assert custom.clamp_expires_in(None) == 600
    assert custom.clamp_expires_in(1200) == 900


async def test_presign_applies_default_and_maximum(
    service: StorageService, gateway: S3Gateway, clock: WallClock
) -> None:
    bucket = gateway_bucket(gateway)
    default = await service.presign(bucket, "k", Op.READ)
    assert expires_param(default.url) == 3600
    assert default.expires_at == clock.now.replace(microsecond=0) + timedelta(seconds=3600)
    capped = await service.presign(bucket, "k", Op.READ, 86_400)
    assert expires_param(capped.url) == 3600


async def test_presign_checks_op(service: StorageService, gateway: S3Gateway) -> None:
    # Keys are checked once per request, by the access layer (tests/e2e/test_data_path.py).
    bucket = gateway_bucket(gateway)
    with pytest.raises(InvalidInput, match="cannot be presigned"):
        await service.presign(bucket, "k", Op.MULTIPART)


# -- which signer ----------------------------------------------------------------------------


async def test_cold_start_builds_one_signer_for_concurrent_callers(
    service: StorageService, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    bucket = gateway_bucket(gateway)
    signers = await asyncio.gather(
        *(service.signer_for(bucket, min_lifetime=60) for _ in range(40))
    )
    assert len({id(signer) for signer in signers}) == 1
    assert secrets.reads == 1
    assert service.stats.signers_built == 1
    assert isinstance(signers[0], BucketSigner)


async def test_credential_generation_change_yields_a_new_signer(
    service: StorageService, secrets: DictSecrets, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    secrets.put("file:///secrets/data-bucket", ROTATED, version="v2")
    gateway.add_key(ROTATED["access_key_id"], ROTATED["secret_access_key"])
    bucket = gateway_bucket(gateway)
    first = await service.signer_for(bucket, min_lifetime=60)
    await first.list_one()  # opens its SDK client

    # Fields that do not touch credentials keep the signer.
    relabelled = dataclasses.replace(bucket, labels={"team": "x"}, version=2)
    assert await service.signer_for(relabelled, min_lifetime=60) is first

    # Pinning another secret version is a new credential generation: new signer at once.
    pinned = dataclasses.replace(bucket, secret_version="v2", version=3)
    second = await service.signer_for(pinned, min_lifetime=60)
    assert second is not first
    assert second.access_key_id == ROTATED["access_key_id"]
    assert service.stats.signers_built == 2
    assert service.stats.signers_live == 1

    # The replaced signer still finishes what it was doing (here: a late call).
    await first.list_one()
    await second.list_one()
    assert gateway.seen_access_keys == {STATIC_KEY_ID, ROTATED["access_key_id"]}


async def test_invalidate_bucket_forces_a_rebuild(
    service: StorageService, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    bucket = gateway_bucket(gateway)
    first = await service.signer_for(bucket, min_lifetime=60)
    service.invalidate_bucket(bucket.id)
    second = await service.signer_for(bucket, min_lifetime=60)
    assert second is not first
    assert secrets.reads == 2
    assert service.stats.signers_built == 2


async def test_rotated_static_secret_is_picked_up_after_the_secret_ttl(
    service: StorageService, secrets: DictSecrets, gateway: S3Gateway, clock: WallClock
) -> None:
    bucket = gateway_bucket(gateway)
    first = await service.signer_for(bucket, min_lifetime=60)

    clock.advance(301)  # past secret_cache_ttl, keys unchanged: same signer, nothing rebuilt
    assert await service.signer_for(bucket, min_lifetime=60) is first
    assert secrets.reads == 2
    assert service.stats.signers_built == 1

    secrets.put("file:///secrets/data-bucket", ROTATED)
    clock.advance(301)
    rotated = await service.signer_for(bucket, min_lifetime=60)
    assert rotated.access_key_id == ROTATED["access_key_id"]
    assert service.stats.signers_built == 2


async def test_incomplete_static_secret_names_what_is_missing(
    service: StorageService, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    secrets.put("file:///secrets/half", {"access_key_id": "AKIAHALF"})
    bucket = gateway_bucket(gateway, secret_ref="file:///secrets/half")
    with pytest.raises(SecretNotFound) as caught:
        await service.signer_for(bucket, min_lifetime=60)
    assert caught.value.message == "secret file:///secrets/half lacks secret_access_key"
    with pytest.raises(SecretNotFound):
        await service.signer_for(gateway_bucket(gateway, secret_ref=None), min_lifetime=60)


async def test_gcp_buckets_are_signed_by_the_gcs_signer(
    service: StorageService, secrets: DictSecrets
) -> None:
    bucket = make_bucket(provider=Provider.GCP, status=BucketStatus.ACTIVE)
    # The S3-shaped payload is not a service-account key: the GCS signer says what is missing.
    secrets.put(bucket.secret_ref or "", {"access_key_id": "a", "secret_access_key": "b"})
    with pytest.raises(SecretNotFound, match="service_account_key_json"):
        await service.signer_for(bucket, min_lifetime=60)


async def test_signer_repr_shows_no_secret(service: StorageService, gateway: S3Gateway) -> None:
    signer = await service.signer_for(gateway_bucket(gateway), min_lifetime=60)
    assert STATIC_SECRET not in repr(signer)
    assert STATIC_SECRET not in repr(getattr(signer, "credentials", None))


# -- workload identity -----------------------------------------------------------------------


class ContainerCredentials(BackgroundHTTPServer):
    """The ECS/EKS-pod-identity style credentials endpoint botocore's chain can call."""

    def __init__(self, expires_at: datetime) -> None:
        super().__init__(_ContainerCredentialsHandler)
        self.expires_at = expires_at
        self.calls = 0


class _ContainerCredentialsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        owner: ContainerCredentials = self.server.owner  # type: ignore[attr-defined]
        owner.calls += 1
        body = json.dumps(
            {
                "AccessKeyId": "ASIAWORKLOADEXAMPLE",
                "SecretAccessKey": "workload-secret",
                "Token": "workload-token",
                "Expiration": owner.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def no_default_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def container_credentials(
    no_default_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ContainerCredentials]:
    expires_at = (datetime.now(UTC) + timedelta(minutes=45)).replace(microsecond=0)
    server = ContainerCredentials(expires_at)
    server.start()
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", server.url + "/creds")
    yield server
    server.stop()


async def test_workload_identity_signs_with_refreshable_credentials_within_their_life(
    container_credentials: ContainerCredentials,
    settings: Settings,
    secrets: DictSecrets,
    gateway: S3Gateway,
    moto_s3: Any,
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    moto_s3.put_object(Bucket="data-bucket", Key="k", Body=b"pod identity")
    gateway.add_key("ASIAWORKLOADEXAMPLE", "workload-secret")
    bucket = gateway_bucket(gateway, auth_mode=AuthMode.WORKLOAD_IDENTITY, secret_ref=None)
    signing = StorageService(settings, secrets)
    try:
        first = await signing.presign(bucket, "k", Op.READ, 3600)
        second = await signing.presign(bucket, "k", Op.READ, 600)
        signer = await signing.signer_for(bucket, min_lifetime=60)
    finally:
        await signing.aclose()
    assert signer.access_key_id == "ASIAWORKLOADEXAMPLE"
    assert signer.credentials_expire_at == container_credentials.expires_at
    assert container_credentials.calls == 1
    # 45 minutes of credentials cannot back a one-hour URL.
    assert 2600 < expires_param(first.url) <= 2700
    assert first.expires_at <= container_credentials.expires_at
    assert expires_param(second.url) == 600
    async with httpx.AsyncClient() as http:
        answer = await http.get(first.url)
    assert answer.content == b"pod identity"
    assert gateway.seen_access_keys == {"ASIAWORKLOADEXAMPLE"}


async def test_workload_identity_from_environment_keys_does_not_expire(
    settings: Settings, secrets: DictSecrets, gateway: S3Gateway, moto_s3: Any
) -> None:
    moto_s3.create_bucket(Bucket="data-bucket")
    gateway.add_key("testing", "testing")  # the test process's AWS_* variables
    bucket = gateway_bucket(gateway, auth_mode=AuthMode.WORKLOAD_IDENTITY, secret_ref=None)
    signing = StorageService(settings, secrets)
    try:
        signer = await signing.signer_for(bucket, min_lifetime=3600)
        await signer.head_bucket()
    finally:
        await signing.aclose()
    assert signer.access_key_id == "testing"
    assert signer.credentials_expire_at is None
    assert gateway.seen_access_keys == {"testing"}


async def test_missing_workload_identity_is_a_dependency_error(
    no_default_credentials: None, settings: Settings, secrets: DictSecrets, gateway: S3Gateway
) -> None:
    bucket = gateway_bucket(gateway, auth_mode=AuthMode.WORKLOAD_IDENTITY, secret_ref=None)
    signing = StorageService(settings, secrets)
    try:
        with pytest.raises(DependencyUnavailable, match="no workload identity"):
            await signing.signer_for(bucket, min_lifetime=60)
    finally:
        await signing.aclose()


# -- private CA ------------------------------------------------------------------------------


def self_signed_localhost(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "on-prem object store")])
    now = datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "cert.pem").write_text(pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context, pem


async def test_private_ca_bundle_is_trusted_for_that_bucket_only(
    moto: MotoServer,
    service: StorageService,
    secrets: DictSecrets,
    moto_s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A private temp directory: other processes' files must not change what this test sees.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    moto_s3.create_bucket(Bucket="data-bucket")
    ca_files_before = set(Path(tempfile.gettempdir()).glob("bucket-registry-ca-*.pem"))
    context, pem = self_signed_localhost(tmp_path)
    tls_gateway = S3Gateway(moto.url, ssl_context=context).start()
    try:
        tls_gateway.add_key(STATIC_KEY_ID, STATIC_SECRET)
        secrets.put(
            "file:///secrets/private-ca",
            {
                "access_key_id": STATIC_KEY_ID,
                "secret_access_key": STATIC_SECRET,
                "ca_bundle_pem": pem,
            },
        )
        trusted = make_bucket(
            provider=Provider.S3_COMPATIBLE,
            endpoint=tls_gateway.url,
            secret_ref="file:///secrets/private-ca",
        )
        untrusted = make_bucket(provider=Provider.S3_COMPATIBLE, endpoint=tls_gateway.url)

        signer = await service.signer_for(trusted, min_lifetime=60)
        await signer.head_bucket()
        with pytest.raises(DependencyUnavailable) as caught:
            await (await service.signer_for(untrusted, min_lifetime=60)).head_bucket()
        assert caught.value.dependency == "storage"
        assert "SSLError" in caught.value.message

        url = (await service.presign(trusted, "k", Op.WRITE)).url
        assert url.startswith(tls_gateway.url + "/data-bucket/k?")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cadata=pem)) as http:
            assert (await http.put(url, content=b"over tls")).status_code == 200
    finally:
        tls_gateway.stop()
    assert moto_s3.get_object(Bucket="data-bucket", Key="k")["Body"].read() == b"over tls"
    await service.aclose()
    # The CA bundle was written for the client's sake only, and is gone with it.
    assert set(Path(tempfile.gettempdir()).glob("bucket-registry-ca-*.pem")) == ca_files_before


async def test_a_static_signer_never_outlives_the_cached_secret(
    tmp_path: Path, gateway: S3Gateway, clock: WallClock
) -> None:
    # A signer cached for a full TTL after a late rebuild (on a secret copy read earlier) would
    # keep rotated-out keys for up to two TTLs; its lifetime follows the secret's freshness.
    from app.secrets.store import SecretStore

    secret = tmp_path / "data-bucket.json"
    secret.write_text(
        json.dumps({"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET})
    )
    settings = Settings(secret_cache_ttl=100, secrets_backend="file", file_secrets_dir=tmp_path)
    monotonic = [0.0]
    store = SecretStore(settings, clock=lambda: monotonic[0], rng=lambda: 0.0)
    service = StorageService(settings, store, clock=clock)
    bucket = gateway_bucket(gateway, secret_ref=f"file://{secret}")
    await store.get(bucket.secret_ref, None)  # read at t=0: fresh for 100 s
    monotonic[0] = 70.0
    await service.signer_for(bucket, min_lifetime=60)
    left = service.signer_cache.fresh_for((bucket.id, bucket.credential_generation()))
    assert left is not None and 0 < left <= 30
    await service.aclose()
