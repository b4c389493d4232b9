"""polaris-twin-operator: runs POLARIS DigitalTwin resources on Kubernetes.

Installed as the package ``polaris_operator`` (the source folder is ``operator/polaris_operator/``; a
top-level package named ``operator`` would shadow the standard library). The operator
shares only the twin's config schema with the twin runtime (``twin.core.config``).

Layers: ``main`` (CLI, kopf settings) → ``handlers`` (kopf wiring, API calls) →
``builders`` (pure) and ``kube`` (a small API client over aiohttp).
"""

from .builders import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SpecError,
    build_configmap,
    build_deployment,
    build_service,
    build_twin_config,
    config_hash,
    status_from_deployment,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "SpecError",
    "build_configmap",
    "build_deployment",
    "build_service",
    "build_twin_config",
    "config_hash",
    "status_from_deployment",
]
