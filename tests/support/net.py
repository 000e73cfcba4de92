"""Small helpers for starting real servers on 127.0.0.1 inside tests."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    def up() -> bool:
        try:
            httpx.get(url, timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    wait_until(up, timeout)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler for stub servers that speak JSON.

    ``self.stub`` is whatever object the server was started for (``BackgroundHTTPServer.stub``).
    """

    content_type = "application/json"

    def log_message(self, *_args: Any) -> None:
        pass

    @property
    def stub(self) -> Any:
        return self.server.owner.stub  # type: ignore[attr-defined]

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 refuses connections under the bursts tests create.
    request_queue_size = 256


class BackgroundHTTPServer:
    """A ThreadingHTTPServer on 127.0.0.1 that can be stopped and started again on one port."""

    def __init__(
        self,
        handler_cls: type,
        port: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler_cls = handler_cls
        self.port = port or free_port()
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> BackgroundHTTPServer:
        server = _Server(("127.0.0.1", self.port), self.handler_cls)
        server.owner = self  # type: ignore[attr-defined]
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None
