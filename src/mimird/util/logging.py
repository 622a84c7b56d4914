"""Structured logs in logfmt (Mimir's default) or JSON, through the standard logging module.

Call `log.info("msg", extra={"kv": {...}})` or use `kv_log(logger, level, msg, **fields)`.
"""

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
                logging.ERROR: "error", logging.CRITICAL: "error"}


def _logfmt_value(value) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str):
        super().__init__()
        self.json_format = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "caller": f"{record.module}.py:{record.lineno}",
            "level": _LEVEL_NAMES.get(record.levelno, "info"),
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}) or {})
        if record.exc_info:
            fields["err"] = self.formatException(record.exc_info).replace("\n", "\\n")
        if self.json_format:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    """Route every mimird logger to stderr in the chosen format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger("mimird")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False


def kv_log(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    """Log `msg` with logfmt key/value fields."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"kv": fields}, stacklevel=2)
