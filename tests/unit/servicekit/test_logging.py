"""Every service's log lines name their request, uvicorn's access log included."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import uvicorn

from servicekit import requestid
from servicekit.telemetry import LOG_FORMAT, UVICORN_LOGGERS, setup_logging

pytestmark = pytest.mark.unit


async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never served
    raise AssertionError


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    names = ("", *UVICORN_LOGGERS)
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names
    }
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_uvicorns_own_access_handler_gives_way_to_the_one_format() -> None:
    uvicorn.Config(app, access_log=True)  # uvicorn's default log_config: a handler and format of its own
    assert logging.getLogger("uvicorn.access").handlers
    setup_logging("INFO")
    access = logging.getLogger("uvicorn.access")
    assert access.handlers == [] and access.propagate


def test_a_silenced_access_log_stays_silent() -> None:
    uvicorn.Config(app, access_log=False, log_config=None)
    setup_logging("INFO")
    access = logging.getLogger("uvicorn.access")
    assert access.handlers == [] and not access.propagate


def test_an_access_line_names_its_request() -> None:
    requestid.install()
    token = requestid.request_id.set("req-line-1")
    try:
        record = logging.getLogger("uvicorn.access").makeRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", "/healthz", "1.1", 200),
            None,
        )
    finally:
        requestid.request_id.reset(token)
    line = logging.Formatter(LOG_FORMAT).format(record)
    assert 'uvicorn.access request_id=req-line-1 127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200' in line
