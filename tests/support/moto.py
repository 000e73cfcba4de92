"""A real moto server (S3, STS, Secrets Manager, IAM) over HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
from moto.server import ThreadedMotoServer

from tests.support.net import free_port, wait_for_http


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self._server.start()
        wait_for_http(self.url + "/moto-api/")
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every bucket, secret, role and session (between tests)."""
        httpx.post(self.url + "/moto-api/reset", timeout=10).raise_for_status()
