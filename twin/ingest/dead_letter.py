"""Dead-letter records: what could not be ingested, why, and the original bytes.

A record is JSON on the error subject: ``{reason, subject, index?, batch_id?,
payload, payload_encoding ("utf-8" | "base64"), payload_bytes, payload_truncated,
received_at, twin}``. Payloads larger than ``MAX_ECHO`` are cut (and say so) so a
dead-letter record itself never exceeds the server's max payload.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from twin.core.redact import redact_text

MAX_ECHO = 64 * 1024


# Rejections by the configured limits (twin.core.limits), each its own class.
_LIMITS = (
    ("outside the accepted window", "timestamp"),
    ("series_limit", "series_limit"),
    ("nested deeper than", "too_deep"),
    ("of length <=", "too_long"),
    ("longer than limits.", "too_long"),
)


def reason_class(reason: str) -> str:
    """A short, bounded label for counting reasons (the full text goes in the record)."""
    r = reason.lower()
    if r.startswith("oversize"):
        return "oversize"
    for key, label in _LIMITS:
        if key in r:
            return label
    for key in (
        "oversize",
        "invalid json",
        "not finite",
        "regex",
        "unknown status",
        "unsupported event_type",
        "calibration",
        "execution",
        "batch",
    ):
        if key in r:
            return key.replace(" ", "_")
    if "expected" in r or "missing" in r or "out of range" in r or "invalid" in r:
        return "validation"
    return "other"


def build_record(
    reason: str,
    subject: str,
    payload: bytes,
    *,
    index: int | None = None,
    batch_id: str | None = None,
    twin: str = "",
) -> bytes:
    echo = payload[:MAX_ECHO]
    try:
        text: str = redact_text(echo.decode("utf-8"))
        encoding = "utf-8"
    except UnicodeDecodeError:
        text = base64.b64encode(echo).decode("ascii")
        encoding = "base64"
    record: dict[str, Any] = {
        "reason": redact_text(reason),
        "subject": subject,
        "payload": text,
        "payload_encoding": encoding,
        "payload_bytes": len(payload),
        "payload_truncated": len(payload) > MAX_ECHO,
        "received_at": time.time(),
        "twin": twin,
    }
    if index is not None:
        record["index"] = index
    if batch_id:
        record["batch_id"] = batch_id
    return orjson.dumps(record)
