"""An HTTP request dressed as a ``grpc.aio.ServicerContext`` so the REST gateway runs
the servicer's own methods: one validation, one admission limit, one deadline rule,
one set of RPC metrics, and the same authorisation hook (``invocation_metadata()``
carries the HTTP ``Authorization`` header as gRPC metadata would).

Only what a unary handler uses is provided: ``abort``, ``time_remaining``, ``code``,
``set_code``/``set_details``, ``invocation_metadata``, ``peer``, ``auth_context``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import grpc

# gRPC status → HTTP status, as google.rpc.Code documents it (and grpc-gateway maps).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_TIMEOUT = re.compile(r"^\s*(\d{1,8})\s*([HMSmun])\s*$")
_UNIT = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Never forwarded as metadata: hop-by-hop and browser credentials other than Authorization.
_SKIP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "cookie",
    "host",
    "content-length",
}


def parse_grpc_timeout(value: str) -> float:
    """``Grpc-Timeout`` header value (``"2S"``, ``"500m"``) → seconds; ValueError if malformed."""
    m = _TIMEOUT.match(value)
    if not m:
        raise ValueError(
            f"Grpc-Timeout must be 1-8 digits and a unit (H, M, S, m, u, n), got {value!r}"
        )
    return int(m.group(1)) * _UNIT[m.group(2)]


class Aborted(Exception):
    """Raised by ``HttpContext.abort``: the handler ended with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class HttpContext:
    def __init__(
        self,
        headers: Mapping[str, str],
        peer: str,
        deadline: float | None = None,
        auth: Mapping[str, Sequence[bytes]] | None = None,
    ) -> None:
        self._deadline = deadline  # time.monotonic() value, or None
        self._metadata = tuple((k.lower(), v) for k, v in headers.items() if k.lower() not in _SKIP)
        self._peer = peer
        self._auth = dict(auth or {})
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        self._code = code
        self._details = details
        raise Aborted(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, Sequence[bytes]]:
        return self._auth

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return self._code is not None
