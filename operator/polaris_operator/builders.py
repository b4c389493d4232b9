"""Pure builders: a ``DigitalTwin`` object in, Kubernetes manifests and status out.

Everything here is a pure function of its arguments (no API calls, no clock, no
environment): the handlers pass in the current time and the default image. That keeps
the whole rendering unit-testable without a cluster and lets the tests validate every
manifest against the official Kubernetes schemas offline.

Design notes:
- The twin's config file carries no secret. Credentials reach the pod only as
  ``secretKeyRef`` environment variables (``GEMINI_API_KEY``, ``NATS_USER``,
  ``NATS_PASSWORD``, ``NATS_TOKEN``) or a Secret volume (the NATS ``.creds`` file).
  ``configOverrides`` is scanned for secret-looking keys as a second line of defence
  behind the CRD's CEL rules (objects stored before a rule existed, or a cluster
  without CEL validation).
- The pod template carries ``checksum/config`` (SHA-256 of the rendered config), so a
  config change rolls the pods while an unchanged config never does.
- The Deployment's selector uses only labels derived from the DigitalTwin's name: a
  selector is immutable, so it must never depend on anything a user can edit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CONFIG_FILE",
    "CONFIG_MOUNT_DIR",
    "KIND",
    "MANAGED_BY",
    "PLURAL",
    "SpecError",
    "build_configmap",
    "build_deployment",
    "build_service",
    "build_twin_config",
    "child_names",
    "conditions_equal",
    "config_hash",
    "endpoint",
    "find_secret_like_keys",
    "first_difference",
    "invalid_spec_status",
    "is_subset",
    "render_config",
    "selector_labels",
    "set_condition",
    "status_from_deployment",
]

API_GROUP = "polaris.io"
API_VERSION = "v1alpha1"
KIND = "DigitalTwin"
PLURAL = "digitaltwins"
MANAGED_BY = "polaris-twin-operator"
APP_NAME = "polaris-twin"

CONFIG_MOUNT_DIR = "/etc/polaris-twin"
CONFIG_FILE = "config.yaml"
NATS_CREDS_DIR = "/var/run/secrets/polaris/nats"
NATS_CREDS_FILE = "nats.creds"
CONTAINER_NAME = "twin"
RUN_AS = 10001

DEFAULT_GRPC_PORT = 50051
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}}
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 47
# Keys that carry credentials. Matched against every key of configOverrides, at any depth.
_SECRET_KEY_RE = re.compile(
    r"(pass(word)?|secret|token|api_?key|credential|private_?key)$", re.IGNORECASE
)
# Keys the typed spec owns; overriding them would make the spec lie about the pod.
_OWNED_KEYS = {("nats", "url"), ("world_model", "implementation")}


class SpecError(ValueError):
    """A DigitalTwin spec the operator cannot honour (reported, never retried)."""


# --------------------------------------------------------------------------- naming


def child_names(dt: Mapping[str, Any]) -> dict[str, str]:
    """Names of the children: Deployment and Service share the twin's name."""
    name = dt["metadata"]["name"]
    return {"deployment": name, "service": name, "configmap": f"{name}-config"}


def selector_labels(name: str) -> dict[str, str]:
    """Immutable pod selector of a twin's Deployment and Service."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name}


def _labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "digital-twin",
        "app.kubernetes.io/part-of": "polaris",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "polaris.io/digitaltwin": name,
    }


def _meta(dt: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": dt["metadata"].get("namespace", "default"),
        "labels": _labels(dt["metadata"]["name"]),
    }


def _check_name(dt: Mapping[str, Any]) -> None:
    name = dt.get("metadata", {}).get("name", "")
    if not _NAME_RE.match(name) or len(name) > _MAX_NAME:
        raise SpecError(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {_MAX_NAME} characters"
        )


def endpoint(dt: Mapping[str, Any]) -> str:
    """In-cluster gRPC endpoint (host:port) of the twin's Service."""
    ns = dt["metadata"].get("namespace", "default")
    return f"{child_names(dt)['service']}.{ns}.svc:{_grpc_port(dt['spec'])}"


def _grpc_port(spec: Mapping[str, Any]) -> int:
    return int((spec.get("grpc") or {}).get("port", DEFAULT_GRPC_PORT))


def _metrics_port(spec: Mapping[str, Any]) -> int:
    return int((spec.get("telemetry") or {}).get("metricsPort", 0) or 0)


def _implementation(spec: Mapping[str, Any]) -> str:
    return (spec.get("worldModel") or {}).get("implementation", "statistical")


# --------------------------------------------------------------------------- config


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


