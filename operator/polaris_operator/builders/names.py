"""Names, labels and constants shared by every builder.

A child's name and its pod selector derive only from the DigitalTwin's name: selectors
are immutable, so they must never depend on anything a user can edit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ADMIN_TOKEN_DIR",
    "ADMIN_TOKEN_FILE",
    "API_GROUP",
    "API_VERSION",
    "APP_NAME",
    "CONFIG_FILE",
    "CONFIG_MOUNT_DIR",
    "CONTAINER_NAME",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_METRICS_PORT",
    "KIND",
    "MANAGED_BY",
    "PLURAL",
    "SNAPSHOT_DIR",
    "SNAPSHOT_VOLUME",
    "TWIN_LABEL",
    "SpecError",
    "check_name",
    "child_names",
    "endpoint",
    "grpc_port",
    "http_port",
    "implementation",
    "labels",
    "meta",
    "metrics_port",
    "selector_labels",
]

API_GROUP = "polaris.io"
API_VERSION = "v1alpha1"
KIND = "DigitalTwin"
PLURAL = "digitaltwins"
MANAGED_BY = "polaris-twin-operator"
APP_NAME = "polaris-twin"
TWIN_LABEL = "polaris.io/digitaltwin"

CONFIG_MOUNT_DIR = "/etc/polaris-twin"
CONFIG_FILE = "config.yaml"
NATS_CREDS_DIR = "/var/run/secrets/polaris/nats"
NATS_CREDS_FILE = "nats.creds"
# The admin token's Secret volume (a directory mount, never subPath: the kubelet swaps the
# ..data symlink on rotation and the twin re-reads the file when it changes).
ADMIN_TOKEN_DIR = "/var/run/secrets/polaris/admin"
ADMIN_TOKEN_FILE = "token"
SNAPSHOT_DIR = "/var/lib/polaris/snapshots"
SNAPSHOT_VOLUME = "snapshots"
CONTAINER_NAME = "twin"
RUN_AS = 10001

DEFAULT_GRPC_PORT = 50051
DEFAULT_METRICS_PORT = 9464
DEFAULT_HTTP_PORT = 8080

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# 63 (DNS label) minus room for the longest derived name: "<name>-pods" for the headless
# Service and the StatefulSet's pod names "<name>-<ordinal>" plus its revision label.
MAX_NAME = 47


class SpecError(ValueError):
    """A DigitalTwin spec the operator cannot honour (reported, never retried)."""


def child_names(dt: Mapping[str, Any]) -> dict[str, str]:
    """Names of the children: the workload and the Service share the twin's name."""
    name = dt["metadata"]["name"]
    return {
        "workload": name,
        "service": name,
        "headless": f"{name}-pods",
        "configmap": f"{name}-config",
        "pdb": name,
    }


def selector_labels(name: str) -> dict[str, str]:
    """Immutable pod selector of a twin's workload and Service."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name}


def labels(name: str) -> dict[str, str]:
    """Labels of every child and pod: the selector plus what the operator watches by."""
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "digital-twin",
        "app.kubernetes.io/part-of": "polaris",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        TWIN_LABEL: name,
    }


def meta(dt: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": dt["metadata"].get("namespace", "default"),
        "labels": labels(dt["metadata"]["name"]),
    }


def check_name(dt: Mapping[str, Any]) -> None:
    name = dt.get("metadata", {}).get("name", "")
    if not _NAME_RE.match(name) or len(name) > MAX_NAME:
        raise SpecError(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {MAX_NAME} characters"
        )


def grpc_port(spec: Mapping[str, Any]) -> int:
    return int((spec.get("grpc") or {}).get("port", DEFAULT_GRPC_PORT))


def metrics_port(spec: Mapping[str, Any]) -> int:
    """The Prometheus port: 9464 unless the spec says otherwise (0 turns it off)."""
    value = (spec.get("telemetry") or {}).get("metricsPort", DEFAULT_METRICS_PORT)
    return int(value or 0)


def http_port(spec: Mapping[str, Any]) -> int:
    """The REST/JSON gateway's port: 8080 unless the spec says otherwise (0 turns it off)."""
    value = (spec.get("http") or {}).get("port", DEFAULT_HTTP_PORT)
    return int(value or 0)


def implementation(spec: Mapping[str, Any]) -> str:
    return str((spec.get("worldModel") or {}).get("implementation", "statistical"))


def endpoint(dt: Mapping[str, Any]) -> str:
    """In-cluster gRPC endpoint (host:port) of the twin's Service."""
    ns = dt["metadata"].get("namespace", "default")
    return f"{child_names(dt)['service']}.{ns}.svc:{grpc_port(dt['spec'])}"
