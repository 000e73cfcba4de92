"""Our fast path signs exactly what botocore's ``generate_presigned_url`` signs, byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from app.config import Settings
from app.registry.records import AuthMode, Op, Provider
from app.storage.service import StorageService
from tests.storage.conftest import STATIC_KEY_ID, STATIC_SECRET, DictSecrets, make_bucket

FROZEN = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)

KEYS = [
    "plain.bam",
    "with space/and  two.txt",
    "ünïcødé/файл/文件.vcf",
    "a+b",
    "100%/%41",
    "~tilde/x~y",
    "emoji 🧬/x",
    "q?x&y=z#frag;p=1",
    "dir/sub/",
    "*'()!$,@:=",
]

BUCKETS: dict[str, dict[str, Any]] = {
    "aws-us-east-1": {"provider": Provider.AWS, "name": "data-bucket", "region": "us-east-1"},
    "aws-eu-west-1": {"provider": Provider.AWS, "name": "eu-bucket", "region": "eu-west-1"},
    "aws-dotted": {"provider": Provider.AWS, "name": "my.dotted.bucket", "region": "eu-west-1"},
    "aws-no-region": {"provider": Provider.AWS, "name": "data-bucket", "region": None},
    "minio": {
        "provider": Provider.MINIO,
        "name": "minio-bucket",
        "region": "us-east-1",
        "endpoint": "http://127.0.0.1:9000",
    },
    "s3-compatible-with-path": {
        "provider": Provider.S3_COMPATIBLE,
        "name": "ceph-bucket",
        "region": "default",
        "endpoint": "https://objects.example.org/s3",
    },
}


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeze the clock botocore's signers read (the edge; nothing else is patched)."""
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime",
        lambda remove_tzinfo=True: FROZEN.replace(tzinfo=None),
    )


@pytest.fixture
async def frozen_service(secrets: DictSecrets) -> AsyncIterator[StorageService]:
    signing = StorageService(Settings(), secrets, clock=lambda: FROZEN)
    yield signing
    await signing.aclose()


def reference_client(bucket_fields: dict[str, Any], session_token: str | None = None) -> Any:
    endpoint = bucket_fields.get("endpoint")
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"} if endpoint else None)
    return botocore.session.Session().create_client(
        "s3",
        region_name=bucket_fields.get("region") or "us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=STATIC_KEY_ID,
        aws_secret_access_key=STATIC_SECRET,
        aws_session_token=session_token,
        config=config,
    )


@pytest.mark.parametrize("bucket_case", list(BUCKETS))
@pytest.mark.parametrize(
    ("method", "client_method"),
    [("GET", "get_object"), ("PUT", "put_object"), ("DELETE", "delete_object")],
)
async def test_object_urls_are_byte_identical(
    frozen_botocore: None,
    frozen_service: StorageService,
    bucket_case: str,
    method: str,
    client_method: str,
) -> None:
    fields = BUCKETS[bucket_case]
    signer = await frozen_service.signer_for(make_bucket(**fields), min_lifetime=900)
    client = reference_client(fields)
    for key in KEYS:
        ours = signer.presign(key, method, 900)
        theirs = client.generate_presigned_url(
            client_method, Params={"Bucket": fields["name"], "Key": key}, ExpiresIn=900
        )
        assert ours.url == theirs, key
        assert ours.method == method
        assert ours.expires_at == datetime(2025, 3, 14, 15, 24, 26, tzinfo=UTC)


@pytest.mark.parametrize("bucket_case", ["aws-us-east-1", "minio"])
async def test_upload_part_urls_are_byte_identical(
    frozen_botocore: None, frozen_service: StorageService, bucket_case: str
) -> None:
    fields = BUCKETS[bucket_case]
    signer = await frozen_service.signer_for(make_bucket(**fields), min_lifetime=3600)
    client = reference_client(fields)
    for key in KEYS:
        for upload_id, part in [("2~abc/DEF+ghi=", 7), ("plain", 1), ("x y", 10_000)]:
            ours = signer.presign_upload_part(key, upload_id, part, 3600)
            # botocore lays query parameters out in the caller's order; ours is this one.
            theirs = client.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": fields["name"],
                    "Key": key,
                    "PartNumber": part,
                    "UploadId": upload_id,
                },
                ExpiresIn=3600,
            )
            assert ours.url == theirs, (key, upload_id)


async def test_extra_query_parameters_are_signed_like_botocore(
    frozen_botocore: None, frozen_service: StorageService
) -> None:
    fields = BUCKETS["aws-us-east-1"]
    signer = await frozen_service.signer_for(make_bucket(**fields), min_lifetime=60)
    disposition = 'attachment; filename="ü b.bam"'
    ours = signer.presign("x.bam", "GET", 60, params={"response-content-disposition": disposition})
    theirs = reference_client(fields).generate_presigned_url(
        "get_object",
        Params={
            "Bucket": fields["name"],
            "Key": "x.bam",
            "ResponseContentDisposition": disposition,
        },
        ExpiresIn=60,
    )
    assert ours.url == theirs


