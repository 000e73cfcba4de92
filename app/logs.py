"""Structured JSON logs carrying the request id, and the middleware that assigns it."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.tracing import Tracing

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# Fields a handler adds to its request's single access-log line (see ``annotate_request``).
_request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "request_fields", default=None
)


def annotate_request(**fields: Any) -> bool:
    """Add ``fields`` to the access-log line of the HTTP request being served.

    Returns False outside a request, so the caller can log on its own. One line per request
    (rather than an access line plus a decision line) halves the logging cost of the data path.
    """
    current = _request_fields.get()
    if current is None:
        return False
    current.update(fields)
    return True


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
    # No format here names the caller's file, line or function: skip the stack walk that
    # finds them for every record (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_format:
        handler.setFormatter(
            # The same fields as the stdlib-json formatter, serialised by orjson: the access
            # line is written once per request.
            OrjsonFormatter(
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
    quiet_libraries(root.level)


# Libraries whose debug output includes request and response bodies — for Secrets Manager
# that is the secret itself — so they never log below WARNING, whatever our level.
CHATTY_LIBRARIES = ("botocore", "aiobotocore", "boto3", "urllib3", "httpx", "httpcore", "gen3authz")


def quiet_libraries(level: int) -> None:
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))


class RequestIdMiddleware:
    """Gives each request an id (the caller's ``X-Request-ID`` when sane), echoes it in the
    response, and writes one access log line per request."""

    def __init__(
        self,
        app: ASGIApp,
        observe: Callable[[str, str, int, float], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.tracing = tracing

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
        # 128 random bits as 32 hex digits, like uuid4().hex without building a UUID.
        request_id = request_id or os.urandom(16).hex()
        token = request_id_var.set(request_id)
        fields: dict[str, Any] = {}
        fields_token = _request_fields.set(fields)
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

        span_context = (
            self.tracing.request_span(scope.get("method", ""))
            if self.tracing is not None
            else contextlib.nullcontext()
        )
        try:
            with span_context as span:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    if span is not None:
                        route = getattr(scope.get("route"), "path", None) or "unmatched"
                        span.update_name(f"{scope.get('method', '')} {route}")
                        span.set_attribute("http.route", route)
                        span.set_attribute("http.response.status_code", status)
                        span.set_attribute("bucket_registry.request_id", request_id)
        finally:
            path = scope.get("path", "")
            elapsed = time.perf_counter() - started
            if self.observe is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.observe(scope.get("method", ""), template, status, elapsed)
            if not path.startswith(_QUIET_PATHS):
                fields.update(
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
                access_log.info(
                    "access decision" if "decision" in fields else "request", extra=fields
                )
            _request_fields.reset(fields_token)
            request_id_var.reset(token)
