"""The baseline consumer: a bare nats-py subscriber that only counts.

Counts messages on one subject (× ``--per-message`` events) until ``--count``
events arrived or nothing arrived for ``--idle`` seconds; reports events/s between
the first and the last message."""

from __future__ import annotations

import argparse
import asyncio
import time

import nats
from _common import emit


async def main(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.url)
    state = {"n": 0, "first": 0.0, "last": 0.0}
    done = asyncio.Event()
    target = args.count // args.per_message

    async def cb(msg: nats.aio.msg.Msg) -> None:
        now = time.perf_counter()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now
        if state["n"] >= target:
            done.set()

    async def progress(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(str(state["n"] * args.per_message).encode())

    await nc.subscribe(args.subject, cb=cb)
    if args.progress:
        await nc.subscribe(args.progress, cb=progress)
    await nc.flush()
    emit({"ready": True})
    seen = -1
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), args.idle)
        except TimeoutError:
            if state["n"] == seen and state["n"] > 0:
                break
            seen = state["n"]
    events = state["n"] * args.per_message
    secs = max(state["last"] - state["first"], 1e-9)
    emit({"events": events, "seconds": secs, "events_per_s": events / secs})
    await nc.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--count", type=int, required=True, help="events expected")
    p.add_argument("--per-message", type=int, default=1)
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument(
        "--progress", default="", help="answer requests here with the events counted so far"
    )
    asyncio.run(main(p.parse_args()))
