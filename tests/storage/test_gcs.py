"""GCS V4 signing: every URL is checked by an independent verifier built from Google's spec,
with the public half of the key that signed it; Workload Identity signs through a real HTTP
stub of the IAM Credentials API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.auth.exceptions import DefaultCredentialsError

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput, SecretNotFound
from app.registry.records import AuthMode, BucketRecord, Op, Provider
from app.storage.base import BucketSigner, PresignedRequest
from app.storage.gcs.apis import IamSigningDenied
from app.storage.gcs.identity import GoogleAuthTokens
from app.storage.gcs.keys import AsyncSigningRequired
from app.storage.gcs.signer import GcsBucketSigner, GcsSignerFactory
from app.storage.service import StorageService
from tests.storage.conftest import DictSecrets, WallClock, make_bucket
from tests.support.gcp_iam import GoogleApiStub, PodTokens, new_rsa_key, service_account_key_json
from tests.support.gcs_v4 import UNRESERVED, check_v4
from tests.support.net import free_port

STATIC_EMAIL = "registry-signer@registry-project.iam.gserviceaccount.com"
WI_EMAIL = "data-signer@commons-data.iam.gserviceaccount.com"
SECRET_REF = "gcp-sm://projects/p/secrets/gcs-key"


def verify_v4(
    request: PresignedRequest, public_key: rsa.RSAPublicKey, *, bucket: str, key: str
) -> dict[str, str]:
    """Check ``request`` the way Cloud Storage would; returns its decoded query parameters."""
    return check_v4(
        request.method,
        request.url,
        request.headers,
        public_key,
        bucket=bucket,
        key=key,
        expires_at=request.expires_at,
    )


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sa_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture(scope="session")
def google_server() -> Iterator[GoogleApiStub]:
    stub = GoogleApiStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def google(google_server: GoogleApiStub) -> GoogleApiStub:
    google_server.reset()
    return google_server


@pytest.fixture
def gcs_secrets(sa_key: rsa.RSAPrivateKey, google_server: GoogleApiStub) -> DictSecrets:
    source = DictSecrets()
    key_json = service_account_key_json(
        STATIC_EMAIL, sa_key, token_uri=f"{google_server.url}/token"
    )
    source.put(SECRET_REF, {"service_account_key_json": key_json})
    return source


@pytest.fixture
def pod_tokens(google: GoogleApiStub) -> PodTokens:
    return PodTokens(google)


@pytest.fixture
async def factory(
    google: GoogleApiStub, gcs_secrets: DictSecrets, clock: WallClock, pod_tokens: PodTokens
) -> AsyncIterator[GcsSignerFactory]:
    built = GcsSignerFactory(
        Settings(gcp_oauth_token_endpoint=f"{google.url}/token"),
        gcs_secrets,
        gcs_endpoint=google.url,
        iam_endpoint=google.url,
        token_provider=pod_tokens,
        clock=clock,
        backoff=0.001,
    )
    yield built
    await built.aclose()


def gcs_bucket(**overrides: Any) -> BucketRecord:
    fields: dict[str, Any] = {
        "name": "gen3-data",
        "provider": Provider.GCP,
        "region": None,
        "auth_mode": AuthMode.STATIC,
        "secret_ref": SECRET_REF,
    }
    fields.update(overrides)
    return make_bucket(**fields)


def wi_bucket(**overrides: Any) -> BucketRecord:
    fields: dict[str, Any] = {
        "auth_mode": AuthMode.WORKLOAD_IDENTITY,
        "secret_ref": None,
        "service_account": WI_EMAIL,
    }
    fields.update(overrides)
    return gcs_bucket(**fields)


async def static_signer(factory: GcsSignerFactory, **overrides: Any) -> GcsBucketSigner:
    signer = await factory.build(gcs_bucket(**overrides), min_lifetime=3600)
    assert isinstance(signer, GcsBucketSigner)
    return signer


# -- Google's published conformance vectors ----------------------------------------------------

# The inactive dummy key and expected URLs of Google's V4 signing conformance tests
# (github.com/googleapis/conformance-tests, storage/v1). RSA PKCS#1 v1.5 is deterministic, so
# our URL must match theirs byte for byte.
CONFORMANCE_KEY = {
    "type": "service_account",
    "project_id": "dummy-project-id",
    "private_key_id": "ffffffffffffffffffffffffffffffffffffffff",
    "private_key": (
        "-----BEGIN PRIVATE KEY-----\n"
        "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCsPzMirIottfQ2\n"
        "ryjQmPWocSEeGo7f7Q4/tMQXHlXFzo93AGgU2t+clEj9L5loNhLVq+vk+qmnyDz5\n"
        "Q04y8jVWyMYzzGNNrGRW/yaYqnqlKZCy1O3bmnNjV7EDbC/jE1ZLBY0U3HaSHfn6\n"
        "S9ND8MXdgD0/ulRTWwq6vU8/w6i5tYsU7n2LLlQTl1fQ7/emO9nYcCFJezHZVa0H\n"
        "meWsdHwWsok0skwQYQNIzP3JF9BpR5gJT2gNge6KopDesJeLoLzaX7cUnDn+CAnn\n"
        "LuLDwwSsIVKyVxhBFsFXPplgpaQRwmGzwEbf/Xpt9qo26w2UMgn30jsOaKlSeAX8\n"
        "cS6ViF+tAgMBAAECggEACKRuJCP8leEOhQziUx8Nmls8wmYqO4WJJLyk5xUMUC22\n"
        "SI4CauN1e0V8aQmxnIc0CDkFT7qc9xBmsMoF+yvobbeKrFApvlyzNyM7tEa/exh8\n"
        "DGD/IzjbZ8VfWhDcUTwn5QE9DCoon9m1sG+MBNlokB3OVOt8LieAAREdEBG43kJu\n"
        "yQTOkY9BGR2AY1FnAl2VZ/jhNDyrme3tp1sW1BJrawzR7Ujo8DzlVcS2geKA9at7\n"
        "55ua5GbHz3hfzFgjVXDfnkWzId6aHypUyqHrSn1SqGEbyXTaleKTc6Pgv0PgkJjG\n"
        "hZazWWdSuf1T5Xbs0OhAK9qraoAzT6cXXvMEvvPt6QKBgQDXcZKqJAOnGEU4b9+v\n"
        "Odoh+nssdrIOBNMu1m8mYbUVYS1aakc1iDGIIWNM3qAwbG+yNEIi2xi80a2RMw2T\n"
        "9RyCNB7yqCXXVKLBiwg9FbKMai6Vpk2bWIrzahM9on7AhCax/X2AeOp+UyYhFEy6\n"
        "UFG4aHb8THscL7b515ukSuKb5QKBgQDMq+9PuaB0eHsrmL6q4vHNi3MLgijGg/zu\n"
        "AXaPygSYAwYW8KglcuLZPvWrL6OG0+CrfmaWTLsyIZO4Uhdj7MLvX6yK7IMnagvk\n"
        "L3xjgxSklEHJAwi5wFeJ8ai/1MIuCn8p2re3CbwISKpvf7Sgs/W4196P4vKvTiAz\n"
        "jcTiSYFIKQKBgCjMpkS4O0TakMlGTmsFnqyOneLmu4NyIHgfPb9cA4n/9DHKLKAT\n"
        "oaWxBPgatOVWs7RgtyGYsk+XubHkpC6f3X0+15mGhFwJ+CSE6tN+l2iF9zp52vqP\n"
        "Qwkjzm7+pdhZbmaIpcq9m1K+9lqPWJRz/3XXuqi+5xWIZ7NaxGvRjqaNAoGAdK2b\n"
        "utZ2y48XoI3uPFsuP+A8kJX+CtWZrlE1NtmS7tnicdd19AtfmTuUL6fz0FwfW4Su\n"
        "lQZfPT/5B339CaEiq/Xd1kDor+J7rvUHM2+5p+1A54gMRGCLRv92FQ4EON0RC1o9\n"
        "m2I4SHysdO3XmjmdXmfp4BsgAKJIJzutvtbqlakCgYB+Cb10z37NJJ+WgjDt+yT2\n"
        "yUNH17EAYgWXryfRgTyi2POHuJitd64Xzuy6oBVs3wVveYFM6PIKXlj8/DahYX5I\n"
        "R2WIzoCNLL3bEZ+nC6Jofpb4kspoAeRporj29SgesK6QBYWHWX2H645RkRGYGpDo\n"
        "51gjy9m/hSNqBbH2zmh04A==\n"
        "-----END PRIVATE KEY-----\n"
    ),
    "client_email": "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
}
_CONFORMANCE_PREFIX = (
    "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=test-iam-credentials%40dummy-project-id"
    ".iam.gserviceaccount.com%2F{day}%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date={day}T090000Z"
)
CONFORMANCE_CASES = [
    pytest.param(
        "GET",
        "2019-02-01T09:00:00Z",
        10,
        {},
        "X-Goog-Expires=10&X-Goog-SignedHeaders=host",
        "95e6a13d43a1d1962e667f17397f2b80ac9bdd1669210d5e08e0135df9dff4e56113485dbe429ca2266487b9"
        "d1796ebdee2d7cf682a6ef3bb9fbb4c351686fba90d7b621cf1c4eb1fdf126460dd25fa0837dfdde0a9fd986"
        "62ce60844c458448fb2b352c203d9969cb74efa4bdb742287744a4f2308afa4af0e0773f55e32e9297361924"
        "9214b97283b2daa14195244444e33f938138d1e5f561088ce8011f4986dda33a556412594db7c12fc40e1ff3"
        "f1bedeb7a42f5bcda0b9567f17f65855f65071fabb88ea12371877f3f77f10e1466fff6ff6973b74a933322f"
        "f0949ce357e20abe96c3dd5cfab42c9c83e740a4d32b9e11e146f0eb3404d2e975896f74",
        id="simple-get",
    ),
    pytest.param(
        "GET",
        "2019-03-01T09:00:00Z",
        20,
        {},
        "X-Goog-Expires=20&X-Goog-SignedHeaders=host",
        "9669ed5b10664dc594c758296580662912cf4bcc5a4ba0b6bf055bcbf6f34eed7bdad664f534962174a92474"
        "1a0c273a4f67bc1847cef20192a6beab44223bd9d4fbbd749c407b79997598c30f82ddc269ff47ec09fa3afe"
        "74e00616d438df0d96a7d8ad0adacfad1dc3286f864d924fe919fb0dce45d3d975c5afe8e13af2db9cc37ba7"
        "7835f92f7669b61e94c6d562196c1274529e76cfff1564cc2cad7d5387dc8e12f7a5dfd925685fe92c30b437"
        "09eee29fa2f66067472cee5423d1a3a4182fe8cea75c9329d181dc6acad7c393cd04f8bf5bc0515127d8ebd6"
        "5d80c08e19ad03316053ea60033fd1b1fd85a69c576415da3bf0a3718d9ea6d03e0d66f0",
        id="vary-expiration-and-timestamp",
    ),
    pytest.param(
        "POST",
        "2019-02-01T09:00:00Z",
        10,
        {},
        "X-Goog-Expires=10&X-Goog-SignedHeaders=host%3Bx-goog-resumable",
        "4a6d39b23343cedf4c30782aed4b384001828c79ffa3a080a481ea01a640dea0a0ceb58d67a12cef3b243c3f"
        "036bb3799c6ee88e8db3eaf7d0bdd4b70a228d0736e07eaa1ee076aff5c6ce09dff1f1f03a0d8ead0d289340"
        "8dd3604fdabff553aa6d7af2da67cdba6790006a70240f96717b98f1a6ccb24f00940749599be7ef72aaa535"
        "8db63ddd54b2de9e2d6d6a586eac4fe25f36d86fc6ab150418e9c6fa01b732cded226c6d62fc95b72473a4cc"
        "55a8257482583fe66d9ab6ede909eb41516a8690946c3e87b0f2052eb0e97e012a14b2f721c42e6e19b8a1cd"
        "5658ea36264f10b9b1ada66b8ed5bf7ed7d1708377ac6e5fe608ae361fb594d2e5b24c54",
        id="resumable-post",
    ),
    pytest.param(
        "GET",
        "2019-02-01T09:00:00Z",
        10,
        {"prefix": "/foo", "X-Goog-Meta-Foo": "bar"},
        "X-Goog-Expires=10&X-Goog-Meta-Foo=bar&X-Goog-SignedHeaders=host&prefix=%2Ffoo",
        "a07745e1b3d59b85cbe11aa766df72c22468959e7217615dccb7f030234f66b60b37e480f30725ed51f29816"
        "362ca8286c619ebb66448ff1d370be2a4a48aacf20d3d2d6200ed17341a5791baf2ee5cd9c2823adacc6264f"
        "66c8a54fa887e1bce3c55cf78fb2f6a52618cf09d6f945f63d148052a7b66a75e075ff5065828a806b84bdc4"
        "9a42399be7483225c720d5e18a6160f79d815f433e7921694fe1d041099851793c2581db0e5ca503cfb566e4"
        "14f900ceede5f9b22030edd32ab20b6f7f9fb2afba89098b9364e03397c03a94eac3a140c99979b8786844fb"
        "4f6c62c1985378939dd1bbaea8e41b9100dda85a27733171cc78d96ee362ea2c3432f4d8",
        id="query-parameter-ordering",
    ),
]


@pytest.mark.parametrize(
    ("method", "timestamp", "expires", "params", "middle", "signature"), CONFORMANCE_CASES
)
async def test_matches_googles_conformance_vectors(
    method: str,
    timestamp: str,
    expires: int,
    params: dict[str, str],
    middle: str,
    signature: str,
) -> None:
    secrets = DictSecrets()
    secrets.put(SECRET_REF, {"service_account_key_json": json.dumps(CONFORMANCE_KEY)})
    at = datetime.fromisoformat(timestamp)
    factory = GcsSignerFactory(Settings(), secrets, clock=lambda: at)
    try:
        signer = await factory.build(gcs_bucket(name="test-bucket"), min_lifetime=expires)
        signed = signer.presign("test-object", method, expires, params=params)
    finally:
        await factory.aclose()
    day = at.strftime("%Y%m%d")
    expected = (
        "https://storage.googleapis.com/test-bucket/test-object?"
        f"{_CONFORMANCE_PREFIX.format(day=day)}&{middle}&X-Goog-Signature={signature}"
    )
    assert signed.url == expected
    assert signed.expires_at == at + timedelta(seconds=expires)


# -- static keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
async def test_static_key_signs_each_method(
    factory: GcsSignerFactory, sa_key: rsa.RSAPrivateKey, clock: WallClock, method: str
) -> None:
    signer = await static_signer(factory)
    assert isinstance(signer, BucketSigner)
    assert signer.signs_locally
    signed = signer.presign("study-1/sample.cram", method.lower(), 900)
    assert signed.method == method
    assert signed.headers == {}
    assert signed.expires_at == clock.now.replace(microsecond=0) + timedelta(seconds=900)
    query = verify_v4(signed, sa_key.public_key(), bucket="gen3-data", key="study-1/sample.cram")
    assert query["email"] == STATIC_EMAIL == signer.access_key_id
    assert query["X-Goog-SignedHeaders"] == "host"
    assert "userProject" not in query


async def test_resumable_upload_start_signs_the_resumable_header(
    factory: GcsSignerFactory, sa_key: rsa.RSAPrivateKey
) -> None:
    signer = await static_signer(factory)
    signed = await signer.apresign("uploads/big.bam", "POST", 3600)
    assert signed.method == "POST"
    assert signed.headers == {"x-goog-resumable": "start"}
    query = verify_v4(signed, sa_key.public_key(), bucket="gen3-data", key="uploads/big.bam")
    assert query["X-Goog-SignedHeaders"] == "host;x-goog-resumable"
    # A URL signed for POST says nothing about any other method.
    with pytest.raises(InvalidSignature):
        verify_v4(
            PresignedRequest(signed.url, "PUT", signed.expires_at, signed.headers),
            sa_key.public_key(),
            bucket="gen3-data",
            key="uploads/big.bam",
        )


@pytest.mark.parametrize(
    "key",
    [
        "dir/ünïcødé 文件.txt",
        "emoji/😀 party.vcf.gz",
        "a+b=c&d?e#f%g",
        "semi;colon,comma:colon@at!bang'quote(paren)*star$dollar[br]",
        "spaces  and ~tilde_-.dots/trailing/",
        "percent%2Falready-encoded",
    ],
)
async def test_keys_are_encoded_per_googles_rules(
    factory: GcsSignerFactory, sa_key: rsa.RSAPrivateKey, key: str
) -> None:
    signer = await static_signer(factory)
    signed = signer.presign(key, "GET", 60)
    verify_v4(signed, sa_key.public_key(), bucket="gen3-data", key=key)
    path = urlsplit(signed.url).path
    assert set(path) <= set(map(chr, UNRESERVED)) | {"/", "%"}


async def test_requester_pays_adds_the_billing_project(
    factory: GcsSignerFactory, sa_key: rsa.RSAPrivateKey
) -> None:
    signer = await static_signer(factory, requester_pays=True)
    query = verify_v4(
        signer.presign("k", "GET", 60), sa_key.public_key(), bucket="gen3-data", key="k"
    )
    # The key's own project pays unless a billing project is configured.
    assert query["userProject"] == "registry-project"
    chosen = signer.presign("k", "GET", 60, params={"userProject": "user-billing"})
    assert verify_v4(chosen, sa_key.public_key(), bucket="gen3-data", key="k")["userProject"] == (
        "user-billing"
    )


async def test_user_project_param_on_a_plain_bucket_and_configured_billing_project(
    gcs_secrets: DictSecrets, sa_key: rsa.RSAPrivateKey, clock: WallClock
) -> None:
    factory = GcsSignerFactory(Settings(), gcs_secrets, billing_project="gen3-billing", clock=clock)
    try:
        plain = await factory.build(gcs_bucket(), min_lifetime=60)
        rp = await factory.build(gcs_bucket(requester_pays=True), min_lifetime=60)
    finally:
        await factory.aclose()
    public = sa_key.public_key()
    signed = plain.presign("k", "GET", 60, params={"userProject": "someone"})
    assert verify_v4(signed, public, bucket="gen3-data", key="k")["userProject"] == "someone"
    signed = rp.presign("k", "GET", 60)
    assert verify_v4(signed, public, bucket="gen3-data", key="k")["userProject"] == "gen3-billing"


async def test_expiry_is_capped_at_seven_days(
    factory: GcsSignerFactory, sa_key: rsa.RSAPrivateKey
) -> None:
    signer = await static_signer(factory)
    week = signer.presign("k", "GET", 604800)
    assert verify_v4(week, sa_key.public_key(), bucket="gen3-data", key="k")["X-Goog-Expires"] == (
        "604800"
    )
    for expires_in in (604801, 0, -1):
        with pytest.raises(InvalidInput, match="expires_in"):
            signer.presign("k", "GET", expires_in)


async def test_rejects_other_methods_and_reserved_params(factory: GcsSignerFactory) -> None:
    signer = await static_signer(factory)
    with pytest.raises(InvalidInput, match="PATCH"):
        signer.presign("k", "PATCH", 60)
    with pytest.raises(InvalidInput, match="reserved"):
        signer.presign("k", "GET", 60, params={"X-Goog-Expires": "999999"})
    with pytest.raises(InvalidInput, match="not allowed"):
        signer.presign("k", "GET", 60, params={"na me": "x"})


async def test_multipart_calls_point_to_resumable_uploads(factory: GcsSignerFactory) -> None:
    signer = await static_signer(factory)
    with pytest.raises(InvalidInput, match="resumable"):
        signer.presign_upload_part("k", "upload", 1, 60)
    with pytest.raises(InvalidInput, match="resumable"):
        await signer.create_multipart_upload("k")
    with pytest.raises(InvalidInput, match="resumable"):
        await signer.complete_multipart_upload("k", "upload", [(1, "etag")])
    with pytest.raises(InvalidInput, match="resumable"):
        await signer.abort_multipart_upload("k", "upload")


async def test_signer_is_kept_while_the_secret_is_unchanged(
    factory: GcsSignerFactory, gcs_secrets: DictSecrets, google: GoogleApiStub
) -> None:
    bucket = gcs_bucket()
    first = await factory.build(bucket, min_lifetime=60)
    assert await factory.build(bucket, min_lifetime=60, previous=first) is first
    assert factory.fresh_enough(first, bucket, 604800)
    assert factory.ttl(first) == Settings().secret_cache_ttl

    rotated_key = new_rsa_key()
    rotated = service_account_key_json(STATIC_EMAIL, rotated_key, token_uri=f"{google.url}/token")
    gcs_secrets.put(SECRET_REF, {"service_account_key_json": rotated})
    second = await factory.build(bucket, min_lifetime=60, previous=first)
    assert second is not first
    verify_v4(second.presign("k", "GET", 60), rotated_key.public_key(), bucket="gen3-data", key="k")
    # A requester-pays switch changes the URLs, hence the signer.
    rp = gcs_bucket(requester_pays=True)
    assert await factory.build(rp, min_lifetime=60, previous=second) is not second


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "lacks service_account_key_json"),
        ({"service_account_key_json": "{not json"}, "not JSON"),
        ({"service_account_key_json": "[1]"}, "not a JSON object"),
        ({"service_account_key_json": json.dumps({"client_email": "a@b"})}, "lacks private_key"),
        (
            {"service_account_key_json": json.dumps({"client_email": "a@b", "private_key": "x"})},
            "not an unencrypted PEM",
        ),
        (
            {
                "service_account_key_json": json.dumps(
                    {"type": "authorized_user", "client_email": "a@b", "private_key": "x"}
                )
            },
            "type is not service_account",
        ),
    ],
)
async def test_unusable_secrets_are_named_not_quoted(
    payload: dict[str, str], reason: str, clock: WallClock
) -> None:
    secrets = DictSecrets()
    secrets.put(SECRET_REF, payload)
    factory = GcsSignerFactory(Settings(), secrets, clock=clock)
    with pytest.raises(SecretNotFound, match=reason) as caught:
        await factory.build(gcs_bucket(), min_lifetime=60)
    assert "BEGIN" not in caught.value.message
    await factory.aclose()


async def test_non_rsa_keys_are_refused(clock: WallClock) -> None:
    secrets = DictSecrets()
    pem = _ec_pem()
    key_json = json.dumps({"type": "service_account", "client_email": "a@b", "private_key": pem})
    secrets.put(SECRET_REF, {"service_account_key_json": key_json})
    factory = GcsSignerFactory(Settings(), secrets, clock=clock)
    with pytest.raises(SecretNotFound, match="not an RSA key") as caught:
        await factory.build(gcs_bucket(), min_lifetime=60)
    assert pem not in caught.value.message
    await factory.aclose()


async def test_signing_service_signs_static_gcs_buckets(
    factory: GcsSignerFactory, gcs_secrets: DictSecrets, sa_key: rsa.RSAPrivateKey
) -> None:
    service = StorageService(Settings(), gcs_secrets, factories={Provider.GCP: factory})
    try:
        signed = await service.presign(gcs_bucket(), "a/b c.txt", Op.WRITE, 120)
    finally:
        await service.aclose()
    assert signed.method == "PUT"
    verify_v4(signed, sa_key.public_key(), bucket="gen3-data", key="a/b c.txt")


# -- workload identity (IAM signBlob) --------------------------------------------------------


async def wi_signer(factory: GcsSignerFactory, **overrides: Any) -> GcsBucketSigner:
    signer = await factory.build(wi_bucket(**overrides), min_lifetime=3600)
    assert isinstance(signer, GcsBucketSigner)
    return signer


async def test_workload_identity_signs_through_sign_blob(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    iam_key = google.add_account(WI_EMAIL)
    signer = await wi_signer(factory)
    key = "cohort/ünï code.bam"
    assert not signer.signs_locally
    assert signer.credentials_expire_at is None
    for method in ("GET", "PUT", "DELETE", "HEAD", "POST"):
        signed = await signer.apresign(key, method, 3600)
        query = verify_v4(
            signed, iam_key.public_key(), bucket="gen3-data", key="cohort/ünï code.bam"
        )
        assert query["email"] == WI_EMAIL
    assert google.calls(f"{WI_EMAIL}:signBlob") == 5
    # The stub signed exactly the string-to-sign; no key ever reached the registry.
    assert all(blob.startswith(b"GOOG4-RSA-SHA256\n") for blob in google.signed)


async def test_workload_identity_has_no_synchronous_presign(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    google.add_account(WI_EMAIL)
    signer = await wi_signer(factory)
    with pytest.raises(AsyncSigningRequired, match="apresign"):
        signer.presign("k", "GET", 60)
    assert google.calls(":signBlob") == 0


async def test_workload_identity_requester_pays_uses_the_accounts_project(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    iam_key = google.add_account(WI_EMAIL)
    signer = await wi_signer(factory, requester_pays=True)
    signed = await signer.apresign("k", "GET", 60)
    query = verify_v4(signed, iam_key.public_key(), bucket="gen3-data", key="k")
    assert query["userProject"] == "commons-data"


async def test_sign_blob_permission_denied_is_explained(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    google.add_account(WI_EMAIL, impersonable=False)
    signer = await wi_signer(factory)
    with pytest.raises(IamSigningDenied, match="may not sign") as caught:
        await signer.apresign("k", "GET", 60)
    assert caught.value.status_code == 503
    assert "serviceAccountTokenCreator" in caught.value.message
    # Not an outage: one request, no retries.
    assert google.calls(":signBlob") == 1


async def test_sign_blob_503_is_retried(factory: GcsSignerFactory, google: GoogleApiStub) -> None:
    iam_key = google.add_account(WI_EMAIL)
    google.fail_next = [503, 429]
    signer = await wi_signer(factory)
    signed = await signer.apresign("k", "GET", 60)
    verify_v4(signed, iam_key.public_key(), bucket="gen3-data", key="k")
    assert google.calls(":signBlob") == 3


async def test_persistent_sign_blob_outage_is_dependency_unavailable(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    google.add_account(WI_EMAIL)
    google.fail_always = 503
    signer = await wi_signer(factory)
    with pytest.raises(DependencyUnavailable) as caught:
        await signer.apresign("k", "GET", 60)
    assert caught.value.dependency == "iam"
    assert "3 attempts" in caught.value.message
    assert google.calls(":signBlob") == 3


async def test_unreachable_iam_is_dependency_unavailable(
    gcs_secrets: DictSecrets, pod_tokens: PodTokens, clock: WallClock
) -> None:
    factory = GcsSignerFactory(
        Settings(),
        gcs_secrets,
        iam_endpoint=f"http://127.0.0.1:{free_port()}",
        token_provider=pod_tokens,
        clock=clock,
        max_attempts=2,
        backoff=0.001,
    )
    try:
        signer = await wi_signer(factory)
        with pytest.raises(DependencyUnavailable, match="ConnectError") as caught:
            await signer.apresign("k", "GET", 60)
    finally:
        await factory.aclose()
    assert caught.value.dependency == "iam"


async def test_revoked_pod_token_is_refreshed_once(
    factory: GcsSignerFactory, google: GoogleApiStub, pod_tokens: PodTokens
) -> None:
    iam_key = google.add_account(WI_EMAIL)
    google.revoke_pod_tokens()
    signer = await wi_signer(factory)
    signed = await signer.apresign("k", "GET", 60)
    verify_v4(signed, iam_key.public_key(), bucket="gen3-data", key="k")
    assert pod_tokens.refreshes == 1


async def test_concurrent_sign_blob_calls_share_one_client(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    iam_key = google.add_account(WI_EMAIL)
    other = f"other-{WI_EMAIL}"
    other_key = google.add_account(other)
    a = await wi_signer(factory)
    b = await wi_signer(factory, name="gen3-other", service_account=other)
    results = await asyncio.gather(
        *(signer.apresign(f"k{i}", "GET", 60) for i in range(10) for signer in (a, b))
    )
    for i, signed in enumerate(results):
        key, public = (iam_key, a) if i % 2 == 0 else (other_key, b)
        verify_v4(signed, key.public_key(), bucket=public.bucket_name, key=f"k{i // 2}")
    assert a._apis is b._apis is factory.apis


async def test_missing_service_account_is_reported(factory: GcsSignerFactory) -> None:
    with pytest.raises(DependencyUnavailable, match="no service_account"):
        await factory.build(wi_bucket(service_account=None), min_lifetime=60)


# -- validation: list one object through the JSON API -----------------------------------------


async def test_static_list_one_uses_a_token_from_the_key(
    factory: GcsSignerFactory, google: GoogleApiStub, sa_key: rsa.RSAPrivateKey
) -> None:
    google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
    google.add_bucket("gen3-data", readers={STATIC_EMAIL})
    signer = await static_signer(factory)
    await signer.list_one()
    await signer.head_bucket()
    # One token exchange, reused by the second call.
    assert google.calls("/token") == 1
    listing = [r for r in google.requests if r[1] == "/storage/v1/b/gen3-data/o"]
    assert len(listing) == 2
    assert "maxResults=1" in listing[0][2]


async def test_a_key_files_token_uri_is_never_called(
    factory: GcsSignerFactory,
    google: GoogleApiStub,
    gcs_secrets: DictSecrets,
    sa_key: rsa.RSAPrivateKey,
) -> None:
    # A project member may submit the key file: where it says to send the signed assertion is
    # not the registry's to follow (it could name the metadata server or an internal service).
    trap = GoogleApiStub().start()
    try:
        key_json = service_account_key_json(STATIC_EMAIL, sa_key, token_uri=f"{trap.url}/token")
        gcs_secrets.put(SECRET_REF, {"service_account_key_json": key_json})
        google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
        google.add_bucket("gen3-data", readers={STATIC_EMAIL})
        await (await static_signer(factory)).list_one()
        assert google.calls("/token") == 1
        assert trap.requests == []
    finally:
        trap.stop()


async def test_list_one_reports_missing_and_forbidden_buckets(
    factory: GcsSignerFactory, google: GoogleApiStub, sa_key: rsa.RSAPrivateKey
) -> None:
    google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
    google.add_bucket("gen3-other", readers={"someone@else"})
    missing = await static_signer(factory)
    with pytest.raises(DependencyUnavailable, match="does not exist") as caught:
        await missing.list_one()
    assert caught.value.dependency == "storage"
    forbidden = await static_signer(factory, name="gen3-other")
    with pytest.raises(DependencyUnavailable, match="may not list gen3-other"):
        await forbidden.list_one()


async def test_delete_object_writes_with_its_own_scope_and_tells_missing_from_refused(
    factory: GcsSignerFactory, google: GoogleApiStub, sa_key: rsa.RSAPrivateKey
) -> None:
    google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
    state = google.add_bucket("gen3-data", readers=set())
    state.admins.add(STATIC_EMAIL)
    state.data["probe/a b/c"] = b"x"
    signer = await static_signer(factory)
    await signer.list_one()
    # Listing ran on a read-only token; the delete needed (and got) one that may write.
    assert await signer.delete_object("probe/a b/c") is True
    assert state.data == {}
    assert await signer.delete_object("probe/a b/c") is False
    scopes = set(google.token_scopes.values())
    assert {frozenset({"https://www.googleapis.com/auth/devstorage.read_only"})} < scopes
    state.admins.discard(STATIC_EMAIL)
    state.creators.add(STATIC_EMAIL)
    state.data["kept"] = b"x"
    with pytest.raises(DependencyUnavailable, match=r"may not delete kept .*HTTP 403"):
        await signer.delete_object("kept")
    assert state.data == {"kept": b"x"}


async def test_list_one_sends_user_project_for_requester_pays(
    factory: GcsSignerFactory, google: GoogleApiStub, sa_key: rsa.RSAPrivateKey
) -> None:
    google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
    google.add_bucket("gen3-data", readers={STATIC_EMAIL}, requester_pays=True)
    signer = await static_signer(factory, requester_pays=True)
    await signer.list_one()
    assert "userProject=registry-project" in google.requests[-1][2]


async def test_workload_identity_list_one_runs_as_the_service_account(
    factory: GcsSignerFactory, google: GoogleApiStub
) -> None:
    google.add_account(WI_EMAIL)
    google.add_bucket("gen3-data", readers={WI_EMAIL})
    signer = await wi_signer(factory)
    await signer.list_one()
    assert google.calls(f"{WI_EMAIL}:generateAccessToken") == 1


async def test_list_one_outage_is_dependency_unavailable(
    factory: GcsSignerFactory, google: GoogleApiStub, sa_key: rsa.RSAPrivateKey
) -> None:
    google.add_account(STATIC_EMAIL, sa_key, impersonable=False)
    google.add_bucket("gen3-data", readers={STATIC_EMAIL})
    signer = await static_signer(factory)
    await signer.list_one()  # the token is fetched before the outage
    google.fail_always = 500
    with pytest.raises(DependencyUnavailable, match="after 3 attempts") as caught:
        await signer.list_one()
    assert caught.value.dependency == "storage"


# -- access tokens from google-auth ----------------------------------------------------------


class _FakeCredentials:
    """google-auth credentials whose refresh blocks, records its thread and counts calls."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.refreshes = 0
        self.threads: set[int] = set()

    @property
    def valid(self) -> bool:
        return self.token is not None

    def refresh(self, _request: Any) -> None:
        time.sleep(0.05)
        self.threads.add(threading.get_ident())
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"


async def test_google_auth_tokens_refresh_off_the_loop_once() -> None:
    credentials = _FakeCredentials()
    tokens = GoogleAuthTokens(lambda: credentials, describe="test identity")
    got = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert got == ["token-1"] * 5
    assert credentials.refreshes == 1
    assert threading.get_ident() not in credentials.threads
    assert await tokens.token(force_refresh=True) == "token-2"


async def test_google_auth_errors_become_dependency_unavailable() -> None:
    def no_identity() -> Any:
        raise DefaultCredentialsError("secret detail")

    tokens = GoogleAuthTokens(no_identity, describe="the registry's Google identity")
    with pytest.raises(DependencyUnavailable, match="DefaultCredentialsError") as caught:
        await tokens.token()
    assert "secret detail" not in caught.value.message