def build_twin_config(dt: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's config file (``{'digital_twin': {...}}``) for a DigitalTwin.

    Only what the spec says is written; everything else keeps the twin's own defaults.
    Raises:
        SpecError: ``configOverrides`` carries credentials or overrides a field the
            typed spec owns.
    """
    spec = dt.get("spec") or {}
    nats = spec.get("nats") or {}
    if not nats.get("url"):
        raise SpecError(
            "spec.nats.url is required: in Kubernetes the twin never embeds nats-server"
        )
    subjects = nats.get("subjects") or {}
    wm = spec.get("worldModel") or {}
    grpc = spec.get("grpc") or {}
    tel = spec.get("telemetry") or {}
    log = spec.get("logging") or {}

    cfg_nats = _drop_none(
        {
            "url": nats["url"],
            "queue_group": nats.get("queueGroup"),
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

    cfg: dict[str, Any] = {
        "nats": cfg_nats,
        "grpc": _drop_none(
            {
                # All interfaces: the kubelet's probes and the Service reach the pod IP.
                "host": "0.0.0.0",
                "port": _grpc_port(spec),
                "max_workers": grpc.get("maxWorkers"),
                "max_message_size": grpc.get("maxMessageSize"),
                "keepalive_time_ms": grpc.get("keepaliveTimeMs"),
                "keepalive_timeout_ms": grpc.get("keepaliveTimeoutMs"),
            }
        ),
        "world_model": _drop_none(
            {
                "implementation": _implementation(spec),
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
                "metrics_port": _metrics_port(spec),
            }
        ),
    }

    secretish = find_secret_like_keys(wm.get("settings") or {}, "worldModel.settings")
    overrides = spec.get("configOverrides") or {}
    secretish += find_secret_like_keys(overrides, "configOverrides")
    if secretish:
        raise SpecError(
            "credentials are not allowed in the config (use the *SecretRef fields): "
            + ", ".join(sorted(secretish))
        )
    for section, key in _OWNED_KEYS:
        if key in (overrides.get(section) or {}):
            raise SpecError(f"configOverrides.{section}.{key} is not allowed: set it in the spec")
    _deep_merge(cfg, overrides)
    return {"digital_twin": cfg}


def render_config(config: Mapping[str, Any]) -> str:
    """Deterministic YAML text of a config (sorted keys, so the hash is stable)."""
    return yaml.safe_dump(dict(config), sort_keys=True, default_flow_style=False)


def config_hash(config: Mapping[str, Any] | str) -> str:
    """SHA-256 hex digest of the rendered config."""
    text = config if isinstance(config, str) else render_config(config)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- manifests


def build_configmap(
    dt: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ConfigMap holding ``config.yaml``."""
    _check_name(dt)
    config = build_twin_config(dt) if config is None else config
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(dt, child_names(dt)["configmap"]),
        "data": {CONFIG_FILE: render_config(config)},
    }


def _secret_env(
    name: str, ref: Mapping[str, Any], default_key: str | None = None
) -> dict[str, Any]:
    key = ref.get("key") or default_key
    if not key:
        raise SpecError(f"a Secret reference for {name} needs a key")
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}}}


def _env(dt: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = dt["spec"]
    nats = spec.get("nats") or {}
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "OTEL_SERVICE_NAME", "value": dt["metadata"]["name"]},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),"
            f"service.namespace=polaris,polaris.digitaltwin={dt['metadata']['name']}",
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if nats.get("userSecretRef"):
        env.append(_secret_env("NATS_USER", nats["userSecretRef"]))
    if nats.get("passwordSecretRef"):
        env.append(_secret_env("NATS_PASSWORD", nats["passwordSecretRef"]))
    if nats.get("tokenSecretRef"):
        env.append(_secret_env("NATS_TOKEN", nats["tokenSecretRef"]))
    llm_ref = (spec.get("llm") or {}).get("apiKeySecretRef")
    if llm_ref:
        env.append(_secret_env("GEMINI_API_KEY", llm_ref, default_key="api-key"))
    return env


