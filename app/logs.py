"""Structured JSON logs carrying the request id, and the middleware that assigns it."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = ("/_status", "/metrics")

access_log = logging.getLogger("bucket_registry.access")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        # uvicorn attaches an ANSI-coloured copy of its message; JSON logs want only one.
        record.__dict__.pop("color_message", None)
        return True


def configure_logging(level: str = "INFO", *, json_format: bool = True) -> None:
    """Send every log line (ours, uvicorn's, libraries') to stderr, as JSON with a request id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our middleware writes the access log, with the request id; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    # Chatty libraries whose debug output could include request details.
    for name in ("botocore", "aiobotocore", "urllib3", "httpx", "httpcore", "gen3authz"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class RequestIdMiddleware:
    """Gives each request an id (the caller's ``X-Request-ID`` when sane), echoes it in the
    response, and writes one access log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            if not path.startswith(_QUIET_PATHS):
                extra: dict[str, Any] = {
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                }
                access_log.info("request", extra=extra)
            request_id_var.reset(token)
