"""The Credential Access Boundary of a downscoped token: ops under one prefix of one bucket.

Built from structured data with google-auth's ``downscoped`` classes; the one piece of text,
each rule's CEL condition, is assembled from string literals that ``cel_literal`` quotes only
after refusing every character CEL could read as anything but itself.

What each op grants (every rule is limited to the bucket, and conditioned as below):

| op | role | condition |
| --- | --- | --- |
| read | ``roles/storage.objectViewer`` | the object's name starts with the prefix |
| write | ``roles/storage.objectCreator`` | the object's name starts with the prefix |
| delete | ``roles/storage.legacyBucketWriter`` | the object's name starts with the prefix |
| list | ``roles/storage.legacyBucketReader`` | the listing's prefix starts with the prefix |

A listing's resource is the bucket, not an object, so the object-name conditions never let
``read`` list; ``legacyBucketReader`` holds no ``storage.objects.get``, so ``list`` never
reads. Cloud Storage has no role granting ``storage.objects.delete`` without
``storage.objects.create``, so ``delete`` is vended only together with ``write``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from google.auth import downscoped

from app.storage.session_policy import CredentialOp

STORAGE_RESOURCE = "//storage.googleapis.com/projects/_/buckets/"
OBJECT_LIST_PREFIX = "storage.googleapis.com/objectListPrefix"

ROLE_FOR_OP: dict[CredentialOp, str] = {
    CredentialOp.READ: "roles/storage.objectViewer",
    CredentialOp.WRITE: "roles/storage.objectCreator",
    CredentialOp.DELETE: "roles/storage.legacyBucketWriter",
    CredentialOp.LIST: "roles/storage.legacyBucketReader",
}

# Inside a quoted CEL string these end the literal or start an escape sequence.
_CEL_QUOTING = frozenset("'\"\\`")
# Unicode categories that are not plain visible text: controls, format characters (bidi
# overrides, zero-width joiners), surrogates, private use, unassigned, line and paragraph
# separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def literal_problem(text: str) -> str | None:
    """Why ``text`` cannot appear in a CEL string literal unchanged, or None."""
    for char in text:
        if char in _CEL_QUOTING:
            return (
                f"must not contain {char!r}: the token's access boundary is a CEL expression"
                " in which it would end the quoted prefix or start an escape"
            )
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return "must not contain control, format or separator characters"
    return None


def cel_literal(text: str) -> str:
    """``text`` as a single-quoted CEL string literal that denotes exactly ``text``.

    Nothing is escaped: text that would need an escape is refused (``ValueError``), so the
    literal is the text between two quotes and can be read back by eye.
    """
    problem = literal_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return "'" + text + "'"


def object_name_condition(bucket: str, prefix: str) -> str:
    """CEL: the resource is an object of ``bucket`` whose name starts with ``prefix``."""
    return (
        f"resource.name.startsWith({cel_literal(f'projects/_/buckets/{bucket}/objects/{prefix}')})"
    )


def list_prefix_condition(prefix: str) -> str:
    """CEL: the request is a listing whose ``prefix`` parameter starts with ``prefix``."""
    attribute = f"api.getAttribute({cel_literal(OBJECT_LIST_PREFIX)}, {cel_literal('')})"
    return f"{attribute}.startsWith({cel_literal(prefix)})"


def boundary_problem(prefix: str, ops: Iterable[CredentialOp]) -> str | None:
    """Why a Cloud Storage token cannot be scoped to ``ops`` under ``prefix``, or None."""
    problem = literal_problem(prefix)
    if problem is not None:
        return f"prefix {problem}"
    wanted = set(ops)
    if CredentialOp.DELETE in wanted and CredentialOp.WRITE not in wanted:
        return (
            "ops: on gcp buckets delete is vended only with write (no Cloud Storage role"
            " grants deleting objects without creating them)"
        )
    return None


def access_boundary(
    bucket: str, prefix: str, ops: Iterable[CredentialOp]
) -> downscoped.CredentialAccessBoundary:
    """The boundary granting ``ops`` under ``prefix`` of ``bucket`` and nothing else."""
    wanted = sorted(set(ops), key=list(CredentialOp).index)
    problem = boundary_problem(prefix, wanted) or literal_problem(bucket)
    if problem is not None:
        raise ValueError(problem)
    if not wanted:
        raise ValueError("an access boundary needs at least one operation")
    rules = []
    for op in wanted:
        if op is CredentialOp.LIST:
            # An empty prefix lists the whole bucket; every listing prefix starts with ''.
            expression = list_prefix_condition(prefix) if prefix else None
        else:
            expression = object_name_condition(bucket, prefix)
        condition = (
            downscoped.AvailabilityCondition(expression, title=f"{op.value} under the prefix")
            if expression is not None
            else None
        )
        rules.append(
            downscoped.AccessBoundaryRule(
                available_resource=STORAGE_RESOURCE + bucket,
                available_permissions=["inRole:" + ROLE_FOR_OP[op]],
                availability_condition=condition,
            )
        )
    return downscoped.CredentialAccessBoundary(rules=rules)
