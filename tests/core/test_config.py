from __future__ import annotations

from pathlib import Path

import pytest

from twin.core.config import (
    build_config,
    defaults,
    env_overrides,
    load_config,
    redact_config,
    validate_config,
)
from twin.core.errors import ConfigError

SEED_YAML = """
digital_twin:
  nats:
    calibrate_subject: "polaris.digitaltwin.calibrate"
    error_subject: "polaris.digitaltwin.errors"
    queue_group: "digital_twin_workers"
    max_reconnect_attempts: 10
    reconnect_wait_sec: 2
    queue_maxsize: 1000
    batch_size: 10
    batch_timeout_sec: 1.0
  grpc:
    host: "0.0.0.0"
    port: 50051
    max_workers: 10
    max_message_size: 4194304  # 4MB
    keepalive_time_ms: 30000
    keepalive_timeout_ms: 5000
  world_model:
    implementation: "mock"  # "mock", "gemini", "statistical", "hybrid"
    config_path: "config/world_model.yaml"
    reload_on_failure: true
    health_check_interval_sec: 60
  performance:
    max_concurrent_queries: 10
    query_timeout_sec: 30
    simulation_timeout_sec: 60
  debugging:
    log_level: "DEBUG"
    enable_detailed_logging: true
    log_to_console: true
    log_file: "logs/digital_twin.log"
"""


def test_the_seed_config_is_valid_verbatim(tmp_path: Path) -> None:
    f = tmp_path / "polaris_config.yaml"
    f.write_text(SEED_YAML)
    cfg = load_config(f, environ={})
    assert cfg.grpc.port == 50051 and cfg.nats.batch_size == 10
    assert cfg.world_model.config_path == "config/world_model.yaml"
    assert cfg.nats.url is None  # → embedded nats-server
    assert cfg.nats.telemetry_batch_subject == "polaris.telemetry.events.batch"


def test_defaults_are_complete_and_valid() -> None:
    assert validate_config(defaults()) == []


def test_environment_overrides_win_over_file_and_parse_types(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(SEED_YAML)
    env = {
        "POLARIS_DT__GRPC__PORT": "6000",
        "POLARIS_DT__NATS__JETSTREAM__ENABLED": "true",
        "NATS_URL": "nats://n:4222",
    }
    cfg = load_config(f, environ=env)
    assert cfg.grpc.port == 6000
    assert cfg.nats.jetstream["enabled"] is True
    assert cfg.nats.url == "nats://n:4222"
    assert env_overrides({}) == {}


def test_explicit_overrides_win_over_environment() -> None:
    cfg = load_config(
        overrides={"digital_twin": {"grpc": {"port": 7000}}},
        environ={"POLARIS_DT__GRPC__PORT": "6000"},
    )
    assert cfg.grpc.port == 7000


def test_every_error_is_reported_with_its_path() -> None:
    errors = validate_config(
        {
            "digital_twin": {
                "grpc": {"port": 70000, "bogus": 1},
                "nats": {"batch_size": 0, "url": "http://x"},
                "debugging": {"log_level": "LOUD"},
            }
        }
    )
    joined = "\n".join(errors)
    assert len(errors) == 5
    for path in (
        "digital_twin.grpc.port",
        "digital_twin.grpc:",
        "digital_twin.nats.batch_size",
        "digital_twin.nats.url",
        "digital_twin.debugging.log_level",
    ):
        assert path in joined


def test_load_config_raises_with_all_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            overrides={"digital_twin": {"grpc": {"port": -1}, "nats": {"queue_maxsize": 0}}},
            environ={},
        )
    assert len(info.value.errors) == 2


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("digital_twin: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(bad, environ={})


def test_redaction_hides_secrets_and_url_credentials() -> None:
    out = redact_config(
        {
            "nats": {
                "url": "nats://user:hunter2@host:4222",
                "password": "hunter2",
                "creds_file": "/x",
            },
            "port": 1,
        }
    )
    assert "hunter2" not in str(out)
    assert out["port"] == 1
