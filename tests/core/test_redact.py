"""Issue 17, defect 8: no credential survives redaction, wherever it sits."""

from __future__ import annotations

import logging

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.config import redact_config
from twin.core.redact import MASK, redact_text
from twin.ingest.dead_letter import build_record
from twin.logging_setup import RedactingFormatter

# Passwords may hold anything a URL's userinfo can carry unencoded in practice, including
# "@", ":" and ","; hosts use another alphabet so "the secret is gone" is a plain test.
secrets = st.text(
    alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789!$%&*+=@:,;~", min_size=8, max_size=24
).filter(lambda s: not s.startswith(("@", ":")))
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
hosts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=12).filter(
    lambda h: not h.startswith(".")
)
schemes = st.sampled_from(["nats", "tls", "ws", "wss", "https", "redis"])


@st.composite
def url_lists(draw: st.DrawFn) -> tuple[str, list[str]]:
    urls, passwords = [], []
    for _ in range(draw(st.integers(1, 4))):
        password = draw(secrets)
        port = draw(st.integers(1, 65535))
        urls.append(f"{draw(schemes)}://{draw(users)}:{password}@{draw(hosts)}:{port}")
        passwords.append(password)
    return ",".join(urls), passwords


@settings(max_examples=300, deadline=None)
@given(url_lists(), secrets, secrets)
def test_no_secret_survives_in_config_dumps(
    urls: tuple[str, list[str]], token: str, key: str
) -> None:
    url, passwords = urls
    cfg = {
        "nats": {
            "url": url,
            "password": token,
            "creds_file": "/etc/nats.creds",
            "tls_key_file": "/k",
        },
        "world_model": {
            "settings": {"gemini": {"api_key": key, "base_url": url}},
            "members": [url],
        },
        "auth": {"admin_token": token, "Authorization": f"Bearer {key}"},
        "note": f"connect to {url} please",
    }
    shown = orjson.dumps(redact_config(cfg)).decode()
    for secret in [*passwords, token, key]:
        assert secret not in shown
    assert shown.count(MASK) >= len(passwords)


def test_every_url_of_a_comma_separated_list_is_redacted() -> None:
    url = "nats://***@host:4223,nats://twinuser:S3cr3tPass@host:4299"
    assert redact_text(url) == "nats://***@host:4223,nats://***@host:4299"
    assert (
        redact_text("nats://a:b@h1, tls://c:p@ss,word@h2 and nats://h3")
        == "nats://***@h1, tls://***@h2 and nats://h3"
    )


@given(url_lists())
def test_log_lines_and_dead_letters_carry_no_credentials(urls: tuple[str, list[str]]) -> None:
    url, passwords = urls
    record = logging.LogRecord(
        "t", logging.ERROR, __file__, 1, "cannot connect to %s", (url,), None
    )
    line = RedactingFormatter(logging.Formatter("%(message)s")).format(record)
    dead = build_record(
        f"bad event from {url}", "polaris.telemetry.events.stream", orjson.dumps({"source": url})
    )
    for secret in passwords:
        assert secret not in line and secret.encode() not in dead
