"""The twin's config file, rendered from a DigitalTwin spec.

The file carries no secret: credentials reach the pod only as ``secretKeyRef``
environment variables or Secret volumes (see manifests); the file names the mounted
paths (``nats.creds_file``, ``auth.admin_token_file``), never their content.
``configOverrides`` is scanned for secret-looking keys as a second line of defence behind
the CRD's CEL rules (objects stored before a rule existed, or a cluster without CEL
validation), and may not touch what the typed spec owns.

Two choices here make replicas correct by construction:
- ``nats.queue_group`` is always empty: every pod receives every message. A shared queue
  group would split the telemetry between replicas (and between DigitalTwins on the same
  NATS), so the Service would load-balance queries over half-twins.
- ``replicas > 1`` needs JetStream (a CEL rule, repeated here): each replica then applies
  the whole stream through its own durable consumer, so every answer comes from a prefix
  of the same log. The consumer name is set per pod (``<namespace>_<pod>``) in the pod's
  environment: a StatefulSet's pod names are stable per ordinal, so its consumer is too.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import yaml

from .names import (
    ADMIN_TOKEN_DIR,
    ADMIN_TOKEN_FILE,
    NATS_CREDS_DIR,
    NATS_CREDS_FILE,
    SNAPSHOT_DIR,
    SpecError,
    grpc_port,
    http_port,
    implementation,
    metrics_port,
)

__all__ = [
    "build_twin_config",
    "config_hash",
    "durability",
    "find_secret_like_keys",
    "parse_duration",
    "render_config",
    "validate_twin_config",
]

# Keys that carry credentials. Matched against every key of configOverrides, at any depth.
_SECRET_KEY_RE = re.compile(
    r"(pass(word)?|secret|token|api_?key|credential|private_?key)$", re.IGNORECASE
)
# Keys the typed spec owns; overriding them would make the spec lie about the pod.
_OWNED_KEYS = {
    ("nats", "url"): "spec.nats.url",
    ("nats", "queue_group"): "nothing (replicas never share a queue group)",
    ("nats", "jetstream"): "spec.durability.jetstream",
    ("world_model", "implementation"): "spec.worldModel.implementation",
    ("state", "snapshot_dir"): "spec.durability.snapshots",
    ("state", "snapshot_interval_sec"): "spec.durability.snapshots.interval",
    ("state", "snapshot_keep"): "spec.durability.snapshots.keep",
    ("telemetry", "metrics_port"): "spec.telemetry.metricsPort",
    ("http", "port"): "spec.http.port",
    ("http", "host"): "nothing (the gateway listens on the pod IP)",
    ("auth", "admin_token_file"): "spec.auth.adminTokenSecretRef",
}
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(d|h|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: str | int | float, field: str) -> float:
    """``"1h30m"`` → 5400.0 (units d, h, m, s); a bare number is seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not _DURATION_RE.match(text):
        raise SpecError(f"{field} {value!r} is not a duration like 30s, 5m, 24h or 7d")
    return sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))