async def test_session_token_is_carried_like_botocore(
    frozen_botocore: None, secrets: DictSecrets
) -> None:
    token = "FwoGZXIvYXdzEJr//////////wEaDO+token/with=chars"
    secrets.put(
        "file:///secrets/with-token",
        {
            "access_key_id": STATIC_KEY_ID,
            "secret_access_key": STATIC_SECRET,
            "session_token": token,
        },
    )
    fields = {**BUCKETS["aws-us-east-1"], "secret_ref": "file:///secrets/with-token"}
    signing = StorageService(Settings(), secrets, clock=lambda: FROZEN)
    try:
        signer = await signing.signer_for(make_bucket(**fields), min_lifetime=60)
        ours = signer.presign("k", "GET", 60)
    finally:
        await signing.aclose()
    theirs = reference_client(fields, token).generate_presigned_url(
        "get_object", Params={"Bucket": fields["name"], "Key": "k"}, ExpiresIn=60
    )
    assert ours.url == theirs
    assert "X-Amz-Security-Token=" in ours.url


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
async def test_aws_buckets_without_endpoint_honour_the_endpoint_variables(
    frozen_botocore: None,
    secrets: DictSecrets,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:9555")
    bucket = make_bucket(provider=Provider.AWS, endpoint=None, auth_mode=AuthMode.STATIC)
    signing = StorageService(Settings(), secrets, clock=lambda: FROZEN)
    try:
        signer = await signing.signer_for(bucket, min_lifetime=60)
        ours = signer.presign("k", "GET", 60)
    finally:
        await signing.aclose()
    assert ours.url.startswith("http://127.0.0.1:9555/data-bucket/k?")
    theirs = reference_client({"region": "us-east-1"}).generate_presigned_url(
        "get_object", Params={"Bucket": "data-bucket", "Key": "k"}, ExpiresIn=60
    )
    assert ours.url == theirs


async def test_aws_default_is_virtual_hosted_and_sigv4(frozen_service: StorageService) -> None:
    signer = await frozen_service.signer_for(make_bucket(provider=Provider.AWS), min_lifetime=60)
    url = signer.presign("k", "GET", 60).url
    assert url.startswith("https://data-bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256")
    assert "AWSAccessKeyId" not in url


class BotocoreQuerySigner:
    """botocore's own S3 query signer on a request to the same URL: the reference for URLs
    ``generate_presigned_url`` cannot express (query parameters it would send as headers)."""

    def __init__(self, fields: dict[str, Any], session_token: str | None = None) -> None:
        probe = reference_client(fields).generate_presigned_url(
            "get_object", Params={"Bucket": fields["name"], "Key": "k"}
        )
        self.base_url = probe.partition("?")[0][: -len("k")]
        self.region = parse_qs(urlsplit(probe).query)["X-Amz-Credential"][0].split("/")[2]
        self.credentials = ReadOnlyCredentials(STATIC_KEY_ID, STATIC_SECRET, session_token)

    def sign(self, key: str, method: str, expires: int, params: dict[str, str]) -> str:
        url = self.base_url + quote(key.encode(), safe="/~")
        request = AWSRequest(method=method, url=url, params=dict(params))
        S3SigV4QueryAuth(self.credentials, "s3", self.region, expires=expires).add_auth(request)
        return str(request.url)


AUDIT = {"user_id": "42", "username": "alice@example.org", "client_id": "fence-client"}


@pytest.mark.parametrize("bucket_case", list(BUCKETS))
@pytest.mark.parametrize(
    ("requester_pays", "audit"),
    [(True, None), (False, AUDIT), (True, AUDIT), (True, {"username": "x~y_z.1-2"})],
    ids=["requester-pays", "audit", "both", "one-audit-param"],
)
@pytest.mark.parametrize("session_token", [None, "FwoGZXIvYXdz//+token/with=chars"])
async def test_signed_query_parameters_match_botocore_signer(
    frozen_botocore: None,
    secrets: DictSecrets,
    bucket_case: str,
    requester_pays: bool,
    audit: dict[str, str] | None,
    session_token: str | None,
) -> None:
    """Requester-pays and audit parameters through ``StorageService.presign``, path-style and
    virtual-host buckets, with and without a session token, for every awkward key."""
    payload = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}
    if session_token is not None:
        payload["session_token"] = session_token
    secrets.put("file:///secrets/params", payload)
    fields = {**BUCKETS[bucket_case], "secret_ref": "file:///secrets/params"}
    bucket = make_bucket(**fields, requester_pays=requester_pays)
    signing = StorageService(Settings(), secrets, clock=lambda: FROZEN)
    expected_params = {"x-amz-request-payer": "requester"} if requester_pays else {}
    reference = BotocoreQuerySigner(fields, session_token)
    try:
        for key in KEYS:
            for op, method in ((Op.READ, "GET"), (Op.WRITE, "PUT")):
                ours = await signing.presign(bucket, key, op, 900, audit=audit)
                # Audit parameters go on downloads only, as Fence signs them.
                params = {**expected_params, **(audit if audit and method == "GET" else {})}
                theirs = reference.sign(key, method, 900, params)
                assert ours.url == theirs, (key, method)
    finally:
        await signing.aclose()


@pytest.mark.parametrize("bucket_case", ["aws-us-east-1", "aws-dotted", "s3-compatible-with-path"])
async def test_signing_across_midnight_derives_each_days_key(
    secrets: DictSecrets, monkeypatch: pytest.MonkeyPatch, bucket_case: str
) -> None:
    """The signing key is derived once per day: a URL signed after midnight uses the new one."""
    fields = BUCKETS[bucket_case]
    now = [datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC)]
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime", lambda remove_tzinfo=True: now[0].replace(tzinfo=None)
    )
    reference = reference_client(fields)
    signing = StorageService(Settings(), secrets, clock=lambda: now[0])
    try:
        signer = await signing.signer_for(make_bucket(**fields), min_lifetime=60)
        for moment in (now[0], datetime(2025, 3, 15, 0, 0, 1, tzinfo=UTC)):
            now[0] = moment
            ours = signer.presign("ünï/k ey", "GET", 60).url
            theirs = reference.generate_presigned_url(
                "get_object", Params={"Bucket": fields["name"], "Key": "ünï/k ey"}, ExpiresIn=60
            )
            assert ours == theirs
            assert f"%2F{moment:%Y%m%d}%2F" in ours
    finally:
        await signing.aclose()
