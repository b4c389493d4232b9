"""Cost of ``digital_twin.systems`` on the ingestion path, in process, same-run ratios.

``Ingestor.handle`` (decode → filter → queue, no NATS) on the same payloads with:
no systems (the baseline), a pattern every event matches (the filter's cost when it keeps
everything), and two of ten systems kept (80 % skipped). Rounds are interleaved and the
median is reported, so machine noise hits every variant alike.

    python bench/systems_filter.py [--rounds 7] [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time

import orjson

from twin.core.config import load_config
from twin.core.state import TwinState
from twin.ingest.nats_ingest import Ingestor
from twin.models.mock import MockWorldModel

BATCH = "polaris.telemetry.events.batch"
STREAM = "polaris.telemetry.events.stream"
VARIANTS = {"none": (), "all_kept": ("sys*",), "two_of_ten_kept": ("sys1", "sys2")}


def payloads(messages: int) -> tuple[list[bytes], list[bytes]]:
    t0 = time.time() - 3600
    batches = [
        orjson.dumps(
            {
                "events": [
                    {
                        "name": f"m{j % 5}",
                        "value": float(j),
                        "source": f"sys{j % 10}",
                        "timestamp": t0 + i + j / 1000,
                    }
                    for j in range(100)
                ]
            }
        )
        for i in range(messages)
    ]
    singles = [
        orjson.dumps({"name": "m", "value": 1.0, "source": f"sys{i % 10}", "timestamp": t0 + i})
        for i in range(messages * 10)
    ]
    return batches, singles


def ingestor(systems: tuple[str, ...]) -> Ingestor:
    cfg = load_config(overrides={"digital_twin": {"nats": {"queue_maxsize": 10**7}}}, environ={})
    state = TwinState(limits=cfg.limits)
    model = MockWorldModel(state, {})
    return Ingestor(cfg.nats, state, lambda: model, systems=systems)


async def rate(ing: Ingestor, subject: str, data: list[bytes], events_each: int) -> float:
    """Events/s through ``handle``; the queue is emptied every 100 messages (untimed), so
    no variant pays for a larger heap than another."""
    elapsed = 0.0
    for start in range(0, len(data), 100):
        gc.collect()
        t0 = time.perf_counter()
        for payload in data[start : start + 100]:
            await ing.handle(subject, payload)
        elapsed += time.perf_counter() - t0
        while not ing.queue.empty():
            ing.queue.get_nowait()
    return len(data) * events_each / elapsed


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--messages", type=int, default=2000)
    args = p.parse_args()
    batches, singles = payloads(args.messages)
    ings = {name: ingestor(systems) for name, systems in VARIANTS.items()}
    results: dict[str, dict[str, list[float]]] = {n: {"batch": [], "stream": []} for n in VARIANTS}
    order = list(ings)
    for _ in range(args.rounds):
        random.shuffle(order)  # no variant always runs first (or right after a GC)
        for name in order:
            ing = ings[name]
            results[name]["batch"].append(await rate(ing, BATCH, batches, 100))
            results[name]["stream"].append(await rate(ing, STREAM, singles, 1))
    summary: dict[str, float] = {}
    print(f"{'variant':<18}{'batch ev/s':>14}{'ratio':>8}{'stream ev/s':>14}{'ratio':>8}")
    base = {k: statistics.median(v) for k, v in results["none"].items()}
    for name in VARIANTS:
        med = {k: statistics.median(v) for k, v in results[name].items()}
        rb, rs = med["batch"] / base["batch"], med["stream"] / base["stream"]
        print(f"{name:<18}{med['batch']:>14,.0f}{rb:>8.2f}{med['stream']:>14,.0f}{rs:>8.2f}")
        summary[f"{name}_batch_ratio"] = round(rb, 3)
        summary[f"{name}_stream_ratio"] = round(rs, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
