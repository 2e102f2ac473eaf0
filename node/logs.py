"""Logging for the daemon: every record carries the node id and the current round.

`configure(node_id, fmt, level)` installs one stderr handler on the `declora` logger;
`set_round(r)` updates the round shown on later records. `fmt="json"` writes one JSON
object per line (time, level, logger, node, round, message, and any `extra=` fields).
"""

from __future__ import annotations

import json
import logging
import sys
import time

_context = {"node": "-", "round": 0}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "node", "round"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _context["node"]
        record.round = _context["round"]
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node", "-"),
            "round": getattr(record, "round", 0),
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(node_id: str, fmt: str = "text", level: str = "INFO") -> logging.Logger:
    _context["node"] = node_id
    logger = logging.getLogger("declora")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(node)s r%(round)s] %(message)s")
        )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def set_round(r: int) -> None:
    _context["round"] = r
