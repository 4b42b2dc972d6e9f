"""Logging set-up: text or JSON lines on stderr."""
from __future__ import annotations

import json
import logging
import sys
import time

from exporter.errors import scrub_reprs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class NoObjectReprs(logging.Filter):
    """A last line of defence: `<ssl.SSLContext object at 0x…>` in any message (aiohttp's,
    a library's) becomes `SSLContext`. The framework's own messages use errors.describe."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if " object at 0x" in msg:
            record.msg, record.args = scrub_reprs(msg), None
        return True


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(NoObjectReprs())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
