"""Bodies before authentication, over real HTTP: `bucket-registry serve` in its own process.

A request with no credentials is answered before its body is read, and bodies are capped per
route, from Content-Length and while they stream. The server is a separate process so its
memory can be measured on its own while a client pushes 100 MB at it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.api.limits import BODY_LIMITS, DEFAULT_BODY_LIMIT, MIB
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.net import free_port, wait_for_http

CONCURRENCY_LIMIT = 12


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    issuer: FenceIssuer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def token(self) -> str:
        return self.issuer.token("submitter")


@pytest.fixture(scope="module")
def served(
    issuer: FenceIssuer, arborist_server: ArboristStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("served")
    port = free_port()
    env = {
        **os.environ,
        "BUCKET_REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'registry.db'}",
        "BUCKET_REGISTRY_USER_API": issuer.user_api,
        "BUCKET_REGISTRY_ARBORIST_URL": arborist_server.url,
        "BUCKET_REGISTRY_LIMIT_CONCURRENCY": str(CONCURRENCY_LIMIT),
        "BUCKET_REGISTRY_LOG_LEVEL": "WARNING",
    }
    with (workdir / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_status", timeout=60)
        yield Served(process, port, issuer)
    finally:
        process.terminate()
        process.wait(timeout=15)


def connect(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, *, token: str | None = None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: registry", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, object]


def read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    header_block, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, json.loads(rest[:length] or b"{}"))


def push(sock: socket.socket, total: int, chunk: bytes) -> int:
    """Send up to ``total`` bytes of body; how many went out before the server hung up."""
    sent = 0
    sock.settimeout(5)
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_100_mb_body_without_a_token_is_401_and_never_read(served: Served) -> None:
    hundred_mb = 100 * MIB
    baseline = served.rss_kib()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, served.rss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with connect(served) as sock:
            sock.sendall(head("/presign", Content_Length=str(hundred_mb)))
            # The answer comes before a single byte of the body was sent.
            answer = read_answer(sock)
            sent = push(sock, hundred_mb, b"x" * MIB)
        stalled_status = httpx.get(served.url + "/_status", timeout=5)
    finally:
        done.set()
        sampler.join()

    assert answer.status == 401
    assert answer.body["ok"] is False and answer.body["error"] == "unauthenticated"
    assert "Authorization: Bearer" in str(answer.body["message"])
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.headers["connection"] == "close"
    assert answer.headers.get("x-request-id")
    # The server hung up: at most what the kernel's socket buffers absorb got out.
    assert sent < 32 * MIB, sent
    # (169 -> 768 MiB before the fix; what remains is noise.)
    assert (peak - baseline) < 16 * 1024, (baseline, peak)
    assert stalled_status.status_code == 200


def test_a_chunked_body_without_a_token_is_401_before_it_is_read(served: Served) -> None:
    with connect(served) as sock:
        sock.sendall(head("/admin/buckets", Transfer_Encoding="chunked"))
        answer = read_answer(sock)
    assert answer.status == 401 and answer.body["error"] == "unauthenticated"


@pytest.mark.parametrize(
    "path", ["/presign", "/multipart/complete", "/presign/batch", "/admin/buckets", "/nowhere"]
)
def test_every_body_method_needs_credentials_first(served: Served, path: str) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = httpx.request(method, served.url + path, content=b"{}", timeout=5)
        assert response.status_code == 401, (method, response.text)
        assert response.json()["error"] == "unauthenticated"
    # Methods without a body are the routes' business (here: a liveness probe).
    assert httpx.get(served.url + "/_status", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/presign", DEFAULT_BODY_LIMIT),
        ("/multipart/init", DEFAULT_BODY_LIMIT),
        ("/admin/buckets", DEFAULT_BODY_LIMIT),
        ("/presign/batch", BODY_LIMITS["/presign/batch"]),
        ("/multipart/complete", BODY_LIMITS["/multipart/complete"]),
    ],
)
def test_a_declared_length_over_the_route_limit_is_413_unread(
    served: Served, path: str, limit: int
) -> None:
    with connect(served) as sock:
        sock.sendall(head(path, token=served.token(), Content_Length=str(limit + 1)))
        answer = read_answer(sock)
    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    assert str(limit) in str(answer.body["message"])
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/presign", DEFAULT_BODY_LIMIT), ("/presign/batch", BODY_LIMITS["/presign/batch"])],
)
def test_a_chunked_body_is_counted_while_it_streams(served: Served, path: str, limit: int) -> None:
    with connect(served) as sock:
        sock.sendall(head(path, token=served.token(), Transfer_Encoding="chunked"))
        sent = 0
        piece = chunked(b" " * 8192)
        try:
            while sent <= limit + 8192:
                sock.sendall(piece)
                sent += 8192
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
    assert answer.status == 413, answer
    assert answer.body["error"] == "payload_too_large"


def test_bodies_within_the_limit_reach_the_route(served: Served) -> None:
    token = served.token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    # Exactly at the limit: parsed, and judged by the route (an unknown field here).
    padding = DEFAULT_BODY_LIMIT - len(b'{"bucket": "b", "key": "k", "op": "read", "x": ""}')
    body = json.dumps({"bucket": "b", "key": "k", "op": "read", "x": " " * padding}).encode()
    assert len(body) == DEFAULT_BODY_LIMIT
    at_limit = httpx.post(served.url + "/presign", content=body, headers=headers, timeout=10)
    assert at_limit.status_code == 400, at_limit.text
    assert at_limit.json()["details"][0]["loc"] == ["body", "x"], at_limit.text

    # A big batch (~100 KiB, over the single-request limit) is the batch route's to judge.
    item = {"bucket": "nope", "key": "k/" + "a" * 1000, "op": "read"}
    batch = json.dumps({"requests": [item] * 100}).encode()
    assert DEFAULT_BODY_LIMIT < len(batch) < BODY_LIMITS["/presign/batch"]
    answered = httpx.post(served.url + "/presign/batch", content=batch, headers=headers, timeout=10)
    assert answered.status_code == 200, answered.text
    assert {r["error"]["code"] for r in answered.json()["results"]} == {"bucket_not_found"}

    # A small chunked body with a token is read and parsed as usual.
    with connect(served) as sock:
        payload = json.dumps({"bucket": "nope", "key": "k", "op": "read"}).encode()
        sock.sendall(head("/presign", token=token, Transfer_Encoding="chunked"))
        sock.sendall(chunked(payload[:10]) + chunked(payload[10:]) + b"0\r\n\r\n")
        answer = read_answer(sock)
    assert answer.status == 404 and answer.body["error"] == "bucket_not_found", answer


def test_limit_concurrency_setting_reaches_uvicorn(served: Served) -> None:
    """`serve` passes BUCKET_REGISTRY_LIMIT_CONCURRENCY on: past it, requests get 503 at once."""
    idle = [connect(served) for _ in range(CONCURRENCY_LIMIT)]
    try:
        time.sleep(0.2)
        refused = httpx.get(served.url + "/_status", timeout=5)
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(served.url + "/_status", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