def _probe(port: int, *, period: int, failures: int, initial: int = 0) -> dict[str, Any]:
    # The kubelet's gRPC probe calls grpc.health.v1.Health/Check with service "": SERVING
    # only once the model is initialised and NATS is connected.
    probe: dict[str, Any] = {
        "grpc": {"port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
        "successThreshold": 1,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def build_deployment(
    dt: Mapping[str, Any],
    *,
    default_image: str,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The twin's Deployment.

    Args:
        dt: the DigitalTwin object (metadata and spec).
        default_image: image used when ``spec.image`` is empty (the operator's own).
        config: the rendered twin config, to hash into ``checksum/config``.
    """
    _check_name(dt)
    spec = dt["spec"]
    name = dt["metadata"]["name"]
    config = build_twin_config(dt) if config is None else config
    grpc_port = _grpc_port(spec)
    metrics_port = _metrics_port(spec)
    names = child_names(dt)
    image = spec.get("image") or default_image
    if not image:
        raise SpecError("spec.image is empty and the operator has no default twin image")

    ports = [{"name": "grpc", "containerPort": grpc_port, "protocol": "TCP"}]
    if metrics_port:
        ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})

    mounts = [
        {"name": "config", "mountPath": CONFIG_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": names["configmap"],
                "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    creds = (spec.get("nats") or {}).get("credentialsSecretRef")
    if creds:
        mounts.append({"name": "nats-creds", "mountPath": NATS_CREDS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "nats-creds",
                "secret": {
                    "secretName": creds["name"],
                    "items": [
                        {"key": creds.get("key") or NATS_CREDS_FILE, "path": NATS_CREDS_FILE}
                    ],
                    "defaultMode": 0o440,
                },
            }
        )

    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "command": ["polaris-twin"],
        "args": ["--config", f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE}"],
        "ports": ports,
        "env": _env(dt),
        "resources": copy.deepcopy(spec.get("resources") or DEFAULT_RESOURCES),
        "startupProbe": _probe(grpc_port, period=2, failures=90),
        "readinessProbe": _probe(grpc_port, period=10, failures=3),
        "livenessProbe": _probe(grpc_port, period=20, failures=3),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }

    pod_labels = {**(spec.get("podLabels") or {}), **_labels(name)}
    pod_annotations = {
        **(spec.get("podAnnotations") or {}),
        "checksum/config": config_hash(config),
        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        "nodeSelector": spec.get("nodeSelector"),
        "tolerations": spec.get("tolerations"),
        "affinity": spec.get("affinity"),
        "priorityClassName": spec.get("priorityClassName"),
        "serviceAccountName": spec.get("serviceAccountName"),
        "imagePullSecrets": spec.get("imagePullSecrets"),
    }
    pod_spec.update({k: copy.deepcopy(v) for k, v in optional.items() if v})

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(dt, names["deployment"]),
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                # Never drop below the desired count: a twin that is not SERVING is useless.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(dt: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's Service: port ``grpc`` (and ``metrics`` when enabled)."""
    _check_name(dt)
    spec = dt["spec"]
    ports = [
        {
            "name": "grpc",
            "port": _grpc_port(spec),
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    metrics_port = _metrics_port(spec)
    if metrics_port:
        ports.append(
            {
                "name": "metrics",
                "port": metrics_port,
                "targetPort": "metrics",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    meta = _meta(dt, child_names(dt)["service"])
    if spec.get("serviceAnnotations"):
        meta["annotations"] = dict(spec["serviceAnnotations"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": spec.get("serviceType", "ClusterIP"),
            "selector": selector_labels(dt["metadata"]["name"]),
            "ports": ports,
        },
    }


# --------------------------------------------------------------------------- drift


def is_subset(desired: Any, live: Any) -> bool:
    """Whether ``live`` still has everything ``desired`` says.

    The API server adds defaults (``terminationMessagePath``, probe fields, ...), so
    live objects are compared as supersets of the desired ones. Lists must have the
    same length (an added container or env var is drift), and their items are compared
    pairwise the same way.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, l) for d, l in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if desired == live:
        return True
    # Quantities come back canonicalised ("0.5" -> "500m", "1024Mi" -> "1Gi").
    a, b = _quantity(desired), _quantity(live)
    return a is not None and a == b


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """Path of the first place where ``live`` lacks what ``desired`` says (None if subset)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "<root>"
        for k, v in desired.items():
            here = f"{path}.{k}" if path else str(k)
            if k not in live:
                return here
            found = first_difference(v, live[k], here)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return path
        for i, (d, l) in enumerate(zip(desired, live, strict=True)):
            found = first_difference(d, l, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if is_subset(desired, live) else path


_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]{0,2})$")


def _quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number, or None when it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY_RE.match(value)
    if not m or m.group(2) not in _SUFFIXES:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIXES[m.group(2)]
    except InvalidOperation:
        return None


# --------------------------------------------------------------------------- status


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with one condition set, keeping ``lastTransitionTime``
    when its status did not change."""
    result = [dict(c) for c in conditions if c.get("type") != type]
    previous = next((c for c in conditions if c.get("type") == type), None)
    changed = previous is None or previous.get("status") != status
    cond = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = int(generation)
    result.append(cond)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    result.sort(key=lambda c: order.get(c["type"], len(order)))
    return result


def conditions_equal(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> bool:
    """Conditions compared without their timestamps (to skip no-op status patches)."""

    def strip(cs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs),
            key=lambda c: c.get("type", ""),
        )

    return strip(a) == strip(b)


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def status_from_deployment(
    dt: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    *,
    now: str,
    config_digest: str | None = None,
) -> dict[str, Any]:
    """The DigitalTwin's status computed from its Deployment's actual state.

    Ready means every desired replica is available (passes the gRPC readiness probe on
    the current template); Progressing means a rollout is under way; Degraded means the
    rollout is stuck or fewer replicas than desired are available after it finished.
    """
    old = dt.get("status") or {}
    generation = dt.get("metadata", {}).get("generation")
    name = dt["metadata"]["name"]
    conds: list[dict[str, Any]] = list(old.get("conditions") or [])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items())),
        "endpoint": endpoint(dt),
    }
    if config_digest:
        status["configHash"] = config_digest

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(
            conds,
            type=type_,
            status="True" if ok else "False",
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )

    if deployment is None:
        status.update(replicas=0, readyReplicas=0, updatedReplicas=0)
        put("Ready", False, "DeploymentMissing", "the twin's Deployment does not exist yet")
        put("Progressing", True, "Creating", "creating the twin's Deployment")
        put("Degraded", False, "Creating", "creating the twin's Deployment")
        status["conditions"] = conds
        return status

    dstatus = deployment.get("status") or {}
    desired = int((deployment.get("spec") or {}).get("replicas", 1))
    replicas = int(dstatus.get("replicas", 0))
    ready = int(dstatus.get("readyReplicas", 0))
    available = int(dstatus.get("availableReplicas", 0))
    updated = int(dstatus.get("updatedReplicas", 0))
    status.update(replicas=replicas, readyReplicas=ready, updatedReplicas=updated)
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if containers:
        status["image"] = containers[0].get("image", "")

    observed = int(dstatus.get("observedGeneration", 0))
    current = observed >= int(deployment.get("metadata", {}).get("generation", 1))
    progressing = _deployment_condition(deployment, "Progressing")
    stuck = progressing.get("reason") == "ProgressDeadlineExceeded"
    rolled_out = current and updated >= desired and replicas == desired

    if desired == 0:
        put("Ready", False, "ScaledToZero", "spec.replicas is 0")
        put("Progressing", False, "ScaledToZero", "spec.replicas is 0")
        put("Degraded", False, "ScaledToZero", "spec.replicas is 0")
    elif stuck:
        msg = progressing.get("message") or "the rollout exceeded its progress deadline"
        put("Ready", available >= desired and rolled_out, "ProgressDeadlineExceeded", msg)
        put("Progressing", False, "ProgressDeadlineExceeded", msg)
        put("Degraded", True, "ProgressDeadlineExceeded", msg)
    elif rolled_out and available >= desired:
        msg = f"{available}/{desired} replicas serving"
        put("Ready", True, "AllReplicasReady", msg)
        put("Progressing", False, "RolloutComplete", msg)
        put("Degraded", False, "AllReplicasReady", msg)
    elif rolled_out:
        msg = f"{available}/{desired} replicas serving"
        put("Ready", False, "ReplicasUnavailable", msg)
        put("Progressing", False, "RolloutComplete", msg)
        put("Degraded", True, "ReplicasUnavailable", msg)
    else:
        msg = f"rollout in progress: {updated}/{desired} updated, {available} available"
        put("Ready", False, "RolloutInProgress", msg)
        put("Progressing", True, "RolloutInProgress", msg)
        put("Degraded", False, "RolloutInProgress", msg)
    status["conditions"] = conds
    return status


def invalid_spec_status(dt: Mapping[str, Any], message: str, *, now: str) -> dict[str, Any]:
    """Status for a spec the operator cannot honour (children left as they are)."""
    generation = dt.get("metadata", {}).get("generation")
    conds: list[dict[str, Any]] = list((dt.get("status") or {}).get("conditions") or [])
    for type_, ok in (("Ready", False), ("Progressing", False), ("Degraded", True)):
        conds = set_condition(
            conds,
            type=type_,
            status="True" if ok else "False",
            reason="InvalidSpec",
            message=message,
            generation=generation,
            now=now,
        )
    return {"observedGeneration": generation, "conditions": conds}


def as_json(obj: Any) -> str:
    """Canonical JSON (for logs and hashing in tests)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
