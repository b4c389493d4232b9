"""Console and/or file logging, as text or JSON lines."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import orjson

from twin.core.config import DebuggingConfig
from twin.core.redact import redact_text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class RedactingFormatter(logging.Formatter):
    """Masks URL credentials in whatever the wrapped formatter produces (messages, tracebacks)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


def setup_logging(cfg: DebuggingConfig, level_override: str | None = None) -> None:
    level = (level_override or cfg.log_level).upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    inner = (
        JsonFormatter()
        if cfg.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    fmt = RedactingFormatter(inner)
    if cfg.log_to_console or not cfg.log_file:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        root.addHandler(h)
    if cfg.log_file:
        Path(cfg.log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(cfg.log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.setLevel(level)
    if not cfg.enable_detailed_logging and level != "DEBUG":
        for noisy in ("nats", "grpc", "asyncio"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
