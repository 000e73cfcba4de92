"""Secret references and the payload type."""

from __future__ import annotations

import pickle
import traceback

import pytest

from app.errors import InvalidInput, SecretNotFound
from app.secrets.base import (
    SecretPayload,
    SecretRef,
    backend_scheme,
    parse_secret_ref,
    payload_from_json,
    validate_secret_version,
)

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gen3/bucket-creds-AbCdEf"


@pytest.mark.parametrize(
    ("raw", "scheme", "location"),
    [
        ("aws-sm://gen3/bucket-creds", "aws-sm", "gen3/bucket-creds"),
        (f"aws-sm://{ARN}", "aws-sm", ARN),
        (ARN, "aws-sm", ARN),
        (
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x-AbCdEf",
            "aws-sm",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x-AbCdEf",
        ),
        (
            "gcp-sm://projects/my-proj/secrets/bucket_key",
            "gcp-sm",
            "projects/my-proj/secrets/bucket_key",
        ),
        ("vault://secret/gen3/buckets/data-a", "vault", "secret/gen3/buckets/data-a"),
        ("k8s://gen3/bucket-creds.v1", "k8s", "gen3/bucket-creds.v1"),
        ("file:///etc/bucket-registry/creds.json", "file", "/etc/bucket-registry/creds.json"),
    ],
)
def test_valid_refs(raw: str, scheme: str, location: str) -> None:
    ref = parse_secret_ref(raw, "aws_sm")
    assert ref == SecretRef(scheme, location, raw)
    assert str(ref) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "non-empty"),
        (" aws-sm://x", "whitespace"),
        ("aws-sm://x ", "whitespace"),
        ("aws-sm://a b", "whitespace"),
        ("aws-sm://x\n", "whitespace"),
        ("aws-sm://x\x00", "control"),
        ("aws-sm://x\x7f", "control"),
        ("s3://bucket/key", "unknown secret_ref scheme 's3'"),
        ("AWS-SM://x", "unknown secret_ref scheme"),
        ("just-a-name", "scheme://location"),
        ("arn:aws:s3:::bucket", "scheme://location"),
        ("aws-sm://", "aws-sm:// must be followed"),
        ("aws-sm://bad*name", "aws-sm:// must be followed"),
        ("gcp-sm://my-proj/bucket_key", "projects/<project>/secrets/<secret>"),
        ("gcp-sm://projects/p/secrets/s/versions/3", "projects/<project>/secrets/<secret>"),
        ("vault://secret", "<kv-v2 mount>/<path>"),
        ("vault://secret//x", "<kv-v2 mount>/<path>"),
        ("vault://secret/../sys", "<kv-v2 mount>/<path>"),
        ("vault://secret/x?version=2", "<kv-v2 mount>/<path>"),
        ("k8s://gen3", "<namespace>/<secret name>"),
        ("k8s://Gen3/creds", "<namespace>/<secret name>"),
        ("k8s://gen3/creds/extra", "<namespace>/<secret name>"),
        ("k8s://gen3/creds#access_key_id", "drop the #fragment"),
        ("file://relative/path.json", "absolute path"),
        ("file://host/etc/x.json", "absolute path"),
        ("file:///etc/../root/x.json", "'..'"),
        ("x" * 3000, "at most"),
    ],
)
def test_invalid_refs_say_why(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_secret_ref(raw, "aws_sm")
    assert message in caught.value.message
    assert caught.value.status_code == 400


def test_bare_arn_needs_an_aws_default_backend() -> None:
    assert parse_secret_ref(ARN, "aws-sm").scheme == "aws-sm"
    with pytest.raises(InvalidInput, match="aws-sm://<arn>"):
        parse_secret_ref(ARN, "vault")
    assert parse_secret_ref(f"aws-sm://{ARN}", "vault").scheme == "aws-sm"


def test_unknown_default_backend_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown secrets backend"):
        backend_scheme("keepass")
    assert backend_scheme("aws_sm") == "aws-sm"
    assert backend_scheme("kubernetes") == "k8s"


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        ("aws-sm://x", None),
        ("aws-sm://x", "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"),
        ("gcp-sm://projects/p/secrets/s", "7"),
        ("gcp-sm://projects/p/secrets/s", "prod-alias"),
        ("vault://secret/x", "12"),
        ("k8s://gen3/creds", "4711"),
        ("file:///x.json", None),
    ],
)
def test_valid_versions(raw: str, version: str | None) -> None:
    validate_secret_version(parse_secret_ref(raw, "aws_sm"), version)


@pytest.mark.parametrize(
    ("raw", "version", "message"),
    [
        ("aws-sm://x", "v1", "VersionId"),
        ("aws-sm://x", "", "non-empty"),
        ("vault://secret/x", "0", "positive integer"),
        ("vault://secret/x", "latest", "positive integer"),
        ("gcp-sm://projects/p/secrets/s", "0", "version number or alias"),
        ("k8s://gen3/creds", "12 3", "whitespace"),
        ("file:///x.json", "1", "not versioned"),
    ],
)
def test_invalid_versions(raw: str, version: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_secret_version(parse_secret_ref(raw, "aws_sm"), version)


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_payload_repr_and_str_show_keys_only() -> None:
    payload = SecretPayload({"access_key_id": "AKIA-TEST", "secret_access_key": SECRET}, "v7")
    for text in (repr(payload), str(payload), f"{payload}", f"{payload!r}", repr([payload])):
        assert SECRET not in text
        assert "AKIA-TEST" not in text
        assert "secret_access_key" in text
    assert payload["secret_access_key"] == SECRET
    assert payload == {"access_key_id": "AKIA-TEST", "secret_access_key": SECRET}
    assert dict(payload)["access_key_id"] == "AKIA-TEST"
    assert payload.version == "v7"
    assert len(payload) == 2


def test_payload_is_immutable_and_not_picklable() -> None:
    source = {"k": SECRET}
    payload = SecretPayload(source)
    source["k"] = "changed"
    assert payload["k"] == SECRET
    with pytest.raises(TypeError):
        payload["k"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        payload.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        pickle.dumps(payload)


@pytest.mark.parametrize(
    "document",
    [
        f"not json {SECRET}",
        f'["{SECRET}"]',
        f'{{"nested": {{"secret_access_key": "{SECRET}"}}}}',
        b"\xff\xfe" + SECRET.encode(),
    ],
)
def test_payload_errors_never_quote_the_document(document: str | bytes) -> None:
    ref = parse_secret_ref("aws-sm://x", "aws_sm")
    with pytest.raises(SecretNotFound) as caught:
        payload_from_json(document, ref, None)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert SECRET not in "".join(traceback.format_exception(caught.value))
