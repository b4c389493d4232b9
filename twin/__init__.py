"""POLARIS Digital Twin: a world model fed by NATS telemetry and served over gRPC.

Layers point one way: ``cli``/``app`` → ``service`` / ``ingest`` → ``models`` → ``core``.
The public surface is what ``__all__`` lists; everything else is internal.
"""

from twin.core.errors import (
    ConfigError,
    DecodeError,
    IngestError,
    InvalidRequest,
    ModelError,
    ModelNotFound,
    ModelUnavailable,
    TwinError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DecodeError",
    "IngestError",
    "InvalidRequest",
    "ModelError",
    "ModelNotFound",
    "ModelUnavailable",
    "TwinError",
    "__version__",
]
