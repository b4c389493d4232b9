"""Manifests of a twin: ConfigMap, Service(s) and the workload, as plain dicts.

Everything here is a pure function of its arguments (no API calls, no clock, no
environment), so the whole rendering is unit-testable without a cluster and every
manifest can be validated offline against the official Kubernetes schemas.

The workload:
- **Deployment** for a twin on core NATS without snapshots (one replica: the CRD refuses
  more without JetStream). Nothing of it outlives the pod.
- **StatefulSet** as soon as the twin keeps durable state: JetStream (its durable consumer
  is named after the pod, and StatefulSet pod names are stable per ordinal, so a restarted
  replica takes its own consumer back) or snapshots (a volumeClaimTemplate gives every
  ordinal its own PersistentVolumeClaim). A headless Service ``<name>-pods`` gives each
  replica a DNS name, for clients that must read from one replica.

Probes: startup and liveness ask the ``liveness`` health service (SERVING while the
process answers), readiness asks the overall service "" (SERVING only with the model up,
NATS connected, the start-up replay done and the replay lag under ``maxLagSeconds``). A
NATS outage therefore makes pods unready, never restarts them.

The pod template carries ``checksum/config`` (SHA-256 of the rendered config), so a config
change rolls the pods while an unchanged config never does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .names import (
    ADMIN_TOKEN_DIR,
    ADMIN_TOKEN_FILE,
    CONFIG_FILE,
    CONFIG_MOUNT_DIR,
    CONTAINER_NAME,
    NATS_CREDS_DIR,
    NATS_CREDS_FILE,
    RUN_AS,
    SNAPSHOT_DIR,
    SNAPSHOT_VOLUME,
    SpecError,
    check_name,
    child_names,
    grpc_port,
    http_port,
    labels,
    meta,
    metrics_port,
    selector_labels,
)
from .twin_config import build_twin_config, config_hash, durability, render_config

__all__ = [
    "ADMIN_TOKEN_KEY",
    "DEFAULT_RESOURCES",
    "LIVENESS_SERVICE",
    "build_children",
    "build_configmap",
    "build_deployment",
    "build_headless_service",
    "build_service",
    "build_statefulset",
    "build_workload",
    "workload_kind",
]

DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}}
LIVENESS_SERVICE = "liveness"
ADMIN_TOKEN_KEY = "admin-token"  # the Secret key when adminTokenSecretRef names none
DURABLE_ENV = "POLARIS_DT__NATS__JETSTREAM__DURABLE"


def workload_kind(spec: Mapping[str, Any]) -> str:
    """``StatefulSet`` when the twin keeps durable state (JetStream or snapshots)."""
    js, snaps = durability(spec)
    return "StatefulSet" if js.get("enabled") or snaps.get("enabled") else "Deployment"


def build_configmap(
    dt: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ConfigMap holding ``config.yaml``."""
    check_name(dt)
    config = build_twin_config(dt) if config is None else config
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(dt, child_names(dt)["configmap"]),
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
    name = dt["metadata"]["name"]
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "OTEL_SERVICE_NAME", "value": name},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),"
            f"service.namespace=polaris,polaris.digitaltwin={name}",
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if durability(spec)[0].get("enabled"):
        # One durable consumer per pod, unique across namespaces sharing a NATS.
        env.append({"name": DURABLE_ENV, "value": "$(POD_NAMESPACE)_$(POD_NAME)"})
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


