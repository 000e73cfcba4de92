"""``make bench``: the presign warm path against a bare endpoint, a cold stampede, and admin
listing over 10,000 buckets — on this machine, in one run, with local stubs.

It starts PostgreSQL database, moto (S3/STS/Secrets Manager), a Fence-like JWKS issuer and an
Arborist stub on 127.0.0.1, runs the service as its own process (one uvicorn worker, as
deployed), and drives it with wrk (Debian package ``wrk``). Every load is bounded in
connections and duration and only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import boto3
import httpx

from tests.support.arborist import ArboristStub
from tests.support.database import PostgresDatabase
from tests.support.fence import FenceIssuer
from tests.support.moto import MotoServer
from tests.support.net import free_port, wait_for_http

# moto accepts any key for SDK calls; botocore only needs one to sign with.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

PROJECT = "/programs/BENCH/projects/P1"
KEY_ID, SECRET = "AKIABENCHSTATIC00001", "bench-static-secret-0001"


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, *, duration: int, connections: int, script: str | None = None) -> WrkResult:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    # The "Latency Distribution" block: lines such as "     99%   12.34ms".
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", output, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(rps, p50, p99, int(errors.group(1)) if errors else 0)


def lua(directory: Path, name: str, method: str, body: dict | None, token: str) -> str:
    path = directory / f"{name}.lua"
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += [
            f"wrk.body = {json.dumps(json.dumps(body))}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def counters(url: str) -> dict[str, float]:
    """The service's own dependency counters, from /metrics."""
    wanted = {
        "db": 'bucket_registry_dependency_duration_seconds_count{dependency="database"}',
        "arborist": 'bucket_registry_dependency_duration_seconds_count{dependency="arborist"}',
        "secrets": "bucket_registry_secret_fetches_total{",
        "sts": "bucket_registry_sts_assume_role_total ",
    }
    found = dict.fromkeys(wanted, 0.0)
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for name, prefix in wanted.items():
            if line.startswith(prefix):
                found[name] += float(line.rsplit(" ", 1)[1])
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {name: int(after[name] - before[name]) for name in before}


@contextmanager
def environment(workdir: Path) -> Iterator[dict[str, object]]:
    database = PostgresDatabase().create()
    moto = MotoServer().start()
    issuer = FenceIssuer().start()
    arborist = ArboristStub(issuer).start()
    port = free_port()
    env = {
        **os.environ,
        "BUCKET_REGISTRY_DATABASE_URL": database.url,
        "BUCKET_REGISTRY_ARBORIST_URL": arborist.url,
        "BUCKET_REGISTRY_USER_API": issuer.user_api,
        "BUCKET_REGISTRY_ENDPOINT_ALLOWLIST": "127.0.0.1",
        "BUCKET_REGISTRY_LOG_LEVEL": os.environ.get("BUCKET_REGISTRY_LOG_LEVEL", "INFO"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url,
        "AWS_ENDPOINT_URL_STS": moto.url,
    }
    log = (workdir / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_status", timeout=60)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "database": database,
            "moto": moto,
            "issuer": issuer,
            "arborist": arborist,
        }
    finally:
        service.terminate()
        service.wait(timeout=15)
        log.close()
        arborist.stop()
        issuer.stop()
        moto.stop()
        database.drop()


def register(url: str, admin: str, body: dict, resource: str) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        http.post("/admin/buckets", json=body).raise_for_status()
        binding = {"resource_path": resource, "allowed_ops": {"read": True, "write": True}}
        http.post(f"/admin/buckets/{body['name']}/bindings", json=binding).raise_for_status()


async def stampede(url: str, token: str, bucket: str, n: int = 100) -> set[int]:
    body = {"bucket": bucket, "key": "data/first.bam", "op": "read"}
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post("/presign", json=body, headers=headers) for _ in range(n))
        )
    return {response.status_code for response in responses}


