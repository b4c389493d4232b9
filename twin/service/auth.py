"""Authorisation of the Manage operations that change state.

Reads stay open. ``reset_state``, ``replay``, ``reload_model`` and ``snapshot`` (the
``auth.protected_operations``) need an authorised caller, by either of:

- a bearer token: ``authorization: Bearer <token>`` metadata (gRPC) or header (REST),
  compared in constant time with ``POLARIS_TWIN_ADMIN_TOKEN`` or the first line of
  ``auth.admin_token_file`` (re-read when the file changes, so a rotated Kubernetes
  Secret takes effect without a restart). No token → UNAUTHENTICATED; a wrong one →
  PERMISSION_DENIED.
- an mTLS client identity (certificate common name or subject alternative name) on the
  allow-list ``auth.mtls_allow`` for that operation (or for ``"*"``, every protected one).

With neither configured the listener decides: a twin listening on loopback only allows
them (the caller is on the same host), any other listener refuses them. The peer's own
address is deliberately not trusted: ``kubectl port-forward`` traffic arrives from
loopback inside the pod.

Every decision on a protected operation is written to the ``twin.audit`` logger (who,
what, when, the outcome) by :func:`audit`; the policy itself is pure.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from twin.core.config import DEFAULT_PROTECTED, AuthConfig
from twin.core.redact import redact

audit_log = logging.getLogger("twin.audit")

PROTECTED_OPERATIONS = DEFAULT_PROTECTED
TOKEN_ENV = "POLARIS_TWIN_ADMIN_TOKEN"
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """Whether a listen address accepts only local connections (0.0.0.0 and :: do not)."""
    h = host.strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class TokenSource:
    """The admin token: the environment variable, else the file's first line (re-read on change)."""

    def __init__(self, env_value: str | None, path: str | None) -> None:
        self._env = (env_value or "").strip() or None
        self._path = Path(path) if path else None
        self._stamp: tuple[float, int] | None = None
        self._cached: str | None = None

    @property
    def configured(self) -> bool:
        return self._env is not None or self._path is not None

    def current(self) -> str | None:
        if self._env is not None:
            return self._env
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None  # a missing file authorises nobody
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            lines = self._path.read_text(encoding="utf-8", errors="replace").splitlines()
            self._cached = lines[0].strip() if lines and lines[0].strip() else None
            self._stamp = stamp
        return self._cached


@dataclass(frozen=True)
class AuthPolicy:
    tokens: TokenSource
    mtls_allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    loopback_listener: bool = False
    protected: frozenset[str] = frozenset(PROTECTED_OPERATIONS)

    @classmethod
    def from_config(
        cls, auth: AuthConfig, listen_host: str, environ: Mapping[str, str] = os.environ
    ) -> AuthPolicy:
        return cls(
            tokens=TokenSource(environ.get(TOKEN_ENV), auth.admin_token_file),
            mtls_allow={op: tuple(ids) for op, ids in auth.mtls_allow.items()},
            loopback_listener=is_loopback_host(listen_host),
            protected=frozenset(auth.protected_operations),
        )

    def allowed_identities(self, op: str) -> tuple[str, ...]:
        return self.mtls_allow.get(op, ()) + self.mtls_allow.get("*", ())

    def describe(self) -> str:
        """How destructive operations are authorised here, for logs at start."""
        ways = []
        if self.tokens.configured:
            ways.append("a bearer token")
        if self.mtls_allow:
            ways.append("an allow-listed mTLS client identity")
        if ways:
            return " or ".join(ways)
        return (
            "loopback listener: allowed locally"
            if self.loopback_listener
            else "refused (no token or mTLS allow-list configured)"
        )


@dataclass(frozen=True)
class Caller:
    peer: str = ""
    identities: tuple[str, ...] = ()
    bearer: str | None = None
    authorization_present: bool = False

    @classmethod
    def from_metadata(
        cls, metadata: Iterable[tuple[str, Any]], identities: Sequence[str] = (), peer: str = ""
    ) -> Caller:
        header = None
        for key, value in metadata:
            if key.lower() == "authorization":
                header = (
                    value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                )
                break
        bearer = None
        if header is not None:
            scheme, _, rest = header.strip().partition(" ")
            bearer = rest.strip() if scheme.lower() == "bearer" and rest.strip() else None
        return cls(peer, tuple(identities), bearer, header is not None)


def caller_of(context: Any) -> Caller:
    """The caller as a gRPC (or REST gateway) context shows it: metadata, mTLS identity, peer."""
    identities: list[str] = []
    auth_context = getattr(context, "auth_context", None)
    if auth_context is not None:
        ctx = auth_context() or {}
        for key in ("x509_common_name", "x509_subject_alternative_name"):
            for value in ctx.get(key, ()):
                ident = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                if ident and ident not in identities:
                    identities.append(ident)
    peer = getattr(context, "peer", None)
    return Caller.from_metadata(
        context.invocation_metadata() or (), identities, peer() if peer else ""
    )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str  # OK, UNAUTHENTICATED or PERMISSION_DENIED (the gRPC status names)
    reason: str
    principal: str


def authorize(op: str, caller: Caller, policy: AuthPolicy) -> Decision:
    if op not in policy.protected:
        return Decision(True, "OK", "not a protected operation", "anyone")
    allowed_ids = policy.allowed_identities(op)
    for ident in caller.identities:
        if ident in allowed_ids:
            return Decision(True, "OK", "mTLS identity on the allow-list", f"mtls:{ident}")
    token = policy.tokens.current()
    if policy.tokens.configured:
        if caller.bearer is None:
            why = (
                "malformed authorization metadata (expected 'Bearer <token>')"
                if caller.authorization_present
                else "no authorization metadata"
            )
            return Decision(
                False, "UNAUTHENTICATED", f"{op} needs an authorised caller: {why}", _who(caller)
            )
        if token is not None and hmac.compare_digest(caller.bearer.encode(), token.encode()):
            return Decision(True, "OK", "bearer token", "bearer-token")
        return Decision(
            False, "PERMISSION_DENIED", f"{op}: the bearer token is not accepted", _who(caller)
        )
    if allowed_ids or policy.mtls_allow:
        if not caller.identities:
            return Decision(
                False,
                "UNAUTHENTICATED",
                f"{op} needs a client certificate on the mTLS allow-list",
                _who(caller),
            )
        return Decision(
            False,
            "PERMISSION_DENIED",
            f"{op}: client identity {caller.identities[0]!r} is not on the allow-list",
            _who(caller),
        )
    if policy.loopback_listener:
        return Decision(True, "OK", "loopback listener without authorisation configured", "local")
    return Decision(
        False,
        "PERMISSION_DENIED",
        f"{op} is refused on a non-loopback listener until authorisation is configured "
        f"(set {TOKEN_ENV} or auth.admin_token_file, or auth.mtls_allow)",
        _who(caller),
    )


def _who(caller: Caller) -> str:
    return f"mtls:{caller.identities[0]}" if caller.identities else "anonymous"


def audit(
    op: str, params: Mapping[str, str], caller: Caller, decision: Decision, outcome: str = ""
) -> None:
    """One line per protected call on the ``twin.audit`` logger: who, what, when, the result."""
    record = {
        "audit": "manage",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "operation": op,
        "parameters": redact(dict(params)),
        "principal": decision.principal,
        "peer": caller.peer,
        "allowed": decision.allowed,
        "code": decision.code,
        "reason": decision.reason,
    }
    if outcome:
        record["outcome"] = outcome
    audit_log.log(
        logging.INFO if decision.allowed else logging.WARNING, "%s", orjson.dumps(record).decode()
    )
