"""Credential Access Boundaries for gcp tokens: what each op grants, the CEL text, and property
tests over adversarial prefixes proving that no boundary the registry builds grants anything
outside the requested prefix and ops. The judge is tests/support/gcs_boundary.py, which
evaluates the conditions with cel-python, independently of how the registry wrote them."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.errors import DependencyUnavailable
from app.netguard import NetGuard
from app.registry.records import AuthMode, Provider
from app.storage.gcs.apis import GoogleApis
from app.storage.gcs.boundary import access_boundary, boundary_problem, cel_literal
from app.storage.gcs.downscope import GcsTokenVendor
from app.storage.session_policy import CredentialOp
from tests.storage.conftest import DictSecrets, make_bucket
from tests.support.gcs_boundary import (
    BUCKET_GET,
    CREATE,
    DELETE,
    GET,
    LIST,
    LIST_PREFIX_ATTRIBUTE,
    AccessBoundary,
    StorageQuestion,
    compile_condition,
    evaluate,
)

BUCKET = "gen3-data"
OTHER_BUCKET = "gen3-data-other"

# Characters with a meaning in CEL, in IAM, in paths, or invisible ones that could hide one.
ADVERSARIAL = "'\"\\`()|&!=<>?*$.{}[],;: \t\n\r\x00\u2028\u2029\u202e\u200b\ufeff/_-%+"
INJECTIONS = [
    "') || true || ('",
    "' || resource.name.startsWith('",
    "\\' || true || \\'",
    "a'/",
    "''' + '",
    "x\\u0027/",
    "data/\n/",
    "${x}/",
]
texts = st.text(alphabet=st.sampled_from(ADVERSARIAL) | st.characters(), max_size=24)
prefixes = st.one_of(
    st.just(""),
    texts,
    st.builds(lambda a, b: a + b + "/", texts, st.sampled_from(INJECTIONS)),
    st.builds(lambda a: a + "/", st.text(alphabet=string.ascii_letters + "/._-", max_size=16)),
)
op_sets = st.sets(st.sampled_from(list(CredentialOp)), min_size=1)


def boundary_of(prefix: str, ops: set[CredentialOp]) -> AccessBoundary:
    return AccessBoundary.parse(access_boundary(BUCKET, prefix, ops).to_json())


def names_near(prefix: str, extra: str) -> list[str]:
    """Object names inside the prefix, and outside it in every way that looks like it."""
    near = [prefix + extra, prefix, prefix[:-1], prefix[:-1] + extra, extra, extra + prefix]
    near += [prefix[:cut] + extra for cut in range(len(prefix))]
    return near


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=prefixes, ops=op_sets, extra=texts)
def test_no_boundary_grants_outside_its_prefix_or_ops(
    prefix: str, ops: set[CredentialOp], extra: str
) -> None:
    problem = boundary_problem(prefix, ops)
    if problem is not None:
        with pytest.raises(ValueError):
            access_boundary(BUCKET, prefix, ops)
        return
    boundary = boundary_of(prefix, ops)
    for name in names_near(prefix, extra):
        inside = name.startswith(prefix)
        for permission, granted_by in (
            (GET, {CredentialOp.READ}),
            (CREATE, {CredentialOp.WRITE, CredentialOp.DELETE}),
            (DELETE, {CredentialOp.DELETE}),
        ):
            expected = inside and bool(ops & granted_by)
            question = StorageQuestion(permission, BUCKET, name)
            assert boundary.allows(question) is expected, (prefix, ops, name, permission)
            assert not boundary.allows(StorageQuestion(permission, OTHER_BUCKET, name))
        # A listing is allowed only for list, and only for a listing prefix inside.
        listing = StorageQuestion(LIST, BUCKET, None, {LIST_PREFIX_ATTRIBUTE: name})
        assert boundary.allows(listing) is (inside and CredentialOp.LIST in ops)
    # With a prefix, listing without one (the whole bucket) and bucket metadata are refused.
    if prefix:
        assert not boundary.allows(StorageQuestion(LIST, BUCKET, None))
        assert not boundary.allows(StorageQuestion(BUCKET_GET, BUCKET, None))


@settings(max_examples=400, deadline=None)
@given(text=texts | st.sampled_from(INJECTIONS))
def test_a_cel_literal_denotes_exactly_its_text_or_is_refused(text: str) -> None:
    try:
        literal = cel_literal(text)
    except ValueError:
        assert any(char in text for char in "'\"\\`") or any(
            not char.isprintable() and char != " " for char in text
        )
        return
    # Evaluated by CEL, the literal compares equal to the text and to nothing else.
    program = compile_condition(f"resource.name == {literal}")
    assert evaluate(program, StorageQuestion(GET, BUCKET, None)) is (
        f"projects/_/buckets/{BUCKET}" == text
    )
    same = compile_condition(f"{literal} == {cel_literal(text)}")
    assert evaluate(same, StorageQuestion(GET, BUCKET, None)) is True
    assume(text)
    shorter = compile_condition(f"{literal}.startsWith({cel_literal(text[:-1])} + 'x')")
    assert evaluate(shorter, StorageQuestion(GET, BUCKET, None)) is text.startswith(text[:-1] + "x")


@pytest.mark.parametrize("prefix", [*INJECTIONS[:6], "a\u202eb/", "a\u200bb/", "a\x00/"])
def test_injection_prefixes_are_refused(prefix: str) -> None:
    assert boundary_problem(prefix, {CredentialOp.READ}) is not None
    with pytest.raises(ValueError):
        access_boundary(BUCKET, prefix, {CredentialOp.READ})


def test_what_each_op_grants() -> None:
    data_objects = f"resource.name.startsWith('projects/_/buckets/{BUCKET}/objects/data/')"
    rules = access_boundary(
        BUCKET, "data/", [CredentialOp.LIST, CredentialOp.DELETE, CredentialOp.WRITE]
    ).to_json()["accessBoundary"]["accessBoundaryRules"]
    assert [(rule["availablePermissions"], rule["availabilityCondition"]) for rule in rules] == [
        (
            ["inRole:roles/storage.objectCreator"],
            {
                "expression": data_objects,
                "title": "write under the prefix",
            },
        ),
        (
            ["inRole:roles/storage.legacyBucketWriter"],
            {
                "expression": data_objects,
                "title": "delete under the prefix",
            },
        ),
        (
            ["inRole:roles/storage.legacyBucketReader"],
            {
                "expression": "api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
                ".startsWith('data/')",
                "title": "list under the prefix",
            },
        ),
    ]
    # The whole bucket: listing is unconditioned, objects still need the objects/ path.
    whole = boundary_of("", {CredentialOp.LIST, CredentialOp.READ})
    assert whole.allows(StorageQuestion(LIST, BUCKET, None))
    assert whole.allows(StorageQuestion(GET, BUCKET, "any/object"))
    assert not whole.allows(StorageQuestion(CREATE, BUCKET, "any/object"))


async def test_a_buckets_token_exchange_endpoint_is_refused_before_any_call() -> None:
    # A bucket registered when its endpoint was allowed, judged by a registry that no longer
    # allows loopback: nothing is sent, not even the request for the source token.
    settings = Settings(gcp_sts_endpoint="https://sts.googleapis.com/v1/token")
    guard = NetGuard([])
    vendor = GcsTokenVendor(
        settings,
        DictSecrets(),
        apis=GoogleApis(iam_endpoint="https://iamcredentials.googleapis.com", netguard=guard),
        pod_tokens=_NoTokens(),
        netguard=guard,
    )
    bucket = make_bucket(
        provider=Provider.GCP,
        auth_mode=AuthMode.WORKLOAD_IDENTITY,
        service_account="reader@gen3-data.iam.gserviceaccount.com",
        secret_ref=None,
        credential_vending=True,
        sts_endpoint="http://127.0.0.1:9",
    )
    with pytest.raises(DependencyUnavailable, match="not contacted"):
        await vendor.vend(bucket, "data/", [CredentialOp.READ], 3600)
    await vendor.aclose()


class _NoTokens:
    async def token(self, *, force_refresh: bool = False) -> str:
        raise AssertionError("no token may be asked for")
