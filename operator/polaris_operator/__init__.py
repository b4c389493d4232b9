"""polaris-twin-operator: runs POLARIS DigitalTwin resources on Kubernetes.

Installed as the package ``polaris_operator`` (the source folder is
``operator/polaris_operator/``; a top-level package named ``operator`` would shadow the
standard library). The operator shares only the twin's config schema with the twin
runtime (``twin.core.config``).

Layers: ``main`` (CLI: run, render) → ``handlers`` (kopf wiring, API calls) →
``builders`` (pure: names, twin config, manifests, drift, status), ``kube`` (the
``kubernetes_asyncio`` client fed by kopf's credentials) and ``metrics``.
"""

from .builders import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SpecError,
    build_children,
    build_configmap,
    build_deployment,
    build_service,
    build_statefulset,
    build_twin_config,
    build_workload,
    config_hash,
    status_from_workload,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "SpecError",
    "build_children",
    "build_configmap",
    "build_deployment",
    "build_service",
    "build_statefulset",
    "build_twin_config",
    "build_workload",
    "config_hash",
    "status_from_workload",
]
