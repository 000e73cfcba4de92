"""The production log format: one JSON object per line, with the request id and extra fields."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from app.logs import access_log, configure_logging, request_id_var


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What the service writes to stderr once ``configure_logging`` ran in the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Tools run earlier in the session (import-linter) may configure logging with
    # disable_existing_loggers; the service's own start-up never does.
    loggers = [access_log, logging.getLogger("app.other")]
    disabled = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = False
    yield lambda: capsys.readouterr().err
    root.handlers, root.level = handlers, level
    for logger, was in zip(loggers, disabled, strict=True):
        logger.disabled = was


def test_access_line_is_one_json_object_with_the_request_id(stderr: Callable[[], str]) -> None:
    configure_logging("INFO")
    token = request_id_var.set("req-42")
    try:
        access_log.info(
            "access decision",
            extra={"user": "alice", "key": "ünï/k", "status": 200, "duration_ms": 1.25},
        )
        logging.getLogger("app.other").warning("plain %s", "message")
    finally:
        request_id_var.reset(token)
    first, second = (json.loads(line) for line in stderr().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "bucket_registry.access",
        "message": "access decision",
        "request_id": "req-42",
        "user": "alice",
        "key": "ünï/k",
        "status": 200,
        "duration_ms": 1.25,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", first["time"])
    assert second["message"] == "plain message" and second["level"] == "WARNING"
    assert second["request_id"] == "req-42"


def test_unserialisable_extras_are_written_as_text(stderr: Callable[[], str]) -> None:
    configure_logging("INFO")
    access_log.info("signer built", extra={"when": object.__new__(type("Odd", (), {}))})
    line = json.loads(stderr())
    assert isinstance(line["when"], str) and "Odd" in line["when"]
