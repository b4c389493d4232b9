"""Exemplar managed systems on a discrete-event simulator (tests and ``bench/plans.py``).

``from twin.tools.exemplars import SwimTier, SwitchInference, K8sService`` - each runs a
FCFS multi-server queue (``des.py``), applies actions while it runs and yields
telemetry events and execution results in the original POLARIS formats plus the
truth per 10 s bin (``systems.py``). ``points`` turns the events into ingestion
``Point``s; ``publish`` sends them over NATS.
"""

from twin.tools.exemplars.systems import (
    SWITCH_LEVELS,
    SYSTEMS,
    Act,
    Exemplar,
    K8sService,
    Segment,
    SwimTier,
    SwitchInference,
    constant,
    iso,
)

__all__ = [
    "SWITCH_LEVELS",
    "SYSTEMS",
    "Act",
    "Exemplar",
    "K8sService",
    "Segment",
    "SwimTier",
    "SwitchInference",
    "constant",
    "iso",
]