async def insert_buckets(dsn: str, count: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        rows = [
            (
                uuid.uuid4(),
                f"bench-list-{i:06d}",
                "aws",
                "us-east-1",
                "workload_identity",
                f"P{i % 50}",
                json.dumps({"tier": "hot" if i % 2 else "cold"}),
                "active",
                False,
                False,
                False,
                1,
            )
            for i in range(count)
        ]
        await connection.executemany(
            "INSERT INTO bucket (id, name, provider, region, auth_mode, owner_project, labels,"
            " status, data_upload_allowed, is_default_upload, requester_pays, version,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9, $10,"
            " $11, $12, now(), now())",
            rows,
        )
    finally:
        await connection.close()


def main() -> int:
    # moto's embedded server logs every request; the report is what matters here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--buckets", type=int, default=10_000, help="for the listing run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required: apt-get install -y wrk", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp)) as env:
        workdir = Path(tmp)
        url = str(env["url"])
        issuer: FenceIssuer = env["issuer"]  # type: ignore[assignment]
        arborist: ArboristStub = env["arborist"]  # type: ignore[assignment]
        moto: MotoServer = env["moto"]  # type: ignore[assignment]
        database: PostgresDatabase = env["database"]  # type: ignore[assignment]
        arborist.make_admin("bench-admin")
        arborist.grant("bench-user", "reader", "/programs/BENCH")
        admin = issuer.token("bench-admin", lifetime=3600)
        user = issuer.token("bench-user", lifetime=3600)

        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(
            Bucket="bench-static"
        )
        sm = boto3.client("secretsmanager", endpoint_url=moto.url, region_name="us-east-1")
        for name in ("bench-static", "bench-cold-static"):
            sm.create_secret(
                Name=f"bench/{name}",
                SecretString=json.dumps({"access_key_id": KEY_ID, "secret_access_key": SECRET}),
            )
        static = {
            "name": "bench-static",
            "provider": "minio",
            "endpoint": moto.url,
            "auth_mode": "static",
            "secret_ref": "aws-sm://bench/bench-static",
        }
        register(url, admin, static, PROJECT)

        presign_body = {"bucket": "bench-static", "key": "data/sample.bam", "op": "read"}
        warm = httpx.post(
            url + "/presign", json=presign_body, headers={"Authorization": f"Bearer {user}"}
        )
        warm.raise_for_status()

        status = wrk(url + "/_status", duration=args.duration, connections=args.connections)
        before = counters(url)
        presign = wrk(
            url + "/presign",
            duration=args.duration,
            connections=args.connections,
            script=lua(workdir, "presign", "POST", presign_body, user),
        )
        warm_cost = delta(before, counters(url))

        cold = []
        for kind, body in (
            (
                "static",
                {
                    **static,
                    "name": "bench-cold-static",
                    "secret_ref": "aws-sm://bench/bench-cold-static",
                },
            ),
            (
                "role",
                {
                    "name": "bench-cold-role",
                    "provider": "aws",
                    "auth_mode": "role",
                    "role_arn": "arn:aws:iam::123456789012:role/bench",
                },
            ),
        ):
            resource = f"/programs/BENCH/projects/cold-{kind}"
            register(url, admin, body, resource)
            before = counters(url)
            codes = asyncio.run(stampede(url, user, str(body["name"])))
            cold.append((kind, codes, delta(before, counters(url))))

        asyncio.run(insert_buckets(database.dsn, args.buckets))
        listing = wrk(
            url + "/admin/buckets?limit=100",
            duration=max(3, args.duration // 2),
            connections=8,
            script=lua(workdir, "list", "GET", None, admin),
        )
        with httpx.Client(headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
            page = http.get(url + "/admin/buckets?limit=100&label=tier:hot&owner_project=P7")
            page.raise_for_status()
            started = time.perf_counter()
            for _ in range(20):
                http.get(url + "/admin/buckets?limit=100&label=tier:hot&owner_project=P7")
            filtered_ms = (time.perf_counter() - started) / 20 * 1000

    ratio = presign.rps / status.rps
    per_1000 = {
        name: round(count * 1000 / max(1, presign.rps * args.duration), 3)
        for name, count in warm_cost.items()
    }
    lines = [
        "",
        f"machine: {os.cpu_count()} cores; wrk -t2 -c{args.connections} -d{args.duration}s;"
        " one uvicorn worker",
        f"GET /_status    {status.rps:9.0f} req/s  p50 {status.p50_ms:6.2f} ms"
        f"  p99 {status.p99_ms:6.2f} ms",
        f"POST /presign   {presign.rps:9.0f} req/s  p50 {presign.p50_ms:6.2f} ms"
        f"  p99 {presign.p99_ms:6.2f} ms  non-2xx {presign.non_2xx}",
        f"warm presign dependency calls during the run: {warm_cost} (per 1000: {per_1000})",
    ]
    lines += [
        f"cold stampede ({kind}, 100 concurrent first requests): status {sorted(codes)} -> {cost}"
        for kind, codes, cost in cold
    ]
    lines += [
        f"admin list, 100 of {args.buckets} buckets: {listing.rps:.0f} req/s"
        f"  p50 {listing.p50_ms:.2f} ms  p99 {listing.p99_ms:.2f} ms;"
        f" filtered page avg {filtered_ms:.1f} ms",
        "",
        "presign_rps status_rps ratio p50_ms p99_ms",
        f"{presign.rps:.0f} {status.rps:.0f} {ratio:.2f} {presign.p50_ms:.2f} {presign.p99_ms:.2f}",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
