"""Stream messages that wait in the queue share one queued item (up to ``batch_size``
points): fewer queue operations per event, with the same batches, order and counts."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from twin.core.state import TwinState
from twin.ingest.nats_ingest import Ingestor
from twin.models.domain import EventBatch
from twin.models.mock import MockWorldModel

from support import twin_config

STREAM = "polaris.telemetry.events.stream"
EXEC = "polaris.execution.results"


class Recording(MockWorldModel):
    def __init__(self, state: TwinState) -> None:
        super().__init__(state)
        self.batches: list[tuple[list[float], int]] = []

    def update(self, batch: EventBatch) -> None:
        self.batches.append(([p.value for p in batch.points], len(batch.actions)))


def _event(i: int) -> bytes:
    return orjson.dumps({"name": "m", "value": float(i), "source": "s", "timestamp": 1e9 + i})


def _execution() -> bytes:
    return orjson.dumps(
        {"action_id": "a1", "action_type": "ADD_SERVER", "status": "success", "success": True}
    )


async def _ingestor(batch_size: int) -> tuple[Ingestor, Recording]:
    cfg = twin_config(None, nats={"batch_size": batch_size, "batch_timeout_sec": 0.05})
    state = TwinState()
    model = Recording(state)
    return Ingestor(cfg.nats, state, lambda: model), model


@pytest.mark.parametrize("batch_size", [1, 7, 10])
async def test_queued_stream_messages_share_items_and_batches_keep_their_size(
    batch_size: int,
) -> None:
    ing, model = await _ingestor(batch_size)
    n = 95
    for i in range(n):  # the applier is not running yet: everything waits in the queue
        await ing.handle(STREAM, _event(i))
    assert ing.queue.qsize() == -(-n // batch_size)  # ceil: items of batch_size points
    applier = asyncio.create_task(ing._apply_loop())
    await asyncio.wait_for(ing.queue.join(), 5)
    applier.cancel()
    sizes = [len(v) for v, _ in model.batches]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    assert [x for v, _ in model.batches for x in v] == [float(i) for i in range(n)]
    assert ing.stats.events_applied == n and ing.stats.events_received == n
    assert ing.state.store.get("s", "m").arrays()[1].tolist() == [float(i) for i in range(n)]


async def test_a_grown_item_taken_after_a_partial_batch_is_split_to_exactly_batch_size() -> None:
    ing, model = await _ingestor(10)
    applier = asyncio.create_task(ing._apply_loop())
    for i in range(3):
        await ing.handle(STREAM, _event(i))
    await asyncio.sleep(0)  # the applier takes these 3 and waits for the rest of its batch
    for i in range(3, 25):  # then 22 arrive together: one item of 10, one of 10, one of 2
        await ing.handle(STREAM, _event(i))
    await asyncio.wait_for(ing.queue.join(), 5)
    applier.cancel()
    assert [len(v) for v, _ in model.batches] == [10, 10, 5]
    assert [x for v, _ in model.batches for x in v] == [float(i) for i in range(25)]


async def test_other_messages_keep_their_place_between_stream_events() -> None:
    ing, model = await _ingestor(10)
    for i in range(3):
        await ing.handle(STREAM, _event(i))
    await ing.handle(EXEC, _execution())
    for i in range(3, 6):
        await ing.handle(STREAM, _event(i))
    assert ing.queue.qsize() == 3  # stream item, execution, a new stream item
    applier = asyncio.create_task(ing._apply_loop())
    await asyncio.wait_for(ing.queue.join(), 5)
    applier.cancel()
    assert [x for v, _ in model.batches for x in v] == [float(i) for i in range(6)]
    assert sum(a for _, a in model.batches) == 1 and ing.stats.events_applied == 7


async def test_messages_with_an_ack_are_queued_one_by_one() -> None:
    ing, model = await _ingestor(10)
    acked: list[int] = []

    def acker(i: int):  # type: ignore[no-untyped-def]
        async def ack() -> None:
            acked.append(i)

        return ack

    for i in range(5):
        await ing.handle(STREAM, _event(i), ack=acker(i))
    assert ing.queue.qsize() == 5
    applier = asyncio.create_task(ing._apply_loop())
    await asyncio.wait_for(ing.queue.join(), 5)
    applier.cancel()
    assert acked == list(range(5)) and ing.stats.events_applied == 5
