"""Publishes pre-generated telemetry to NATS: ``count`` events, at ``rate`` events/s
(0 = as fast as the client can), stream or batch messages. Prints
``{"ready": true}`` once connected and payloads are built, waits for a line on
stdin ("go"), publishes, prints ``{"published": n, "seconds": s}``.

With ``--progress SUBJECT`` the publisher is closed-loop: it keeps at most
``--window`` messages in flight beyond what the consumer reports as processed
(a request on SUBJECT answers with the consumer's event count). Throughput is then
the consumer's sustained capacity, without slow-consumer drops skewing it; the
window is far larger than one round trip's worth, so the pipe never runs dry.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import nats
from _common import BATCH_SUBJECT, STREAM_SUBJECT, batch_payloads, emit, stream_payloads


async def main(args: argparse.Namespace) -> None:
    if args.mode == "stream":
        payloads = stream_payloads(min(args.count, args.distinct), args.seed)
        subject, per_msg = STREAM_SUBJECT, 1
    else:
        payloads = batch_payloads(
            min(args.count, args.distinct * args.batch), args.batch, args.seed
        )
        subject, per_msg = BATCH_SUBJECT, args.batch
    n_msgs = args.count // per_msg
    nc = await nats.connect(args.url, pending_size=64 * 1024 * 1024, flush_timeout=30)
    emit({"ready": True, "messages": n_msgs})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t0 = time.perf_counter()
    msg_rate = args.rate / per_msg if args.rate > 0 else 0.0
    sent = 0
    np_ = len(payloads)
    publish = nc.publish
    acked = 0
    while sent < n_msgs:
        if args.progress:
            if sent - acked >= args.window // 2:
                await nc.flush()
                reply = await nc.request(args.progress, b"", timeout=120)
                acked = int(reply.data) // per_msg
                if sent - acked >= args.window // 2:
                    await asyncio.sleep(0.002)  # polls cost the consumer too: keep them rare
                    continue
            due = min(n_msgs, acked + args.window, sent + 500)
            for i in range(sent, due):
                await publish(subject, payloads[i % np_])
            sent = due
            continue
        if msg_rate:
            due = min(n_msgs, int((time.perf_counter() - t0) * msg_rate) + 1)
            if due <= sent:
                await asyncio.sleep(0.002)
                continue
        else:
            due = min(n_msgs, sent + 2000)
        for i in range(sent, due):
            await publish(subject, payloads[i % np_])
        sent = due
        if not msg_rate:
            await nc.flush()  # bounds the client buffer; the server paces us
    await nc.flush()
    emit({"published": sent * per_msg, "seconds": time.perf_counter() - t0})
    await nc.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("stream", "batch"), default="stream")
    p.add_argument("--count", type=int, required=True, help="events")
    p.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = max")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--distinct", type=int, default=50_000, help="distinct payloads, cycled")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--progress",
        default="",
        help="closed loop: subject answering the consumer's processed-event count",
    )
    p.add_argument(
        "--window", type=int, default=2000, help="closed loop: messages in flight at most"
    )
    asyncio.run(main(p.parse_args()))
