"""How the ``hyco`` command's log lines look (``--log-format``): text for a terminal, or one
JSON object a line for a log collector; secrets hidden in both.

A log line may quote a relay address or an error built from one, so every line is redacted
on its way out: the ``sb-hc-token`` and ``sig`` values of addresses and tokens
(:func:`~hyco_core.redact_url`), and the ``SharedAccessKey`` and ``SharedAccessSignature`` of a
connection string.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Literal

from hyco_core import redact_url

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "configure_logging", "redact_secrets"]

LogFormat = Literal["text", "json"]

# A connection string's secrets run to the next ';' (or the end of the text, or a quote of
# the repr the text may be in).
_CONNECTION_STRING_SECRET = re.compile(
    r"(?i)\b(SharedAccessKey|SharedAccessSignature)\s*=\s*[^;\s'\"]*"
)
# What a record carries of itself: anything else in its __dict__ came as ``extra``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact_secrets(text: str) -> str:
    """``text`` with every token, signature and key it holds replaced by ``***``."""
    return _CONNECTION_STRING_SECRET.sub(lambda match: f"{match[1]}=***", redact_url(text))


class TextFormatter(logging.Formatter):
    """``time level logger: message``, with the traceback when any, secrets hidden."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``exception`` (its traceback) when there is one, the ``thread`` and
    ``process`` it came from, and the fields given as ``extra``; secrets hidden."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        document: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_secrets(record.getMessage()),
        }
        if record.exc_info:
            document["exception"] = redact_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exception"] = redact_secrets(record.exc_text)
        if record.stack_info:
            document["stack"] = redact_secrets(self.formatStack(record.stack_info))
        document["thread"] = record.threadName
        document["process"] = record.process
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and name not in document:
                document[name] = _loggable(value)
        return json.dumps(document, ensure_ascii=False)


def _loggable(value: object) -> object:
    """An extra field as JSON can hold it, secrets hidden from its text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_secrets(value if isinstance(value, str) else repr(value))


def configure_logging(level: int, log_format: LogFormat) -> None:
    """Send log lines of ``level`` and above to standard error, as text or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
