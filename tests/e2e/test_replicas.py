"""Two service processes on one PostgreSQL database: a change through one reaches the other
through LISTEN/NOTIFY in about a second, not after a cache TTL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    STATIC_KEY_ID,
    STATIC_SECRET,
    boto,
    put_static_secret,
)
from tests.support.net import free_port, wait_for_http


class Replica:
    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.port = free_port()
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_http(self.url + "/_status", timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture
def replicas(
    pg_url, issuer, arborist, moto, gateway, tmp_path
) -> Iterator[tuple[Replica, Replica]]:
    env = {
        **os.environ,
        "BUCKET_REGISTRY_DATABASE_URL": pg_url,
        "BUCKET_REGISTRY_ARBORIST_URL": arborist.url,
        "BUCKET_REGISTRY_USER_API": issuer.user_api,
        "BUCKET_REGISTRY_ENDPOINT_ALLOWLIST": "127.0.0.1",
        # Long TTLs: only a notification can explain a change seen within a second.
        "BUCKET_REGISTRY_BUCKET_CACHE_TTL": "600",
        "BUCKET_REGISTRY_AUTHZ_CACHE_TTL": "30",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url,
        "AWS_ENDPOINT_URL_STS": moto.url,
    }
    first = Replica(env, str(tmp_path / "a.log"))
    second = Replica(env, str(tmp_path / "b.log"))
    yield first, second
    first.stop()
    second.stop()


def test_suspension_through_one_replica_denies_on_the_other_within_a_second(
    replicas, issuer, arborist, moto, gateway
) -> None:
    a, b = replicas
    arborist.make_admin("admin")
    arborist.grant("submitter", "writer", PROJECT)
    admin = {"Authorization": f"Bearer {issuer.token('admin')}"}
    user = {"Authorization": f"Bearer {issuer.token('submitter')}"}
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    body = {
        "name": "minio-abc",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
        "data_upload_allowed": True,
    }
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{a.url}/admin/buckets", json=body, headers=admin).status_code == 201
        binding = {"resource_path": PROJECT, "allowed_ops": ALL_OPS}
        assert (
            http.post(
                f"{a.url}/admin/buckets/minio-abc/bindings", json=binding, headers=admin
            ).status_code
            == 201
        )
        request = {"bucket": "minio-abc", "key": "incoming/x", "op": "write"}
        warm = http.post(f"{b.url}/presign", json=request, headers=user)
        assert warm.status_code == 200, warm.text  # b now caches the bucket for 600 s

        assert http.delete(f"{a.url}/admin/buckets/minio-abc", headers=admin).status_code == 200
        suspended_at = time.monotonic()
        while True:
            answer = http.post(f"{b.url}/presign", json=request, headers=user)
            if answer.status_code == 403:
                break
            assert answer.status_code == 200
            assert time.monotonic() - suspended_at < 1.0, (
                "replica b still signs for a suspended bucket"
            )
            time.sleep(0.02)
        assert answer.json()["error"] == "bucket_suspended"

        assert (
            http.post(f"{a.url}/admin/buckets/minio-abc/resume", headers=admin).status_code == 200
        )
        resumed_at = time.monotonic()
        while http.post(f"{b.url}/presign", json=request, headers=user).status_code != 200:
            assert time.monotonic() - resumed_at < 1.0
            time.sleep(0.02)

        metrics = http.get(f"{b.url}/metrics").text
        received = [
            line
            for line in metrics.splitlines()
            if line.startswith("bucket_registry_change_notifications_received_total")
        ]
        assert received and float(received[0].split()[-1]) >= 2


def test_keys_rotated_through_one_replica_sign_on_the_other_within_a_second(
    replicas, issuer, arborist, moto, gateway
) -> None:
    from tests.e2e.conftest import ROTATED_KEY_ID, ROTATED_SECRET
    from tests.e2e.test_data_path import key_id_of

    a, b = replicas
    arborist.make_admin("admin")
    arborist.grant("submitter", "writer", PROJECT)
    arborist.grant("submitter", "reader", PROJECT)
    arborist.grant("owner", "bucket_register", PROJECT)
    admin = {"Authorization": f"Bearer {issuer.token('admin')}"}
    owner = {"Authorization": f"Bearer {issuer.token('owner')}"}
    user = {"Authorization": f"Bearer {issuer.token('submitter')}"}
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    body = {
        "name": "minio-abc",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
        "data_upload_allowed": True,
        "project_resource": PROJECT,
    }
    request = {"bucket": "minio-abc", "key": "incoming/x", "op": "write"}
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{a.url}/admin/buckets", json=body, headers=admin).status_code == 201
        binding = {"resource_path": PROJECT, "allowed_ops": ALL_OPS}
        bound = http.post(f"{a.url}/admin/buckets/minio-abc/bindings", json=binding, headers=admin)
        assert bound.status_code == 201
        warm = http.post(f"{b.url}/presign", json=request, headers=user)
        assert key_id_of(warm.json()["url"]) == STATIC_KEY_ID  # b caches signer and secret

        # Bad keys through a: refused, and b goes on signing with the old ones.
        bad = {"access_key_id": "AKIAUNKNOWNKEY000001", "secret_access_key": "nope"}
        put = http.put(f"{a.url}/admin/buckets/minio-abc/credentials", json=bad, headers=owner)
        assert put.status_code == 400, put.text
        still = http.post(f"{b.url}/presign", json=request, headers=user)
        assert key_id_of(still.json()["url"]) == STATIC_KEY_ID

        keys = {"access_key_id": ROTATED_KEY_ID, "secret_access_key": ROTATED_SECRET}
        put = http.put(f"{a.url}/admin/buckets/minio-abc/credentials", json=keys, headers=owner)
        assert put.status_code == 200, put.text
        rotated_at = time.monotonic()
        while True:
            answer = http.post(f"{b.url}/presign", json=request, headers=user)
            assert answer.status_code == 200, answer.text
            if key_id_of(answer.json()["url"]) == ROTATED_KEY_ID:
                break
            assert time.monotonic() - rotated_at < 1.0, "replica b still signs with the old key"
            time.sleep(0.02)
        assert http.put(answer.json()["url"], content=b"rotated").status_code == 200
        for _ in range(5):
            again = http.post(f"{b.url}/presign", json=request, headers=user)
            assert key_id_of(again.json()["url"]) == ROTATED_KEY_ID
