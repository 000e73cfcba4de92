"""The inline session policy that scopes a vended credential to one bucket prefix.

The policy is built as data and serialised by ``json.dumps``, never by filling a text
template, so nothing a caller sends can close a string or add a statement. What it grants is
``Action`` on ``arn:…:s3:::bucket/prefix*`` and, for ``list``, ``s3:ListBucket`` on the bucket
only for listings whose ``s3:prefix`` starts with the prefix. A prefix is empty (the whole
bucket) or ends with ``/``, so ``data/ab/`` never reaches ``data/abc/``. IAM reads ``*`` and
``?`` in a resource or a ``StringLike`` value as wildcards and ``${…}`` as a policy variable:
prefixes holding any of them are refused, since each would widen the grant (Polaris
CVE-2026-42810 was a ``*`` in a name).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from typing import Any

# AssumeRole's limit on a session policy's plain text (the packed form, with the session
# tags, has a limit of its own that only STS can measure: it answers PackedPolicyTooLarge).
MAX_SESSION_POLICY_CHARS = 2048

POLICY_VERSION = "2012-10-17"

_PARTITION = re.compile(r"^arn:(aws[a-z-]*):")


class CredentialOp(enum.StrEnum):
    """What a vended credential may do under its prefix."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    LIST = "list"


# Multipart uploads are s3:PutObject in IAM (create, upload part, complete); aborting and
# listing parts are actions of their own that aws s3 cp, s5cmd and rclone use when a part fails.
OBJECT_ACTIONS: dict[CredentialOp, tuple[str, ...]] = {
    CredentialOp.READ: ("s3:GetObject",),
    CredentialOp.WRITE: ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"),
    CredentialOp.DELETE: ("s3:DeleteObject",),
}
LIST_ACTION = "s3:ListBucket"

# Characters IAM would read as wildcards or the start of a policy variable.
WILDCARD_SEQUENCES = ("*", "?", "${")


def scope_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot scope a credential, or None. Key rules (length, control
    characters, ``..`` segments) are checked by the caller with the registry's key rules."""
    if prefix and not prefix.endswith("/"):
        return "must be empty (the whole bucket) or end with '/'"
    for sequence in WILDCARD_SEQUENCES:
        if sequence in prefix:
            return (
                f"must not contain {sequence!r}: IAM would read it as a wildcard or a policy"
                " variable and widen the credential's scope; ask for a parent prefix"
            )
    return None


def partition_of(role_arn: str | None) -> str:
    """The AWS partition (``aws``, ``aws-cn``, ``aws-us-gov``) a role lives in."""
    match = _PARTITION.match(role_arn or "")
    return match.group(1) if match else "aws"


def session_policy(
    bucket: str, prefix: str, ops: Iterable[CredentialOp], *, partition: str = "aws"
) -> dict[str, Any]:
    """The session policy granting ``ops`` under ``prefix`` of ``bucket`` and nothing else."""
    problem = scope_problem(prefix)
    if problem is not None:
        raise ValueError(f"prefix {prefix!r} {problem}")
    wanted = set(ops)
    bucket_arn = ":".join(("arn", partition, "s3", "", "", bucket))
    statements: list[dict[str, Any]] = []
    actions = sorted({action for op in wanted for action in OBJECT_ACTIONS.get(op, ())})
    if actions:
        statements.append(
            {
                "Sid": "Objects",
                "Effect": "Allow",
                "Action": actions,
                "Resource": [bucket_arn + "/" + prefix + "*"],
            }
        )
    if CredentialOp.LIST in wanted:
        listing: dict[str, Any] = {
            "Sid": "List",
            "Effect": "Allow",
            "Action": [LIST_ACTION],
            "Resource": [bucket_arn],
        }
        if prefix:
            # Without the condition a listing could name any prefix; a listing that sends no
            # prefix has no s3:prefix key, which StringLike never matches.
            listing["Condition"] = {"StringLike": {"s3:prefix": [prefix + "*"]}}
        statements.append(listing)
    if not statements:
        raise ValueError("a session policy needs at least one operation")
    return {"Version": POLICY_VERSION, "Statement": statements}


def packed(policy: dict[str, Any]) -> str:
    """The policy as sent to STS: compact, and ASCII only (STS accepts no character above
    U+00FF; JSON escapes carry any key name)."""
    return json.dumps(policy, separators=(",", ":"), ensure_ascii=True)