def _grpc_probe(
    port: int, *, period: int, failures: int, service: str | None = None
) -> dict[str, Any]:
    grpc: dict[str, Any] = {"port": port}
    if service:
        grpc["service"] = service
    return {
        "grpc": grpc,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _volumes(dt: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) of the twin container; the snapshot volume comes from the
    StatefulSet's volumeClaimTemplate, so only its mount is here."""
    spec = dt["spec"]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": child_names(dt)["configmap"],
                "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if durability(spec)[1].get("enabled"):
        mounts.append({"name": SNAPSHOT_VOLUME, "mountPath": SNAPSHOT_DIR})
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
    admin = (spec.get("auth") or {}).get("adminTokenSecretRef")
    if admin:
        # A file, not an environment variable: a rotated Secret reaches the running twin
        # (it re-reads auth.admin_token_file on change), and the token never shows in the
        # pod's environment (kubectl describe, /proc/<pid>/environ, crash dumps).
        mounts.append({"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "admin-token",
                "secret": {
                    "secretName": admin["name"],
                    "items": [
                        {"key": admin.get("key") or ADMIN_TOKEN_KEY, "path": ADMIN_TOKEN_FILE}
                    ],
                    "defaultMode": 0o440,
                },
            }
        )
    return mounts, volumes


def _pod_template(
    dt: Mapping[str, Any], *, default_image: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    spec = dt["spec"]
    name = dt["metadata"]["name"]
    image = spec.get("image") or default_image
    if not image:
        raise SpecError("spec.image is empty and the operator has no default twin image")
    port = grpc_port(spec)
    ports = [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
    if metrics_port(spec):
        ports.append({"name": "metrics", "containerPort": metrics_port(spec), "protocol": "TCP"})
    if http_port(spec):
        ports.append({"name": "http", "containerPort": http_port(spec), "protocol": "TCP"})
    mounts, volumes = _volumes(dt)
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "command": ["polaris-twin"],
        "args": ["--config", f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE}"],
        "ports": ports,
        "env": _env(dt),
        "resources": copy.deepcopy(spec.get("resources") or DEFAULT_RESOURCES),
        # Up to 60 s to answer at all; the replay and NATS are readiness matters.
        "startupProbe": _grpc_probe(port, period=2, failures=30, service=LIVENESS_SERVICE),
        "readinessProbe": _grpc_probe(port, period=10, failures=3),
        "livenessProbe": _grpc_probe(port, period=20, failures=3, service=LIVENESS_SERVICE),
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
        "metadata": {
            "labels": {**(spec.get("podLabels") or {}), **labels(name)},
            "annotations": {
                **(spec.get("podAnnotations") or {}),
                "checksum/config": config_hash(config),
                "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
            },
        },
        "spec": pod_spec,
    }


def build_deployment(
    dt: Mapping[str, Any],
    *,
    default_image: str,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Deployment of a twin without durable state.

    Args:
        dt: the DigitalTwin object (metadata and spec).
        default_image: image used when ``spec.image`` is empty (the operator's own).
        config: the rendered twin config, to hash into ``checksum/config``.
    """
    check_name(dt)
    config = build_twin_config(dt) if config is None else config
    name = dt["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(dt, child_names(dt)["workload"]),
        "spec": {
            "replicas": int(dt["spec"].get("replicas", 1)),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                # Never drop below the desired count: a twin that is not SERVING is useless.
                # The surge pod receives every message too (no queue group): no split.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": _pod_template(dt, default_image=default_image, config=config),
        },
    }


def _volume_claim(dt: Mapping[str, Any]) -> dict[str, Any]:
    snaps = durability(dt["spec"])[1]
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": SNAPSHOT_VOLUME, "labels": labels(dt["metadata"]["name"])},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(snaps.get("volumeSize", "1Gi"))}},
        },
    }
    if snaps.get("storageClass"):
        claim["spec"]["storageClassName"] = snaps["storageClass"]
    return claim


def build_statefulset(
    dt: Mapping[str, Any],
    *,
    default_image: str,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The StatefulSet of a twin with durable state (JetStream and/or snapshots).

    Immutable once created (the API server refuses changes): ``serviceName``,
    ``podManagementPolicy``, ``selector`` and ``volumeClaimTemplates``. The first three
    derive from the name only; the CRD makes the snapshot volume's size and class
    immutable, and turning snapshots on or off makes the operator replace the StatefulSet.
    """
    check_name(dt)
    config = build_twin_config(dt) if config is None else config
    name = dt["metadata"]["name"]
    names = child_names(dt)
    spec: dict[str, Any] = {
        "replicas": int(dt["spec"].get("replicas", 1)),
        "revisionHistoryLimit": 5,
        "serviceName": names["headless"],
        # Replicas are independent (each has its own consumer): start and stop them together.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector_labels(name)},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "template": _pod_template(dt, default_image=default_image, config=config),
        # No persistentVolumeClaimRetentionPolicy: its default (Retain on delete and on
        # scale-down) is what a twin needs (snapshots are state, and a replaced StatefulSet
        # takes its claims back by name), and leaving it out works on clusters whose API
        # server lacks the field (a dropped field would look like drift forever).
    }
    if durability(dt["spec"])[1].get("enabled"):
        spec["volumeClaimTemplates"] = [_volume_claim(dt)]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(dt, names["workload"]),
        "spec": spec,
    }


def build_workload(
    dt: Mapping[str, Any], *, default_image: str, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Deployment or StatefulSet the spec calls for (see :func:`workload_kind`)."""
    if workload_kind(dt.get("spec") or {}) == "StatefulSet":
        return build_statefulset(dt, default_image=default_image, config=config)
    return build_deployment(dt, default_image=default_image, config=config)


def _service_ports(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = [
        {
            "name": "grpc",
            "port": grpc_port(spec),
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    if metrics_port(spec):
        ports.append(
            {
                "name": "metrics",
                "port": metrics_port(spec),
                "targetPort": "metrics",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    if http_port(spec):
        ports.append(
            {
                "name": "http",
                "port": http_port(spec),
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    return ports


def build_service(dt: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's Service: ports ``grpc``, ``metrics`` and ``http`` (the last two unless 0)."""
    check_name(dt)
    spec = dt["spec"]
    metadata = meta(dt, child_names(dt)["service"])
    if spec.get("serviceAnnotations"):
        metadata["annotations"] = dict(spec["serviceAnnotations"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": spec.get("serviceType", "ClusterIP"),
            "selector": selector_labels(dt["metadata"]["name"]),
            "ports": _service_ports(spec),
        },
    }


def build_headless_service(dt: Mapping[str, Any]) -> dict[str, Any]:
    """``<name>-pods``: the StatefulSet's governing Service (one DNS name per replica,
    ``<name>-<ordinal>.<name>-pods.<namespace>.svc``), listed also while not ready so a
    client can watch one replica catch up."""
    check_name(dt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(dt, child_names(dt)["headless"]),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(dt["metadata"]["name"]),
            "ports": _service_ports(dt["spec"]),
        },
    }


def build_children(
    dt: Mapping[str, Any], *, default_image: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(config, children)``: everything the operator applies for one DigitalTwin, in
    apply order (config first, so new pods never read an old file).

    Raises:
        SpecError: with the message the operator writes into the twin's status.
    """
    from .twin_config import validate_twin_config

    check_name(dt)
    config = build_twin_config(dt)
    errors = validate_twin_config(config)
    if errors:
        raise SpecError("the rendered twin config is invalid: " + "; ".join(errors[:5]))
    children = [build_configmap(dt, config), build_service(dt)]
    workload = build_workload(dt, default_image=default_image, config=config)
    if workload["kind"] == "StatefulSet":
        children.append(build_headless_service(dt))
    children.append(workload)
    return config, children
