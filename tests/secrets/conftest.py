"""Fixtures for the secrets tests: stub servers on 127.0.0.1, a private moto server that a test
may stop, and a manual clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.secrets.stubs import GcpSecretManagerStub, KubernetesStub, VaultStub
from tests.support.moto import MotoServer


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault_stub() -> Iterator[VaultStub]:
    stub = VaultStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def k8s_stub() -> Iterator[KubernetesStub]:
    stub = KubernetesStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def gcp_stub() -> Iterator[GcpSecretManagerStub]:
    stub = GcpSecretManagerStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def private_moto(moto: MotoServer) -> Iterator[MotoServer]:
    """A second moto server the test may stop to simulate an outage.

    moto keeps its state per process, so secrets created through ``moto`` are visible here too.
    """
    server = MotoServer().start()
    yield server
    server.stop()
