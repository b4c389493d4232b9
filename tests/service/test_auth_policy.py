"""The authorisation policy for state-changing Manage operations (issue 17, defect 6), pure."""

from __future__ import annotations

import logging

import orjson
import pytest

from twin.core.config import AuthConfig
from twin.service.auth import (
    PROTECTED_OPERATIONS,
    AuthPolicy,
    Caller,
    TokenSource,
    audit,
    authorize,
    is_loopback_host,
)


def policy(
    token: str | None = None,
    path: str | None = None,
    allow: dict | None = None,
    host: str = "0.0.0.0",
) -> AuthPolicy:
    env = {"POLARIS_TWIN_ADMIN_TOKEN": token} if token else {}
    cfg = AuthConfig(
        path, {op: list(ids) for op, ids in (allow or {}).items()}, list(PROTECTED_OPERATIONS)
    )
    return AuthPolicy.from_config(cfg, host, env)


def bearer(token: str) -> Caller:
    return Caller.from_metadata([("authorization", f"Bearer {token}")], peer="ipv4:10.0.0.7:5555")


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("twin.svc", False),
    ],
)
def test_loopback_listeners_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_reads_stay_open_and_writes_follow_the_listener_without_configuration() -> None:
    anon = Caller.from_metadata([])
    assert authorize("get_metrics", anon, policy()).allowed
    for op in PROTECTED_OPERATIONS:
        assert authorize(op, anon, policy(host="127.0.0.1")).allowed
        refused = authorize(op, anon, policy(host="0.0.0.0"))
        assert (refused.allowed, refused.code) == (False, "PERMISSION_DENIED")
        assert "POLARIS_TWIN_ADMIN_TOKEN" in refused.reason


def test_a_bearer_token_is_required_once_configured_even_on_loopback() -> None:
    p = policy(token="s3cret-token", host="127.0.0.1")
    assert authorize("reset_state", Caller.from_metadata([]), p).code == "UNAUTHENTICATED"
    assert (
        authorize("reset_state", Caller.from_metadata([("authorization", "Basic abc")]), p).code
        == "UNAUTHENTICATED"
    )
    assert authorize("reset_state", bearer("wrong"), p).code == "PERMISSION_DENIED"
    ok = authorize("reset_state", bearer("s3cret-token"), p)
    assert ok.allowed and ok.principal == "bearer-token"


def test_the_token_file_is_reread_when_it_changes(tmp_path) -> None:
    f = tmp_path / "token"
    f.write_text("first\n")
    p = policy(path=str(f))
    assert authorize("replay", bearer("first"), p).allowed
    f.write_text("second-longer\n")
    assert not authorize("replay", bearer("first"), p).allowed
    assert authorize("replay", bearer("second-longer"), p).allowed
    f.unlink()
    assert (
        authorize("replay", bearer("second-longer"), p).code == "PERMISSION_DENIED"
    )  # fails closed


def test_mtls_identities_are_allowed_per_operation() -> None:
    p = policy(allow={"snapshot": ["backup-job"], "*": ["ops-admin"]})
    assert authorize("snapshot", Caller(identities=("backup-job",)), p).allowed
    assert authorize("reset_state", Caller(identities=("ops-admin",)), p).allowed
    denied = authorize("reset_state", Caller(identities=("backup-job",)), p)
    assert denied.code == "PERMISSION_DENIED" and "backup-job" in denied.reason
    assert authorize("reset_state", Caller(), p).code == "UNAUTHENTICATED"


def test_token_source_prefers_the_environment(tmp_path) -> None:
    f = tmp_path / "t"
    f.write_text("from-file")
    assert TokenSource("from-env", str(f)).current() == "from-env"
    assert TokenSource(None, str(f)).current() == "from-file"
    assert not TokenSource(None, None).configured


def test_every_protected_call_is_audited_without_secrets(caplog) -> None:
    caplog.set_level(logging.INFO, logger="twin.audit")
    p = policy(token="tok")
    caller = bearer("nope")
    decision = authorize("reload_model", caller, p)
    audit("reload_model", {"implementation": "gemini", "api_key": "AIzaSECRET"}, caller, decision)
    record = orjson.loads(caplog.records[-1].getMessage())
    assert record["operation"] == "reload_model" and record["allowed"] is False
    assert (
        record["code"] == "PERMISSION_DENIED"
        and record["peer"] == "ipv4:10.0.0.7:5555"
        and record["time"]
    )
    assert "AIzaSECRET" not in caplog.text and "nope" not in caplog.text
