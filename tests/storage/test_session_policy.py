"""Session policies grant exactly the asked actions under the asked prefix: property tests with
adversarial prefixes and keys, judged by the IAM evaluator in tests/support/iam_policy.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.storage.session_policy import (
    LIST_ACTION,
    OBJECT_ACTIONS,
    CredentialOp,
    packed,
    partition_of,
    scope_problem,
    session_policy,
)
from tests.support.iam_policy import Decision, Policy, Unsupported, wildcard_match

BUCKET = "commons-data"
OTHER_BUCKET = "commons-data2"

# Characters that mean something to IAM, JSON, URLs or regular expressions, plus ordinary ones.
ADVERSARIAL = "*?${}/\\.[]()^+|\"'%&=:,#@ aA0é中\u00ff\u2028"
segments = st.text(alphabet=ADVERSARIAL + "abcxyz-_", min_size=1, max_size=8)
prefixes = st.one_of(
    st.just(""),
    st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/".join(parts) + "/"),
)
op_sets = st.sets(st.sampled_from(list(CredentialOp)), min_size=1)
# Every S3 object and bucket action a credential could be asked about, granted or not.
EVERY_ACTION = sorted(
    {a for actions in OBJECT_ACTIONS.values() for a in actions}
    | {LIST_ACTION, "s3:PutBucketPolicy", "s3:DeleteBucket", "s3:GetObjectAcl", "s3:*", "iam:*"}
)


def granted_actions(ops: set[CredentialOp]) -> set[str]:
    return {action for op in ops for action in OBJECT_ACTIONS.get(op, ())}


def keys_around(prefix: str, suffix: str) -> list[str]:
    """Keys inside the prefix and the ones most likely to leak: siblings, parents, look-alikes."""
    stripped = prefix.rstrip("/")
    return [
        prefix + suffix,
        prefix,
        stripped + suffix,
        stripped + "-" + suffix,
        stripped + "x/" + suffix,
        stripped.upper() + "/" + suffix,
        suffix,
        "/" + prefix + suffix,
        prefix.replace("/", "//", 1) + suffix,
    ]


@settings(max_examples=400, deadline=None)
@given(prefix=prefixes, ops=op_sets, suffix=st.text(alphabet=ADVERSARIAL + "ab", max_size=6))
@example(prefix="data/ab/", ops={CredentialOp.READ, CredentialOp.LIST}, suffix="c")
@example(prefix="a.b/", ops={CredentialOp.READ}, suffix="x")
def test_no_generated_policy_grants_outside_its_prefix(
    prefix: str, ops: set[CredentialOp], suffix: str
) -> None:
    problem = scope_problem(prefix)
    if any(seq in prefix for seq in ("*", "?", "${")):
        # Refused, never built: each would widen the grant.
        assert problem is not None
        with pytest.raises(ValueError):
            session_policy(BUCKET, prefix, ops)
        return
    assert problem is None
    document = session_policy(BUCKET, prefix, ops)
    # What STS receives parses back to the same document, and the evaluator supports it all
    # (no policy variable, no construct it would have to guess about).
    text = packed(document)
    assert text.isascii()
    policy = Policy.parse(text)
    assert json.loads(text) == document

    granted = granted_actions(ops)
    for key in keys_around(prefix, suffix):
        inside = key.startswith(prefix)
        for action in EVERY_ACTION:
            allowed = policy.allows(action, f"arn:aws:s3:::{BUCKET}/{key}")
            assert allowed == (inside and action in granted), (action, key)
            # Never another bucket, whose name merely starts like this one.
            assert not policy.allows(action, f"arn:aws:s3:::{OTHER_BUCKET}/{key}")
            assert not policy.allows(action, f"arn:aws:s3:::{BUCKET}-x/{key}")

    # Listing: only with list, only on the bucket, only for prefixes inside the grant.
    bucket_arn = f"arn:aws:s3:::{BUCKET}"
    for listed in keys_around(prefix, suffix):
        allowed = policy.allows(LIST_ACTION, bucket_arn, {"s3:prefix": listed})
        expected = CredentialOp.LIST in ops and listed.startswith(prefix)
        assert allowed == expected, listed
        assert not policy.allows(LIST_ACTION, f"arn:aws:s3:::{OTHER_BUCKET}", {"s3:prefix": listed})
    # A listing that names no prefix lists the whole bucket: only a whole-bucket grant may.
    assert policy.allows(LIST_ACTION, bucket_arn) == (CredentialOp.LIST in ops and prefix == "")


@given(prefix=prefixes.filter(lambda p: scope_problem(p) is None), ops=op_sets)
def test_policies_are_data_not_text(prefix: str, ops: set[CredentialOp]) -> None:
    """Whatever the prefix holds (quotes, backslashes, braces), it stays one string value."""
    document = json.loads(packed(session_policy(BUCKET, prefix, ops)))
    resources = [r for s in document["Statement"] for r in s["Resource"]]
    assert set(resources) <= {f"arn:aws:s3:::{BUCKET}/{prefix}*", f"arn:aws:s3:::{BUCKET}"}
    assert {s["Effect"] for s in document["Statement"]} == {"Allow"}
    assert len(document["Statement"]) == (
        1 if ops <= {CredentialOp.LIST} or CredentialOp.LIST not in ops else 2
    )


def test_a_wildcard_would_have_widened_the_grant() -> None:
    """Why ``*``, ``?`` and ``${`` are refused: the evaluator shows the leak they would cause
    (the shape of Polaris CVE-2026-42810), so the property test above can fail."""
    widened = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{BUCKET}/team*/" + "*"],
            }
        ],
    }
    assert Policy.parse(widened).allows("s3:GetObject", f"arn:aws:s3:::{BUCKET}/team-other/x")
    variable = {**widened, "Statement": [{**widened["Statement"][0], "Resource": "${aws:x}"}]}
    with pytest.raises(Unsupported):
        Policy.parse(variable)


def test_the_policy_for_a_prefix() -> None:
    document = session_policy(
        BUCKET, "data/ab/", [CredentialOp.READ, CredentialOp.WRITE, CredentialOp.LIST]
    )
    assert document == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Objects",
                "Effect": "Allow",
                "Action": [
                    "s3:AbortMultipartUpload",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:PutObject",
                ],
                "Resource": [f"arn:aws:s3:::{BUCKET}/data/ab/*"],
            },
            {
                "Sid": "List",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{BUCKET}"],
                "Condition": {"StringLike": {"s3:prefix": ["data/ab/*"]}},
            },
        ],
    }
    whole = session_policy(BUCKET, "", [CredentialOp.LIST])
    assert whole["Statement"] == [
        {
            "Sid": "List",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}"],
        }
    ]


def test_partitions_follow_the_role() -> None:
    assert partition_of("arn:aws-us-gov:iam::123456789012:role/r") == "aws-us-gov"
    assert partition_of("arn:aws-cn:iam::123456789012:role/r") == "aws-cn"
    assert partition_of(None) == "aws"
    document = session_policy(BUCKET, "", [CredentialOp.READ], partition="aws-cn")
    assert document["Statement"][0]["Resource"] == [f"arn:aws-cn:s3:::{BUCKET}/*"]


# -- the evaluator itself, on AWS's documented semantics -------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("a.b/*", "a.b/x", True),
        ("a.b/*", "axb/x", False),  # '.' is literal (moto's evaluator gets this wrong)
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a*", "a/b/c", True),  # '*' crosses '/'
        ("a(b", "a(b", True),
        ("A*", "a", False),  # resources are case-sensitive
        ("", "", True),
    ],
)
def test_wildcards(pattern: str, value: str, matches: bool) -> None:
    assert wildcard_match(pattern, value) is matches


def test_evaluation_order_and_conditions() -> None:
    policy = Policy.parse(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"},
                {
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": "arn:aws:s3:::b",
                    "Condition": {"StringLike": {"s3:prefix": "p/*"}},
                },
            ],
        }
    )
    assert policy.evaluate("S3:GETOBJECT", "arn:aws:s3:::b/x") is Decision.ALLOW
    assert policy.evaluate("s3:GetObject", "arn:aws:s3:::b/secret/x") is Decision.EXPLICIT_DENY
    assert policy.evaluate("s3:PutObject", "arn:aws:s3:::b/x") is Decision.IMPLICIT_DENY
    assert policy.allows("s3:ListBucket", "arn:aws:s3:::b", {"S3:Prefix": "p/q"})
    assert not policy.allows("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "q/"})
    assert not policy.allows("s3:ListBucket", "arn:aws:s3:::b")  # key absent


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "NotResource": "x"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Principal": "*"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"IpAddress": {}}},
    ],
)
def test_the_evaluator_refuses_what_it_does_not_implement(statement: dict[str, object]) -> None:
    with pytest.raises(Unsupported):
        Policy.parse({"Version": "2012-10-17", "Statement": [statement]})
