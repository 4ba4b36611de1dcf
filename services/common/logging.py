"""JSON logs that carry the request id of the call being served.

The request id enters at the gateway (or a client), travels in gRPC metadata as
``x-request-id`` and is kept in a context variable, so every log line written while serving
that call, in any service, can be joined on it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from typing import TextIO

REQUEST_ID_HEADER = "x-request-id"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("zhiku_request_id", default="")


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the shape log collectors (Loki, Elastic) ingest as is."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")


class CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream that was
    there when logging was configured: a test runner swaps and closes its capture streams, and
    a server thread still answering afterwards must not log into a closed file."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """StreamHandler assigns its stream on construction; there is nothing to keep."""


def configure_logging(service: str, level: str = "INFO", json_logs: bool = True) -> None:
    """Route the root logger to stderr in the chosen format; safe to call more than once."""
    handler = CurrentStderrHandler()
    handler.setFormatter(JsonFormatter(service) if json_logs else PlainFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "jieba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
