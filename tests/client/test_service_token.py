"""Service-token calls: Fence's own token from a rotating file, the user in ``on_behalf_of``.

The service does not serve these yet, so they run against ``ContractStub``, a local HTTP server
speaking the documented shape of those routes (tests/client/contract_stub.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bucket_registry_client import (
    AsyncBucketRegistryClient,
    Audit,
    BatchError,
    BucketNotFound,
    BucketRegistryClient,
    Caller,
    ConfigurationError,
    Forbidden,
    Grant,
    Invalid,
    OnBehalfOf,
    OnBehalfOfInvalid,
    PresignedUrl,
    PresignRequest,
    RegistryEmpty,
    ServiceToken,
    Unauthenticated,
    Unavailable,
    new_breaker,
)

from tests.client.contract_stub import ContractStub

# What Fence sends for a record with an authz list.
RECORD = Grant(authz=("/programs/A",))


@pytest.fixture
def stub() -> Iterator[ContractStub]:
    registry = ContractStub().start()
    registry.add_bucket("data-bucket")
    registry.add_bucket("gs-bucket", provider="gcp")
    yield registry
    registry.stop()


@pytest.fixture
def token_file(tmp_path: Path, stub: ContractStub) -> Path:
    path = tmp_path / "token"
    path.write_text(stub.service_token + "\n")
    return path


def service_client(stub: ContractStub, token_file: Path, **options: object) -> BucketRegistryClient:
    options.setdefault("backoff", 0.0)
    return BucketRegistryClient(stub.url, token_path=token_file, **options)  # type: ignore[arg-type]


def test_fence_token_authenticates_and_the_user_rides_in_the_body(
    stub: ContractStub, token_file: Path
) -> None:
    caller = Caller(
        OnBehalfOf.user_token("Bearer alice-jwt"),
        Audit(user_id="42", username="alice", client_id="fence-client"),
    )
    grant = Grant(authz=("/programs/DEV/projects/ABC",), method="read-storage")
    with service_client(stub, token_file) as client:
        url = client.presign(
            "data-bucket", "guid/a.bam", "read", caller, expires_in=600, grant=grant
        )
    assert url.method == "GET" and "X-Amz-Expires=600" in url.url
    seen = stub.last("/presign")
    assert seen.authorization == f"Bearer {stub.service_token}"
    assert seen.body == {
        "bucket": "data-bucket",
        "key": "guid/a.bam",
        "op": "read",
        "expires_in": 600,
        "on_behalf_of": {"token": "alice-jwt"},
        "authz": ["/programs/DEV/projects/ABC"],
        "method": "read-storage",
        "audit": {"user_id": "42", "username": "alice", "client_id": "fence-client"},
    }


def test_every_trusted_field(stub: ContractStub, token_file: Path) -> None:
    with service_client(stub, token_file) as client:
        client.presign(
            "data-bucket",
            "k",
            "write",
            OnBehalfOf.user("alice"),
            grant=Grant(authz=("/a", "/b"), method=("create", "write-storage")),
        )
        assert stub.last("/presign").body["on_behalf_of"] == {"username": "alice"}
        assert stub.last("/presign").body["method"] == ["create", "write-storage"]

        unsigned = client.presign(
            "data-bucket",
            "k",
            "read",
            OnBehalfOf.nobody(),
            grant=Grant(legacy="acl", unsigned=True),
        )
        body = stub.last("/presign").body
        assert body["on_behalf_of"] == {"anonymous": True}
        assert body["authz"] == [] and body["legacy"] == "acl" and body["unsigned"] is True
        assert "X-Amz-Signature" not in unsigned.url

        client.presign(
            "gs-bucket",
            "k",
            "write",
            "alice-jwt",
            user_project="billing-proj-1",
            resumable=True,
            grant=RECORD,
        )
        body = stub.last("/presign").body
        assert body["user_project"] == "billing-proj-1" and body["resumable"] is True

        client.multipart_init(
            "data-bucket",
            "k",
            "alice-jwt",
            grant=Grant(authz=("/data_file",), method="file_upload"),
        )
        with pytest.raises(Invalid) as no_grant:
            client.presign("data-bucket", "k", "read", "alice-jwt")
        assert "authz" in no_grant.value.message and no_grant.value.status is None
        assert stub.last("/multipart/init").body["method"] == "file_upload"


def test_grants_are_checked_before_sending() -> None:
    for bad in (
        lambda: Grant(authz="/programs/A"),  # type: ignore[arg-type]
        lambda: Grant(authz=("programs/A",)),
        lambda: Grant(legacy="owner"),
        lambda: Grant(authz=("/a",), legacy="acl"),
        lambda: Grant(method=()),
        lambda: OnBehalfOf(),
        lambda: OnBehalfOf(token="t", username="u"),
        lambda: OnBehalfOf.user_token("Bearer "),
    ):
        with pytest.raises(Invalid):
            bad()
    assert "secret-jwt" not in repr(OnBehalfOf.user_token("secret-jwt"))


def test_error_codes_map_to_classes(stub: ContractStub, token_file: Path) -> None:
    with service_client(stub, token_file, retries=0) as client:
        with pytest.raises(OnBehalfOfInvalid) as user_token:
            client.presign("data-bucket", "k", "read", "expired-jwt", grant=RECORD)
        assert user_token.value.status == 401 and user_token.value.fence_status == 401
        assert not isinstance(user_token.value, Unauthenticated)

        with pytest.raises(Forbidden):
            client.presign("data-bucket", "k", "read", "bob-jwt", grant=RECORD)
        with pytest.raises(BucketNotFound):
            client.presign("unknown-bucket", "k", "read", "alice-jwt", grant=RECORD)

    token_file.write_text("some-other-token")
    with service_client(stub, token_file, retries=0) as client:
        with pytest.raises(Unauthenticated) as fence_token:
            client.presign("data-bucket", "k", "read", "alice-jwt", grant=RECORD)
    assert "some-other-token" not in str(fence_token.value)


def test_the_token_file_is_read_again_when_it_rotates(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("token-1\n")
    now = [0.0]
    source = ServiceToken(path, check_every=60, clock=lambda: now[0])
    assert source() == "token-1"

    # The kubelet swaps the file; within the minute the cached token is still used.
    replacement = tmp_path / "token.new"
    replacement.write_text("token-2-longer\n")
    replacement.replace(path)
    now[0] = 59.0
    assert source() == "token-1"
    now[0] = 61.0
    assert source() == "token-2-longer"

    path.unlink()
    now[0] = 200.0
    with pytest.raises(ConfigurationError) as gone:
        source()
    assert gone.value.code == "service_token_unreadable" and str(path) in gone.value.message

    path.write_text("  \n")
    now[0] = 300.0
    with pytest.raises(ConfigurationError) as empty:
        source()
    assert empty.value.code == "service_token_missing"


def test_a_missing_token_file_is_a_typed_error_not_a_crash(
    stub: ContractStub, tmp_path: Path
) -> None:
    with BucketRegistryClient(stub.url, token_path=tmp_path / "absent") as client:
        with pytest.raises(ConfigurationError) as missing:
            client.presign("data-bucket", "k", "read", "alice-jwt", grant=RECORD)
    assert missing.value.fence_status == 503
    assert stub.calls == 0


def test_a_failing_token_callable_is_a_typed_error(stub: ContractStub) -> None:
    def broken() -> str:
        raise KeyError("BUCKET_REGISTRY_TOKEN")

    with BucketRegistryClient(stub.url, service_token=broken) as client:
        with pytest.raises(ConfigurationError):
            client.resolve("data-bucket")
    with pytest.raises(ConfigurationError):
        BucketRegistryClient(stub.url, service_token="a", token_path="/b")


def test_batch_presign(stub: ContractStub, token_file: Path) -> None:
    requests = [
        PresignRequest("data-bucket", f"guid-{n}/f", grant=Grant(authz=("/programs/A",)))
        for n in range(150)
    ]
    requests[3] = PresignRequest("unknown-bucket", "guid-3/f", grant=Grant(authz=("/a",)))
    with service_client(stub, token_file) as client:
        results = client.presign_batch(requests, Caller(OnBehalfOf.user_token("alice-jwt")))
    assert len(results) == 150
    assert isinstance(results[0], PresignedUrl) and "guid-0/f" in results[0].url
    missing = results[3]
    assert isinstance(missing, BatchError) and missing.status == 404
    assert isinstance(missing.error, BucketNotFound)
    batches = [seen for seen in stub.seen if seen.path == "/presign/batch"]
    assert [len(seen.body["requests"]) for seen in batches] == [100, 50]
    assert batches[0].body["on_behalf_of"] == {"token": "alice-jwt"}
    assert batches[0].body["requests"][0]["authz"] == ["/programs/A"]


def test_delete_objects_and_fence_buckets(stub: ContractStub, token_file: Path) -> None:
    with service_client(stub, token_file) as client:
        grant = Grant(authz=("/programs/A",), method="delete")
        assert client.delete_objects("data-bucket", "alice-jwt", prefix="guid/", grant=grant) == 1
        assert stub.last("/objects/delete").body["prefix"] == "guid/"
        assert client.delete_objects("data-bucket", "alice-jwt", key="guid/f", grant=RECORD) == 1
        with pytest.raises(Invalid):
            client.delete_objects("data-bucket", "alice-jwt", key="a", prefix="b")

        listing = client.fence_buckets()
        assert set(listing["S3_BUCKETS"]) == {"data-bucket"}
        assert set(listing["GS_BUCKETS"]) == {"gs-bucket"}
        assert client.resolve("gs-bucket").provider == "gcp"

        stub.buckets.clear()
        with pytest.raises(RegistryEmpty):
            client.fence_buckets()


async def test_async_client_with_a_service_token(stub: ContractStub, token_file: Path) -> None:
    breaker = new_breaker(fail_max=1, reset_timeout=60)
    async with AsyncBucketRegistryClient(
        stub.url, token_path=token_file, retries=0, breaker=breaker
    ) as client:
        url = await client.presign(
            "data-bucket", "k", "read", "alice-jwt", grant=Grant(authz=("/programs/A",))
        )
        assert url.method == "GET"
        assert stub.last("/presign").body["on_behalf_of"] == {"token": "alice-jwt"}
        results = await client.presign_batch(
            [PresignRequest("data-bucket", "k", grant=RECORD)], "alice-jwt"
        )
        assert isinstance(results[0], PresignedUrl)
        assert await client.delete_objects("data-bucket", "alice-jwt", key="k", grant=RECORD) == 1
        assert set((await client.fence_buckets())["S3_BUCKETS"]) == {"data-bucket"}
        with pytest.raises(OnBehalfOfInvalid):
            await client.presign("data-bucket", "k", "read", "expired-jwt", grant=RECORD)

        stub.fail_with = 503
        with pytest.raises(Unavailable) as down:
            await client.resolve("data-bucket")
        assert down.value.code == "dependency_unavailable"
        calls = stub.calls
        with pytest.raises(Unavailable) as open_circuit:
            await client.resolve("data-bucket")
        assert open_circuit.value.code == "circuit_open" and stub.calls == calls