def durability(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(jetstream, snapshots)`` of a spec, each ``{}`` when absent."""
    d = spec.get("durability") or {}
    return dict(d.get("jetstream") or {}), dict(d.get("snapshots") or {})


def find_secret_like_keys(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of keys under ``obj`` whose names look like credentials."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY_RE.search(str(key)) or str(key) == "user":
                found.append(here)
            found.extend(find_secret_like_keys(value, here))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found.extend(find_secret_like_keys(value, f"{path}[{i}]"))
    return found


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _jetstream_config(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    js, _ = durability(spec)
    replicas = int(spec.get("replicas", 1))
    if not js.get("enabled"):
        if replicas > 1:
            raise SpecError(
                "replicas > 1 needs durability.jetstream.enabled: every replica must apply the "
                "same log through its own durable consumer; on core NATS replicas would hold "
                "different data and the Service would mix their answers"
            )
        return None
    out: dict[str, Any] = {"enabled": True}
    if "stream" in js:
        out["stream"] = js["stream"]
    if "maxAge" in js:
        out["max_age_sec"] = parse_duration(js["maxAge"], "durability.jetstream.maxAge")
    if "replicas" in js:
        out["replicas"] = int(js["replicas"])
    if "storage" in js:
        out["storage"] = js["storage"]
    if "inactiveThreshold" in js:
        out["inactive_threshold_sec"] = parse_duration(
            js["inactiveThreshold"], "durability.jetstream.inactiveThreshold"
        )
    if "maxLagSeconds" in js:
        out["max_lag_sec"] = float(js["maxLagSeconds"])
    return out


def _snapshot_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    _, snaps = durability(spec)
    if not snaps.get("enabled"):
        return {}
    out: dict[str, Any] = {"snapshot_dir": SNAPSHOT_DIR}
    if "interval" in snaps:
        out["snapshot_interval_sec"] = parse_duration(
            snaps["interval"], "durability.snapshots.interval"
        )
    if "keep" in snaps:
        out["snapshot_keep"] = int(snaps["keep"])
    return out


def build_twin_config(dt: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's config file (``{'digital_twin': {...}}``) for a DigitalTwin.

    Only what the spec says is written; everything else keeps the twin's own defaults.

    Raises:
        SpecError: the spec asks for something the operator cannot honour
            (credentials in ``configOverrides``, an override of a field the typed spec
            owns, replicas without JetStream, a malformed duration).
    """
    spec = dt.get("spec") or {}
    nats = spec.get("nats") or {}
    if not nats.get("url"):
        raise SpecError(
            "spec.nats.url is required: in Kubernetes the twin never embeds nats-server"
        )
    ports = {
        "grpc.port": grpc_port(spec),
        "telemetry.metricsPort": metrics_port(spec),
        "http.port": http_port(spec),
    }
    used = [(field, port) for field, port in ports.items() if port]
    if len({port for _, port in used}) < len(used):
        raise SpecError(
            "grpc.port, telemetry.metricsPort and http.port must differ: "
            + ", ".join(f"{field} {port}" for field, port in used)
        )
    subjects = nats.get("subjects") or {}
    wm = spec.get("worldModel") or {}
    grpc = spec.get("grpc") or {}
    tel = spec.get("telemetry") or {}
    log = spec.get("logging") or {}

    cfg_nats = _drop_none(
        {
            "url": nats["url"],
            "queue_group": "",
            "telemetry_stream_subject": subjects.get("telemetryStream"),
            "telemetry_batch_subject": subjects.get("telemetryBatch"),
            "execution_subject": subjects.get("execution"),
            "calibrate_subject": subjects.get("calibrate"),
            "error_subject": subjects.get("error"),
            "max_reconnect_attempts": nats.get("maxReconnectAttempts"),
            "reconnect_wait_sec": nats.get("reconnectWaitSec"),
        }
    )
    if nats.get("credentialsSecretRef"):
        cfg_nats["creds_file"] = f"{NATS_CREDS_DIR}/{NATS_CREDS_FILE}"
    jetstream = _jetstream_config(spec)
    if jetstream:
        cfg_nats["jetstream"] = jetstream

    cfg: dict[str, Any] = {
        "nats": cfg_nats,
        "grpc": _drop_none(
            {
                # All interfaces: the kubelet's probes and the Service reach the pod IP.
                "host": "0.0.0.0",
                "port": grpc_port(spec),
                "max_workers": grpc.get("maxWorkers"),
                "max_message_size": grpc.get("maxMessageSize"),
                "keepalive_time_ms": grpc.get("keepaliveTimeMs"),
                "keepalive_timeout_ms": grpc.get("keepaliveTimeoutMs"),
            }
        ),
        "world_model": _drop_none(
            {
                "implementation": implementation(spec),
                "reload_on_failure": wm.get("reloadOnFailure"),
                "health_check_interval_sec": wm.get("healthCheckIntervalSec"),
                "settings": copy.deepcopy(wm.get("settings") or {}),
            }
        ),
        "debugging": {
            "log_level": log.get("level", "INFO"),
            "log_format": log.get("format", "json"),
            "log_to_console": True,
            # The root filesystem is read-only: logs go to stdout only.
            "log_file": None,
        },
        "telemetry": _drop_none(
            {
                "otlp_endpoint": tel.get("otlpEndpoint"),
                "sampling_ratio": tel.get("samplingRatio"),
                "service_name": dt["metadata"]["name"],
                "metrics_port": metrics_port(spec),
            }
        ),
    }
    http = spec.get("http") or {}
    cfg["http"] = _drop_none(
        {"host": "0.0.0.0", "port": http_port(spec), "console": http.get("console")}
    )
    snapshots = _snapshot_config(spec)
    if snapshots:
        cfg["state"] = snapshots
    if spec.get("systems"):
        cfg["systems"] = list(spec["systems"])
    if (spec.get("auth") or {}).get("adminTokenSecretRef"):
        cfg["auth"] = {"admin_token_file": f"{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_FILE}"}

    secretish = find_secret_like_keys(wm.get("settings") or {}, "worldModel.settings")
    overrides = spec.get("configOverrides") or {}
    secretish += find_secret_like_keys(overrides, "configOverrides")
    if secretish:
        raise SpecError(
            "credentials are not allowed in the config (use the *SecretRef fields): "
            + ", ".join(sorted(secretish))
        )
    for (section, key), owner in _OWNED_KEYS.items():
        if key in (overrides.get(section) or {}):
            raise SpecError(f"configOverrides.{section}.{key} is not allowed: set {owner}")
    if "systems" in overrides:
        raise SpecError("configOverrides.systems is not allowed: set spec.systems")
    _deep_merge(cfg, overrides)
    return {"digital_twin": cfg}


def validate_twin_config(config: Mapping[str, Any]) -> list[str]:
    """Errors of a rendered config against the twin's own schema (shared, not copied)."""
    try:
        from twin.core.config import validate_config
    except ImportError:  # an operator-only install: the twin validates at start instead
        return []
    return validate_config(config)


def render_config(config: Mapping[str, Any]) -> str:
    """Deterministic YAML text of a config (sorted keys, so the hash is stable)."""
    return yaml.safe_dump(dict(config), sort_keys=True, default_flow_style=False)


def config_hash(config: Mapping[str, Any] | str) -> str:
    """SHA-256 hex digest of the rendered config."""
    text = config if isinstance(config, str) else render_config(config)
    return hashlib.sha256(text.encode()).hexdigest()
