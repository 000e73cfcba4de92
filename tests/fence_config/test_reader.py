"""Parsing fence-config.yaml: every form Fence accepts, and errors that name the entry."""

from __future__ import annotations

import pytest

from app.fence_config.reader import FenceConfigError, parse_fence_config
from tests.migration.conftest import FIXTURE, KEY_VALUES


def problems_of(text: str) -> list[str]:
    with pytest.raises(FenceConfigError) as caught:
        parse_fence_config(text)
    return caught.value.problems


def test_the_fixture_parses_into_typed_entries() -> None:
    config = parse_fence_config(FIXTURE.read_text())

    assert set(config.aws_credentials) == {"CRED1", "CRED2", "cleversafe", "unused"}
    assert config.aws_credentials["CRED1"].has_keys
    assert not config.aws_credentials["unused"].has_keys
    entries = {entry.key: entry for entry in config.s3_buckets}
    assert entries["commons-public-refs"].is_public
    assert entries["commons-role-data"].role_arn.endswith(":role/commons-presigned-url")
    assert entries["onprem-archive"].endpoint_url == "https://cleversafe.example.org/"
    assert entries["commons-requester-pays"].requester_pays is True
    assert entries["commons-sequencing-.*"].is_pattern
    assert not entries["commons-data"].is_pattern
    assert [gs.name for gs in config.gs_buckets] == ["commons-gcs-data", "commons-gcs-archive"]
    assert config.allowed_upload_buckets == ("commons-uploads", "minio-scratch")
    assert config.data_upload_bucket == "commons-uploads"
    assert config.upload_allowed("commons-uploads") and not config.upload_allowed("commons-data")


def test_keys_are_matched_as_fence_does_exact_first_then_patterns() -> None:
    config = parse_fence_config(FIXTURE.read_text())

    assert config.s3_entry_for("commons-data").key == "commons-data"
    assert config.s3_entry_for("commons-sequencing-run7").key == "commons-sequencing-.*"
    # Matched as ^key$: a prefix or suffix match is not enough.
    assert config.s3_entry_for("xcommons-sequencing-1") is None
    assert config.s3_entry_for("unknown") is None


def test_key_values_never_show_in_the_repr() -> None:
    config = parse_fence_config(FIXTURE.read_text())
    text = repr(config)
    assert not any(value in text for value in KEY_VALUES if "secret" in value)


def test_an_empty_or_bucketless_file_is_fine() -> None:
    assert parse_fence_config("").s3_buckets == ()
    config = parse_fence_config("APP_NAME: x\nS3_BUCKETS: {}\nAWS_CREDENTIALS: {}\n")
    assert config.s3_buckets == () and config.data_upload_bucket is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "S3_BUCKETS:\n  my-bucket:\n    cred: x\n",
            "S3_BUCKETS.my-bucket: cred 'x' not in AWS_CREDENTIALS",
        ),
        ("S3_BUCKETS:\n  my-bucket:\n    region: us-east-1\n", "S3_BUCKETS.my-bucket: cred is"),
        ("S3_BUCKETS:\n  my-bucket: nope\n", "S3_BUCKETS.my-bucket: must be a mapping"),
        ("S3_BUCKETS: [a, b]\n", "S3_BUCKETS: must be a mapping"),
        (
            "S3_BUCKETS:\n  'bad-[':\n    cred: '*'\n",
            "S3_BUCKETS.bad-[: not a valid regular expression",
        ),
        (
            "S3_BUCKETS:\n  b1:\n    cred: '*'\n    requester_pays: 'yes please'\n",
            "S3_BUCKETS.b1: requester_pays must be true or false",
        ),
        ("ALLOWED_DATA_UPLOAD_BUCKETS: b1\n", "ALLOWED_DATA_UPLOAD_BUCKETS: must be a list"),
        (
            "S3_BUCKETS:\n  same:\n    cred: '*'\nGS_BUCKETS:\n  same: {}\n",
            "GS_BUCKETS.same: also in S3_BUCKETS",
        ),
        (
            "S3_BUCKETS:\n  b1:\n    cred: '*'\n    registry: {colour: red}\n",
            "S3_BUCKETS.b1.registry: unknown fields ['colour']",
        ),
    ],
)
def test_malformed_entries_are_named(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("fence-config.yaml: ") for problem in problems)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        "S3_BUCKETS:\n  a:\n    cred: x\n  b:\n    cred: y\nDATA_UPLOAD_BUCKET: [1]\n"
    )
    assert len(problems) == 3


def test_errors_never_quote_a_key_value() -> None:
    text = (
        "AWS_CREDENTIALS:\n  C:\n    aws_access_key_id: AKIAEXAMPLE\n"
        "    aws_secret_access_key: 123456789\n"
    )
    problems = problems_of(text)
    assert problems == [
        "fence-config.yaml: AWS_CREDENTIALS.C: aws_secret_access_key must be a string"
    ]
    assert "123456789" not in "\n".join(problems)


def test_invalid_yaml_names_the_line_without_quoting_it() -> None:
    text = "AWS_CREDENTIALS:\n  C:\n    aws_secret_access_key: 's3cr3t-value\n  next: 1\n"
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("fence-config.yaml: invalid YAML at line")
    assert "s3cr3t-value" not in problems[0]


def test_fence_warnings_are_kept_not_fatal() -> None:
    config = parse_fence_config(
        "S3_BUCKETS:\n  b1:\n    cred: '*'\n    role_arn: arn:aws:iam::123456789012:role/x\n"
        "ALLOWED_DATA_UPLOAD_BUCKETS: [elsewhere]\n"
    )
    assert any("'role-arn', not 'role_arn'" in warning for warning in config.warnings)
    assert any("'elsewhere' is not configured in S3_BUCKETS" in w for w in config.warnings)
