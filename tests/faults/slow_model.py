"""A deliberately slow world model for fault tests, registered in process with
``register_model("slow_test", SlowModel)``.

Settings: ``update_delay`` (seconds of blocking work per applied batch: a model that
cannot keep up with ingestion), ``query_delay`` (seconds each query, simulation and
diagnosis awaits: a model slower than the client's deadline) and ``health_delay`` (seconds
each health call awaits: slow Manage operations).
"""

from __future__ import annotations

import asyncio
import time

from twin.models.base import (
    EventBatch,
    Health,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.mock import MockWorldModel
from twin.models.registry import register_model


class SlowModel(MockWorldModel):
    name = "slow_test"
    version = "0.0.1"

    def update(self, batch: EventBatch) -> None:
        delay = float(self.settings.get("update_delay", 0.0))
        if delay:
            time.sleep(delay)  # blocking on purpose: it holds the applier like real CPU work would
        self.batches = getattr(self, "batches", 0) + 1

    async def query(self, request: QueryRequest) -> QueryResult:
        await asyncio.sleep(float(self.settings.get("query_delay", 0.0)))
        return await super().query(request)

    async def health(self) -> Health:
        await asyncio.sleep(float(self.settings.get("health_delay", 0.0)))
        return await super().health()

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        await asyncio.sleep(float(self.settings.get("query_delay", 0.0)))
        return await super().simulate(request)


def register() -> str:
    register_model(SlowModel.name, SlowModel)
    return SlowModel.name
