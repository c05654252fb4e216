"""How the server's logs look: one JSON object per line (for log shippers),
or plain text (for a terminal), chosen by ``Settings.log_format``.

``log_config(settings)`` is a ``logging.config.dictConfig`` dictionary that
``modelbench serve`` hands to uvicorn, so that the ``modelbench`` loggers and
uvicorn's own share one format and one level. uvicorn's access log is off:
TrafficMiddleware writes a richer one (request id, route, model, latency).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from modelbench.config import Settings

# Attributes every LogRecord has; anything else on a record came from
# ``extra=`` and becomes a field of the JSON line.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig for ``settings.log_format`` and ``settings.log_level``."""
    level = settings.log_level.upper()
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "modelbench": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
