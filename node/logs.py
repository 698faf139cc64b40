"""Structured logs: one JSON object per line on stderr (design §15).

Each record carries ``ts``, ``level``, ``logger``, ``msg`` and any ``extra=``
fields the caller attached (``corridor``, ``peer``, ``reason``, ...); an
exception becomes ``exc_type``, ``exc`` and a one-line ``where``. Operators can
grep it, ship it, or read it with ``jq``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["exc_type"] = type(exc).__name__
            entry["exc"] = str(exc)
            frames = traceback.extract_tb(exc.__traceback__)
            if frames:
                last = frames[-1]
                entry["where"] = f"{last.filename}:{last.lineno} in {last.name}"
            entry["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
