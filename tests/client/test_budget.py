"""What a slow or down registry costs a Fence worker: a bounded time per call, and almost
nothing once the circuit breaker is open. Outages come from the real service (Arborist down)
or a real closed port; slowness from the contract stub."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pybreaker
import pytest
from bucket_registry_client import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    BucketRegistryClient,
    Forbidden,
    Grant,
    Unavailable,
    new_breaker,
)

from tests.client.conftest import BUCKET, Commons
from tests.client.contract_stub import ContractStub
from tests.support.net import free_port

# What Fence sends for a record with an authz list.
RECORD = Grant(authz=("/programs/A",))


@pytest.fixture
def stub() -> Iterator[ContractStub]:
    registry = ContractStub().start()
    registry.add_bucket("data-bucket")
    yield registry
    registry.stop()


def test_defaults_fit_a_sync_worker() -> None:
    client = BucketRegistryClient("http://registry")
    assert DEFAULT_TIMEOUT <= 2.0 and client.timeout == DEFAULT_TIMEOUT
    assert DEFAULT_RETRIES == 1 and client.retries == 1
    assert client.breaker is not None
    client.close()


def test_a_hanging_registry_costs_timeout_times_attempts(stub: ContractStub) -> None:
    stub.delay = 1.0
    with BucketRegistryClient(
        stub.url, service_token=stub.service_token, timeout=0.2, retries=1, backoff=0.0
    ) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as slow:
            client.presign("data-bucket", "k", "read", "alice-jwt", grant=RECORD)
        elapsed = time.monotonic() - started
    assert slow.value.code == "unreachable" and "ReadTimeout" in slow.value.message
    assert stub.calls == 2  # presign is idempotent: one retry after the timeout
    assert 0.4 <= elapsed < 0.9


def test_a_timed_out_complete_is_not_sent_twice(stub: ContractStub) -> None:
    stub.delay = 1.0
    with BucketRegistryClient(
        stub.url, service_token=stub.service_token, timeout=0.2, retries=3, backoff=0.0
    ) as client:
        with pytest.raises(Unavailable):
            client.multipart_complete(
                "data-bucket", "k", "u", [(1, "e")], "alice-jwt", grant=RECORD
            )
    assert stub.calls == 1


def test_the_breaker_opens_and_then_costs_microseconds(commons: Commons) -> None:
    token = commons.token("alice")
    commons.arborist.fail_with = 500
    breaker = new_breaker(fail_max=3, reset_timeout=0.5)
    with BucketRegistryClient(
        commons.url, retries=0, breaker=breaker, sleep=lambda _s: None
    ) as client:
        for _ in range(3):
            with pytest.raises(Unavailable) as down:
                client.presign(BUCKET, "incoming/x", "read", token)
            # The calls that trip the breaker keep the registry's own error.
            assert down.value.code == "dependency_unavailable"
        assert breaker.current_state == pybreaker.STATE_OPEN

        arborist_calls = commons.arborist.call_count
        started = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(Unavailable) as open_circuit:
                client.presign(BUCKET, "incoming/x", "read", token)
        per_call = (time.perf_counter() - started) / 1000
        assert open_circuit.value.code == "circuit_open" and open_circuit.value.status is None
        assert commons.arborist.call_count == arborist_calls  # nothing reached the registry
        assert per_call < 0.001, f"{per_call * 1e6:.0f} µs per call with the circuit open"
        print(f"open circuit: {per_call * 1e6:.1f} µs per call")

        # After reset_timeout one trial call goes through; a success closes the circuit.
        commons.arborist.fail_with = None
        time.sleep(0.55)
        assert client.presign(BUCKET, "incoming/x", "read", token).url
        assert breaker.current_state == pybreaker.STATE_CLOSED


def test_an_unreachable_registry_trips_the_breaker() -> None:
    breaker = new_breaker(fail_max=2, reset_timeout=60)
    with BucketRegistryClient(
        f"http://127.0.0.1:{free_port()}", retries=1, breaker=breaker, sleep=lambda _s: None
    ) as client:
        for _ in range(2):
            with pytest.raises(Unavailable) as down:
                client.resolve(BUCKET, "token")
            assert down.value.code == "unreachable"
        with pytest.raises(Unavailable) as open_circuit:
            client.resolve(BUCKET, "token")
    assert open_circuit.value.code == "circuit_open"


def test_refusals_never_trip_the_breaker(commons: Commons) -> None:
    breaker = new_breaker(fail_max=2, reset_timeout=60)
    with BucketRegistryClient(commons.url, retries=0, breaker=breaker) as client:
        for _ in range(5):
            with pytest.raises(Forbidden):
                client.presign(BUCKET, "incoming/x", "read", commons.token("mallory"))
    assert breaker.current_state == pybreaker.STATE_CLOSED and breaker.fail_counter == 0


def test_one_buckets_configuration_503_is_neither_retried_nor_counted(
    stub: ContractStub,
) -> None:
    stub.fail_with, stub.fail_code = 503, "secret_not_found"
    breaker = new_breaker(fail_max=1, reset_timeout=60)
    with BucketRegistryClient(
        stub.url, service_token=stub.service_token, retries=3, breaker=breaker
    ) as client:
        for _ in range(3):
            with pytest.raises(Unavailable) as misconfigured:
                client.presign("data-bucket", "k", "read", "alice-jwt", grant=RECORD)
            assert misconfigured.value.code == "secret_not_found"
    assert stub.calls == 3 and breaker.current_state == pybreaker.STATE_CLOSED


def test_without_a_breaker(stub: ContractStub) -> None:
    stub.fail_with = 503
    with BucketRegistryClient(
        stub.url, service_token=stub.service_token, retries=0, breaker=None
    ) as client:
        for _ in range(10):
            with pytest.raises(Unavailable):
                client.resolve("data-bucket")
    assert stub.calls == 10
