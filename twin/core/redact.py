"""Masking of credentials before anything leaves the process (config dumps, logs, dead letters).

Two kinds of secret exist here: values under secret-looking keys (``password``, ``token``,
``api_key``, ...), and credentials inside URLs (``nats://user:pass@host``), possibly several
in one comma-separated list or inside a sentence of a log line. Every place that shows text
to someone passes it through :func:`redact_text` or :func:`redact`, so there is one rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_KEY_HINTS = (
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "creds",
    "credential",
    "key_file",
    "authorization",
)
# scheme:// then everything up to the LAST "@" before whitespace, "/" or the next URL: a
# password may itself hold "@" or ",", and must not survive in part.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)(?:(?![A-Za-z][A-Za-z0-9+.\-]*://)[^\s/])*@")


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""
    if "@" not in text:
        return text
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def is_secret_key(key: object) -> bool:
    k = str(key).lower()
    return any(h in k for h in SECRET_KEY_HINTS)


def redact(value: Any) -> Any:
    """A copy of a config-like value that is safe to show."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
