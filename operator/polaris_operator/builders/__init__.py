"""Pure builders: a ``DigitalTwin`` object in, Kubernetes manifests and status out.

Nothing here calls the API, reads the clock or the environment: the handlers pass in the
current time, the default image and the live objects. Modules, one job each:

- :mod:`.names`: names, labels, ports and the ``SpecError`` every builder raises;
- :mod:`.twin_config`: the twin's config file (validated by the twin's own schema);
- :mod:`.manifests`: ConfigMap, Services, Deployment or StatefulSet;
- :mod:`.drift`: whether a live object still says what the desired one says;
- :mod:`.status`: conditions from the workload and its pods.
"""

from .drift import first_difference, is_subset
from .manifests import (
    ADMIN_TOKEN_KEY,
    LIVENESS_SERVICE,
    build_children,
    build_configmap,
    build_deployment,
    build_headless_service,
    build_service,
    build_statefulset,
    build_workload,
    workload_kind,
)
from .names import (
    ADMIN_TOKEN_DIR,
    ADMIN_TOKEN_FILE,
    API_GROUP,
    API_VERSION,
    CONFIG_FILE,
    CONFIG_MOUNT_DIR,
    DEFAULT_METRICS_PORT,
    KIND,
    MANAGED_BY,
    PLURAL,
    SNAPSHOT_DIR,
    TWIN_LABEL,
    SpecError,
    child_names,
    endpoint,
    selector_labels,
)
from .status import (
    PodProblem,
    conditions_equal,
    invalid_spec_status,
    pod_problems,
    set_condition,
    status_from_workload,
)
from .twin_config import (
    build_twin_config,
    config_hash,
    find_secret_like_keys,
    parse_duration,
    render_config,
    validate_twin_config,
)

__all__ = [
    "ADMIN_TOKEN_DIR",
    "ADMIN_TOKEN_FILE",
    "ADMIN_TOKEN_KEY",
    "API_GROUP",
    "API_VERSION",
    "CONFIG_FILE",
    "CONFIG_MOUNT_DIR",
    "DEFAULT_METRICS_PORT",
    "KIND",
    "LIVENESS_SERVICE",
    "MANAGED_BY",
    "PLURAL",
    "SNAPSHOT_DIR",
    "TWIN_LABEL",
    "PodProblem",
    "SpecError",
    "build_children",
    "build_configmap",
    "build_deployment",
    "build_headless_service",
    "build_service",
    "build_statefulset",
    "build_twin_config",
    "build_workload",
    "child_names",
    "conditions_equal",
    "config_hash",
    "endpoint",
    "find_secret_like_keys",
    "first_difference",
    "invalid_spec_status",
    "is_subset",
    "parse_duration",
    "pod_problems",
    "render_config",
    "selector_labels",
    "set_condition",
    "status_from_workload",
    "validate_twin_config",
    "workload_kind",
]
