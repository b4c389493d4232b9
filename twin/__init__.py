"""POLARIS Digital Twin: a world model fed by NATS telemetry and served over gRPC.

Layers point one way: ``cli``/``app`` → ``service`` / ``ingest`` → ``models`` → ``core``.
The public surface is what ``__all__`` lists; everything else is internal.
"""

import os

# gRPC's fork handlers break a child forked while gRPC threads run (the embedded
# nats-server is started with a pre-exec hook, so it is a real fork): about one spawn
# in twenty died before exec. The twin never forks without exec, so it needs no fork
# support. Read when grpc is first imported, hence here; an explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from twin.core.errors import (  # noqa: E402 - after the environment default above
    Busy,
    ConfigError,
    DecodeError,
    IngestError,
    InvalidRequest,
    ModelError,
    ModelNotFound,
    ModelUnavailable,
    PortInUse,
    TwinError,
)

__version__ = "0.1.0"

__all__ = [
    "Busy",
    "ConfigError",
    "DecodeError",
    "IngestError",
    "InvalidRequest",
    "ModelError",
    "ModelNotFound",
    "ModelUnavailable",
    "PortInUse",
    "TwinError",
    "__version__",
]
