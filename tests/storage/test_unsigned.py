"""Unsigned URLs and attribution parameters: the formats S3, S3-compatible stores and GCS take."""

from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.registry.records import AuthMode, Provider
from app.storage.unsigned import unsigned_url, validated_audit
from tests.storage.conftest import make_bucket as bucket_record


@pytest.mark.parametrize(
    ("overrides", "key", "url"),
    [
        (
            {"provider": Provider.AWS, "region": "eu-west-1", "name": "commons-refs"},
            "hg38/chr 1.fa",
            "https://commons-refs.s3.eu-west-1.amazonaws.com/hg38/chr%201.fa",
        ),
        (
            {"provider": Provider.AWS, "region": None, "name": "commons-refs"},
            "a+b/ü~x",
            "https://commons-refs.s3.amazonaws.com/a%2Bb/%C3%BC~x",
        ),
        (
            # A dotted name breaks the wildcard certificate of the virtual host: path style.
            {"provider": Provider.AWS, "region": "us-east-2", "name": "data.commons.org"},
            "k",
            "https://s3.us-east-2.amazonaws.com/data.commons.org/k",
        ),
        (
            {"provider": Provider.MINIO, "endpoint": "https://minio.example.org:9000/"},
            "incoming/x?y#z",
            "https://minio.example.org:9000/data-bucket/incoming/x%3Fy%23z",
        ),
        (
            {
                "provider": Provider.GCP,
                "auth_mode": AuthMode.WORKLOAD_IDENTITY,
                "name": "gen3-gcs",
            },
            "d/e f",
            "https://storage.googleapis.com/gen3-gcs/d/e%20f",
        ),
    ],
)
def test_unsigned_url_formats(overrides: dict[str, object], key: str, url: str) -> None:
    assert unsigned_url(bucket_record(**overrides), key) == url


def test_signing_identity_is_what_the_registration_names() -> None:
    keyless = bucket_record(
        provider=Provider.AWS, auth_mode=AuthMode.WORKLOAD_IDENTITY, secret_ref=None
    )
    assert not keyless.has_signing_identity
    assert bucket_record().has_signing_identity
    role = bucket_record(
        provider=Provider.AWS, auth_mode=AuthMode.ROLE, secret_ref=None, role_arn="arn:x"
    )
    assert role.has_signing_identity
    gcs = bucket_record(
        provider=Provider.GCP, auth_mode=AuthMode.WORKLOAD_IDENTITY, secret_ref=None
    )
    assert not gcs.has_signing_identity


def test_audit_values_are_bounded_and_plain() -> None:
    good = {"user_id": "17", "username": "first.last@example.org", "client_id": "Abc_123-x"}
    assert dict(validated_audit(good)) == good
    for bad in (
        {"user": "x"},
        {"username": ""},
        {"username": "u" * 257},
        {"username": "a&b"},
        {"username": "a=b"},
        {"username": "a%26b"},
        {"username": "a b"},
        {"username": "a\nb"},
        {"username": "ä"},
        {"user_id": 17},
    ):
        with pytest.raises(InvalidInput):
            validated_audit(bad)  # type: ignore[arg-type]
