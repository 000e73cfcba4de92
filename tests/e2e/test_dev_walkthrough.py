"""Local development mode as a newcomer meets it: ``bucket-registry serve --dev`` started in an
empty directory, the README's walkthrough run by bash exactly as written, and the same flow
(presign, PUT, presign, GET through the embedded S3 store) over real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.dev_store import DEFAULT_STORE_PORT, DEMO_BUCKET
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
CLI = str(VENV / "bin" / "bucket-registry")
PROJECT_PREFIX = "incoming/"


def _env() -> dict[str, str]:
    """The caller's environment without anything that would point the service elsewhere."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BUCKET_REGISTRY_", "AWS_ENDPOINT_URL"))
    }


class DevServer:
    """``bucket-registry serve --dev`` as a child process with its working directory at ``cwd``."""

    def __init__(self, cwd: Path, store_port: int) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.store_port = store_port
        self.log_path = cwd / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_args(self) -> list[str]:
        return ["--store-port", str(self.store_port)]

    def start(self, timeout: float = 60.0) -> DevServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [CLI, "serve", "--dev", "--port", str(self.port), *self.store_args],
                cwd=self.cwd,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve --dev exited with {self.process.returncode}:\n{self.log}"
                )
            try:
                if httpx.get(self.url + "/_status", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve --dev did not answer /_status in {timeout} s:\n{self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # What Ctrl-C in the `make run` terminal sends; the store must stop with the server.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, user: str) -> str:
        minted = subprocess.run(
            [CLI, "dev-token", "--user", user],
            cwd=self.cwd,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return minted.stdout.strip()

    def demo_secret(self) -> str:
        path = self.cwd / ".bucket-registry-dev" / "secrets" / f"{DEMO_BUCKET}.json"
        return str(json.loads(path.read_text())["secret_access_key"])


@contextmanager
def running(cwd: Path, store_port: int | None = None) -> Iterator[DevServer]:
    server = DevServer(cwd, free_port() if store_port is None else store_port)
    try:
        yield server.start()
    finally:
        server.stop()


def presign(http: httpx.Client, server: DevServer, token: str, key: str, op: str) -> httpx.Response:
    return http.post(
        f"{server.url}/presign",
        json={"bucket": DEMO_BUCKET, "key": key, "op": op},
        headers={"Authorization": f"Bearer {token}"},
    )


def round_trip(http: httpx.Client, server: DevServer, token: str, key: str, data: bytes) -> str:
    """Upload ``data`` through a signed write URL, read it back through a signed read URL;
    returns the write URL."""
    write = presign(http, server, token, key, "write")
    assert write.status_code == 200, write.text
    assert write.json()["method"] == "PUT"
    put = http.put(write.json()["url"], content=data)
    assert put.status_code == 200, put.text
    read = presign(http, server, token, key, "read")
    assert read.status_code == 200, read.text
    got = http.get(read.json()["url"])
    assert got.status_code == 200, got.text
    assert got.content == data
    return str(write.json()["url"])


def readme_walkthrough(port: int, store_port: int) -> str:
    """The bash blocks of the README's "Try it locally" section, aimed at this test's ports."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Try it locally\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 2, "the walkthrough's bash blocks are gone from the README"
    script = "\n".join(blocks)
    assert "localhost:8000" in script and "127.0.0.1:9100" in script
    for written, actual in (
        ("localhost:8000", f"127.0.0.1:{port}"),
        ("localhost:9100", f"127.0.0.1:{store_port}"),
        ("127.0.0.1:9100", f"127.0.0.1:{store_port}"),
    ):
        script = script.replace(written, actual)
    return "set -euo pipefail\n" + script


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One dev server in a directory laid out like a checkout after `make run`."""
    cwd = tmp_path_factory.mktemp("checkout")
    (cwd / ".venv").symlink_to(VENV, target_is_directory=True)
    assert (cwd / ".venv" / "bin" / "bucket-registry").exists(), VENV
    with running(cwd) as server:
        yield server


def test_the_documented_ports_are_the_ones_make_run_uses() -> None:
    assert "serve --dev --port 8000" in (REPO / "Makefile").read_text()
    assert DEFAULT_STORE_PORT == 9100


def test_readme_walkthrough_runs_as_written(dev_server: DevServer) -> None:
    script = readme_walkthrough(dev_server.port, dev_server.store_port)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=dev_server.cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{dev_server.log}"
    out = done.stdout
    assert "hello, bucket registry\n" in out  # the GET through the signed read URL
    assert f"http://127.0.0.1:{dev_server.store_port}/{DEMO_BUCKET}/incoming/hello.txt?" in out
    assert out.count(" 403\n") == 2, out  # bob's write, bob on the admin API
    # Both validations (the demo bucket and the one registered by hand) pass every check.
    assert out.count('{"ok":true,"checks":') == 2, out
    assert '"actor":"dev-mode","action":"create"' in out

    # The bytes in the store are the file the walkthrough uploaded.
    with httpx.Client(timeout=10) as http:
        read = presign(http, dev_server, dev_server.token("bob"), "incoming/hello.txt", "read")
        assert read.status_code == 200, read.text
        stored = http.get(read.json()["url"])
    assert stored.content == (dev_server.cwd / "hello.txt").read_bytes()


def test_presign_put_get_through_the_embedded_store_and_bob_cannot_write(
    dev_server: DevServer,
) -> None:
    data = os.urandom(64 * 1024)
    alice, bob = dev_server.token("alice"), dev_server.token("bob")
    with httpx.Client(timeout=10) as http:
        url = round_trip(http, dev_server, alice, "incoming/from-python.bin", data)
        assert url.startswith(f"http://127.0.0.1:{dev_server.store_port}/{DEMO_BUCKET}/")

        denied = presign(http, dev_server, bob, "incoming/bob.bin", "write")
        assert denied.status_code == 403, denied.text
        assert denied.json()["ok"] is False and denied.json()["message"]
        readable = presign(http, dev_server, bob, "incoming/from-python.bin", "read")
        assert readable.status_code == 200, readable.text
        assert http.get(readable.json()["url"]).content == data

        # Outside the bound prefix nothing is signed, for alice either.
        outside = presign(http, dev_server, alice, "elsewhere/x.bin", "write")
        assert outside.status_code == 403, outside.text
        bucket = http.get(
            f"{dev_server.url}/admin/buckets/{DEMO_BUCKET}",
            headers={"Authorization": f"Bearer {alice}"},
        )
    assert bucket.status_code == 200, bucket.text
    assert bucket.json()["secret_ref"] is True
    secret = dev_server.demo_secret()
    for text in (url, denied.text, bucket.text, dev_server.log):
        assert secret not in text


def _audit(http: httpx.Client, server: DevServer, token: str) -> list[dict[str, Any]]:
    answer = http.get(
        f"{server.url}/admin/audit",
        params={"actor": "dev-mode"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()))


def test_restarts_on_the_same_state_reuse_the_demo_and_follow_the_store(tmp_path: Path) -> None:
    store_port = free_port()
    with running(tmp_path, store_port) as first, httpx.Client(timeout=10) as http:
        alice = first.token("alice")
        round_trip(http, first, alice, "incoming/first.txt", b"first run")
        created = _audit(http, first, alice)
    assert [row["action"] for row in created] == ["create", "add_prefix", "bind"]

    # Same state, same store port: nothing to change, nothing written; the store is new and
    # empty, and the demo bucket is there again.
    with running(tmp_path, store_port) as second, httpx.Client(timeout=10) as http:
        alice = second.token("alice")
        assert _audit(http, second, alice) == created
        gone = presign(http, second, alice, "incoming/first.txt", "read")
        assert http.get(gone.json()["url"]).status_code == 404
        round_trip(http, second, alice, "incoming/second.txt", b"second run")
        prefixes = http.get(
            f"{second.url}/admin/buckets/{DEMO_BUCKET}/prefixes",
            headers={"Authorization": f"Bearer {alice}"},
        ).json()
        bindings = http.get(
            f"{second.url}/admin/buckets/{DEMO_BUCKET}/bindings",
            headers={"Authorization": f"Bearer {alice}"},
        ).json()
    assert [p["prefix"] for p in prefixes] == [PROJECT_PREFIX]
    assert [(b["prefix"], b["resource_path"]) for b in bindings] == [
        (PROJECT_PREFIX, "/programs/DEV/projects/ABC")
    ]

    # A store on another port (0: any free one): the registration follows it, audited.
    with running(tmp_path, 0) as third, httpx.Client(timeout=10) as http:
        alice = third.token("alice")
        rows = _audit(http, third, alice)
        url = round_trip(http, third, alice, "incoming/third.txt", b"third run")
        banner = re.search(r"S3 store: (http://127\.0\.0\.1:\d+)", third.log)
    assert rows[:3] == created
    assert [row["action"] for row in rows[3:]] == ["update"]
    assert set(rows[3]["diff"]["after"]) == {"endpoint"}
    assert banner is not None and url.startswith(banner.group(1) + f"/{DEMO_BUCKET}/")
    assert banner.group(1) != f"http://127.0.0.1:{store_port}"


def test_a_busy_store_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [CLI, "serve", "--dev", "--port", str(free_port()), "--store-port", str(port)],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "--store-port" in done.stderr
    assert "Traceback" not in done.stderr


def test_store_port_without_dev_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [CLI, "serve", "--store-port", "9100"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--store-port only applies with --dev" in done.stderr


def test_the_service_without_dev_mode_never_imports_moto() -> None:
    probe = (
        "import sys\n"
        "import app.cli, app.main, app.container\n"
        "from app.config import Settings\n"
        "app.main.create_app(Settings(database_url='sqlite+aiosqlite:///:memory:'))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'moto' or m == 'app.dev_store']\n"
        "print(sorted(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
