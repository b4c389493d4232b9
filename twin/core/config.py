"""Configuration: the seed's YAML (``digital_twin: nats/grpc/world_model/performance/debugging``)
plus our additions, one JSON Schema as the single source of truth for keys, types
and defaults, and environment overrides for containers.

Environment overrides use ``POLARIS_DT__<SECTION>__<KEY>[__<SUBKEY>]=value`` (values
parsed as YAML scalars, so ``true``/``10``/``1.5`` get their types), plus the
conventional ``NATS_URL``. Secrets never live in the config: NATS credentials and
the LLM key come from their own environment variables.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from twin.core.errors import ConfigError
from twin.core.limits import EventLimits
from twin.core.redact import redact

ENV_PREFIX = "POLARIS_DT__"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package."""
    text = resources.files("twin.core").joinpath("schema/digital_twin.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _defaults_of(node: Mapping[str, Any]) -> Any:
    if node.get("type") == "object" and "properties" in node:
        return {k: _defaults_of(v) for k, v in node["properties"].items() if _has_default(v)}
    return copy.deepcopy(node.get("default"))


def _has_default(node: Mapping[str, Any]) -> bool:
    return "default" in node or (node.get("type") == "object" and "properties" in node)


def defaults() -> dict[str, Any]:
    """A complete config made only of schema defaults."""
    return {"digital_twin": _defaults_of(schema()["properties"]["digital_twin"])}


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``base`` updated recursively by ``override`` (mappings merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested overrides from ``POLARIS_DT__...`` variables and ``NATS_URL``."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            node[path[-1]] = raw
    if environ.get("NATS_URL") and "url" not in tree.get("nats", {}):
        tree.setdefault("nats", {})["url"] = environ["NATS_URL"]
    return {"digital_twin": tree} if tree else {}


def validate_config(cfg: Mapping[str, Any]) -> list[str]:
    """Every schema error as ``path: message`` (empty list = valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        errors.append(f"{path}: {err.message}")
    return errors


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML", [str(exc)]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping", ["<root>: not a mapping"])
    return data


@dataclass(frozen=True)
class NatsConfig:
    url: str | None
    telemetry_stream_subject: str
    telemetry_batch_subject: str
    execution_subject: str
    calibrate_subject: str
    error_subject: str
    queue_group: str
    max_reconnect_attempts: int
    reconnect_wait_sec: float
    queue_maxsize: int
    batch_size: int
    batch_timeout_sec: float
    max_payload_bytes: int
    creds_file: str | None
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    jetstream: dict[str, Any]
    max_batch_events: int = 5000

    @property
    def subjects(self) -> tuple[str, str, str, str]:
        return (
            self.telemetry_stream_subject,
            self.telemetry_batch_subject,
            self.execution_subject,
            self.calibrate_subject,
        )


@dataclass(frozen=True)
class GrpcConfig:
    host: str
    port: int
    max_workers: int
    max_message_size: int
    keepalive_time_ms: int
    keepalive_timeout_ms: int
    grace_period_sec: float
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_client_ca_file: str | None


@dataclass(frozen=True)
class WorldModelConfig:
    implementation: str
    config_path: str | None
    reload_on_failure: bool
    health_check_interval_sec: float
    settings: dict[str, Any]


@dataclass(frozen=True)
class PerformanceConfig:
    max_concurrent_queries: int
    query_timeout_sec: float
    simulation_timeout_sec: float
    diagnosis_timeout_sec: float
    management_timeout_sec: float
    compute_workers: int = -1


@dataclass(frozen=True)
class DebuggingConfig:
    log_level: str
    enable_detailed_logging: bool
    log_to_console: bool
    log_file: str | None
    log_format: str


@dataclass(frozen=True)
class StateConfig:
    max_points_per_series: int
    max_age_sec: float
    action_log_size: int
    snapshot_dir: str | None
    snapshot_interval_sec: float
    snapshot_every_events: int
    snapshot_keep: int = 3
    max_series: int = 50_000
    max_series_per_system: int = 10_000
    action_log_max_bytes: int = 64 * 1024 * 1024


DEFAULT_PROTECTED = ("reset_state", "replay", "reload_model", "snapshot")


@dataclass(frozen=True)
class AuthConfig:
    admin_token_file: str | None
    mtls_allow: dict[str, list[str]]
    protected_operations: list[str]


@dataclass(frozen=True)
class PredictionsConfig:
    """``digital_twin.predictions``: bounds and feedback of the prediction ledger."""

    max_pending_per_system: int = 100
    max_recent_per_system: int = 100
    max_points_per_prediction: int = 240
    max_systems: int = 1000
    skill_window: int = 50
    calibrate_intervals: bool = True
    drift_margin: float = 2.0
    drift_min_predictions: int = 5
    refit_on_drift: bool = True
    score_interval_sec: float = 1.0


@dataclass(frozen=True)
class TelemetryConfig:
    otlp_endpoint: str | None
    sampling_ratio: float
    service_name: str
    metrics_port: int


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    console: bool = True


@dataclass(frozen=True)
class EventsConfig:
    history: int = 1000
    queue_size: int = 256
    max_watchers: int = 16
    nats_publish: bool = True
    nats_subject_prefix: str = "polaris.digitaltwin.events"
    health_poll_sec: float = 2.0


@dataclass(frozen=True)
class TwinConfig:
    nats: NatsConfig
    grpc: GrpcConfig
    world_model: WorldModelConfig
    performance: PerformanceConfig
    debugging: DebuggingConfig
    state: StateConfig
    telemetry: TelemetryConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    http: HttpConfig = field(default_factory=HttpConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    limits: EventLimits = field(default_factory=EventLimits)
    auth: AuthConfig = field(default_factory=lambda: AuthConfig(None, {}, list(DEFAULT_PROTECTED)))
    predictions: PredictionsConfig = field(default_factory=PredictionsConfig)
    # Managed systems this twin answers for (names or globs; empty = all): twin.ingest.systems.
    systems: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TwinConfig:
        """Builds from a *validated* config (defaults filled in)."""
        dt = deep_merge(defaults(), cfg)["digital_twin"]
        return cls(
            nats=NatsConfig(
                **dt["nats"]
                | {"url": dt["nats"].get("url")}
                | _nullable(
                    dt["nats"], "creds_file", "tls_ca_file", "tls_cert_file", "tls_key_file"
                )
            ),
            grpc=GrpcConfig(
                **dt["grpc"]
                | _nullable(dt["grpc"], "tls_cert_file", "tls_key_file", "tls_client_ca_file")
            ),
            world_model=WorldModelConfig(
                **dt["world_model"] | _nullable(dt["world_model"], "config_path")
            ),
            performance=PerformanceConfig(**dt["performance"]),
            debugging=DebuggingConfig(**dt["debugging"]),
            state=StateConfig(**dt["state"]),
            telemetry=TelemetryConfig(**dt["telemetry"]),
            auth=AuthConfig(**dt["auth"] | _nullable(dt["auth"], "admin_token_file")),
            raw={"digital_twin": dt},
            http=HttpConfig(**dt["http"]),
            events=EventsConfig(**dt["events"]),
            limits=EventLimits.from_settings(dt.get("limits")),
            predictions=PredictionsConfig(**dt.get("predictions", {})),
            systems=tuple(dt.get("systems") or ()),
        )


def _nullable(section: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: section.get(k) for k in keys}


def build_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """file → environment → explicit overrides (CLI flags), each layer winning over the last.

    Returns the merged dict (not validated); the file may be a whole POLARIS config
    with other top-level sections, only ``digital_twin`` is ours.
    """
    cfg: dict[str, Any] = {"digital_twin": {}}
    if path is not None:
        data = read_file(path)
        cfg = deep_merge(cfg, data)
    cfg = deep_merge(cfg, env_overrides(os.environ if environ is None else environ))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    model_path = cfg.get("digital_twin", {}).get("world_model", {}).get("config_path")
    if model_path and Path(model_path).is_file():
        extra = read_file(model_path)
        cfg["digital_twin"]["world_model"]["settings"] = deep_merge(
            extra, cfg["digital_twin"]["world_model"].get("settings", {})
        )
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TwinConfig:
    """Builds, validates and types the config; raises ``ConfigError`` with every error."""
    cfg = build_config(path, overrides, environ)
    errors = validate_config(cfg)
    if errors:
        raise ConfigError(f"invalid configuration ({len(errors)} error(s))", errors)
    return TwinConfig.from_dict(cfg)


def redact_config(cfg: Any) -> Any:
    """A copy safe to show: values of secret-looking keys and URL credentials masked."""
    return redact(cfg)
