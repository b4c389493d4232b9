"""``polaris-twin top``: a live view of a running twin (the seed's
``monitor_digital_twin_performance.py``).

Polls ``Manage get_metrics`` every ``--interval`` seconds and redraws one screen
with plain ANSI escapes (no curses, so it works in any terminal, over ssh and in
``kubectl exec``): ingestion throughput computed from counter deltas between
frames, queue, dead letters by reason, store size, and per-RPC / per-model-call
latencies. ``--once`` prints a single frame without escapes, for scripts and tests.

Exit codes: 0 after ``--once`` or Ctrl-C, 1 when the twin cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TextIO

import orjson

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, GREEN, YELLOW, RESET = (
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[0m",
)
_RPC = re.compile(r"^rpc_([a-z0-9_]+?)_(requests_total|p50_ms|p99_ms)$")
_MODEL = re.compile(r"^model_([a-z0-9_]+?)_(seconds_total|p50_ms|p99_ms)$")


def fetch(target: str, timeout: float = 5.0, channel: object | None = None) -> dict[str, float]:
    """One ``get_metrics`` snapshot as a flat dict (raises ``grpc.RpcError``)."""
    import grpc

    from twin._proto import digital_twin_pb2 as pb
    from twin._proto import digital_twin_pb2_grpc as pb_grpc

    own = channel is None
    ch = grpc.insecure_channel(target) if own else channel
    try:
        resp = pb_grpc.DigitalTwinStub(ch).Manage(
            pb.ManagementRequest(operation="get_metrics"), timeout=timeout
        )
    finally:
        if own:
            ch.close()  # type: ignore[union-attr]
    if not resp.success:
        raise RuntimeError(f"get_metrics failed: {resp.result}")
    data = orjson.loads(resp.result)
    return {k: float(v) for k, v in data.items()}


def _human(n: float, unit: str = "") -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.1f}{unit}"


def _bytes(n: float) -> str:
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n:.0f} B"


def _rate(
    cur: dict[str, float], prev: dict[str, float] | None, key: str, dt: float
) -> float | None:
    if prev is None or dt <= 0 or key not in prev:
        return None
    return max(0.0, (cur.get(key, 0.0) - prev[key]) / dt)


def render(
    m: dict[str, float],
    prev: dict[str, float] | None = None,
    dt: float = 0.0,
    target: str = "",
    color: bool = False,
) -> str:
    """One frame of text for snapshot ``m`` (``prev`` taken ``dt`` seconds earlier)."""

    def c(code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    conn = m.get("ingest_connected", 0.0) >= 1.0
    up = m.get("uptime_seconds", 0.0)
    lines = [
        c(BOLD, f"POLARIS digital twin  {target}")
        + f"   up {int(up // 3600)}h{int(up % 3600 // 60):02d}m{int(up % 60):02d}s   NATS "
        + (c(GREEN, "connected") if conn else c(RED, "DISCONNECTED")),
        "",
        c(BOLD, "ingestion"),
    ]
    recv = _rate(m, prev, "events_received_total", dt)
    applied = _rate(m, prev, "events_applied_total", dt)
    msgs = _rate(m, prev, "messages_received_total", dt)
    if recv is None:
        recv = m.get("messages_per_second", 0.0)
        lines.append(
            f"  events/s        {_human(recv):>10}   (10 s average; live rates from the next frame)"
        )
    else:
        lines.append(
            f"  events/s in     {_human(recv):>10}   applied {_human(applied or 0.0):>8}   "
            f"messages/s {_human(msgs or 0.0):>8}"
        )
    lines.append(
        f"  events total    {_human(m.get('events_received_total', 0)):>10}   applied "
        f"{_human(m.get('events_applied_total', 0)):>8}   batches "
        f"{_human(m.get('batches_applied_total', 0)):>8}"
    )
    q, hw = m.get("queue_size", 0.0), m.get("queue_high_water", 0.0)
    lines.append(f"  queue           {q:>10.0f}   high water {hw:>5.0f}")
    dl = m.get("dead_lettered_total", 0.0)
    dl_rate = _rate(m, prev, "dead_lettered_total", dt)
    reasons = sorted(
        ((k.split(".", 1)[1], v) for k, v in m.items() if k.startswith("dead_lettered_total.")),
        key=lambda kv: -kv[1],
    )
    dl_text = f"  dead letters    {dl:>10.0f}" + (f"   {dl_rate:.1f}/s" if dl_rate else "")
    if reasons:
        dl_text += "   " + ", ".join(f"{r}={v:.0f}" for r, v in reasons[:6])
    lines.append(c(YELLOW, dl_text) if dl else dl_text)
    drops = (
        m.get("slow_consumer_drops_total", 0.0)
        + m.get("dead_letter_publish_failures_total", 0.0)
        + m.get("ingest_apply_errors_total", 0.0)
    )
    if drops:
        lines.append(
            c(
                RED,
                f"  problems        slow-consumer {m.get('slow_consumer_drops_total', 0):.0f}   "
                f"DLQ publish failures {m.get('dead_letter_publish_failures_total', 0):.0f}   "
                f"model errors {m.get('ingest_apply_errors_total', 0):.0f}",
            )
        )
    lines.append(
        f"  reconnects      {m.get('nats_reconnects_total', 0):>10.0f}   disconnects "
        f"{m.get('nats_disconnects_total', 0):.0f}"
    )
    lines += ["", c(BOLD, "store")]
    lines.append(
        f"  series          {_human(m.get('series', 0)):>10}   samples "
        f"{_human(m.get('samples_retained', 0)):>8}   memory {_bytes(m.get('store_bytes', 0))}"
    )
    rpcs: dict[str, dict[str, float]] = {}
    for k, v in m.items():
        if mm := _RPC.match(k):
            rpcs.setdefault(mm[1], {})[mm[2]] = v
    lines += [
        "",
        c(
            BOLD,
            f"  {'rpc':<16}{'calls':>10}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}",
        ),
    ]
    if not rpcs:
        lines.append(c(DIM, "  (no RPCs yet)"))
    for method, r in sorted(rpcs.items()):
        rate = _rate(m, prev, f"rpc_{method}_requests_total", dt)
        errors = sum(
            v
            for k, v in m.items()
            if k.startswith(f"rpc_{method}_responses_total.") and not k.endswith(".OK")
        )
        shown_rate = "" if rate is None else f"{rate:.1f}"
        lines.append(
            f"  {method:<16}{r.get('requests_total', 0):>10.0f}{shown_rate:>10}"
            f"{r.get('p50_ms', 0):>10.2f}{r.get('p99_ms', 0):>10.2f}{errors:>8.0f}"
        )
    models: dict[str, dict[str, float]] = {}
    for k, v in m.items():
        if (
            mm := _MODEL.match(k)
        ) and f"model_{mm[1]}_p50_ms" in m:  # not model_update_seconds_total
            models.setdefault(mm[1], {})[mm[2]] = v
    if models:
        lines += [
            "",
            c(BOLD, f"  {'model call':<16}{'total s':>10}{'':>10}{'p50 ms':>10}{'p99 ms':>10}"),
        ]
        for op, r in sorted(models.items()):
            lines.append(
                f"  {op:<16}{r.get('seconds_total', 0):>10.2f}{'':>10}"
                f"{r.get('p50_ms', 0):>10.2f}{r.get('p99_ms', 0):>10.2f}"
            )
    lines.append(
        f"  model update on ingest: {m.get('model_update_seconds_total', 0):.2f} s total   "
        f"rejected busy: {m.get('rpc_rejected_busy_total', 0):.0f}"
    )
    extra = {k[len("model.") :]: v for k, v in m.items() if k.startswith("model.")}
    if extra:
        lines += ["", c(BOLD, "model")]
        lines += [f"  {k:<30}{v:>14.6g}" for k, v in sorted(extra.items())[:12]]
    return "\n".join(lines) + "\n"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=os.environ.get("POLARIS_TWIN_TARGET", "127.0.0.1:50051"),
        help="HOST:PORT of the twin's gRPC endpoint (default: $POLARIS_TWIN_TARGET or "
             "127.0.0.1:50051)",
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one frame (no ANSI escapes) and exit")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds")
    p.add_argument("--no-color", action="store_true", help="no colours even on a terminal")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import grpc

    out = out or sys.stdout
    channel = grpc.insecure_channel(args.target)
    prev: dict[str, float] | None = None
    prev_t = 0.0
    color = not args.once and not args.no_color and out.isatty()
    try:
        while True:
            try:
                snap = fetch(args.target, args.timeout, channel)
            except grpc.RpcError as exc:
                print(
                    f"cannot reach the twin at {args.target}: {exc.code().name}: {exc.details()}",
                    file=sys.stderr,
                )
                if args.once or prev is None:
                    return 1
                time.sleep(args.interval)
                continue
            now = time.monotonic()
            frame = render(
                snap, prev, now - prev_t if prev is not None else 0.0, args.target, color
            )
            if args.once:
                out.write(frame)
                out.flush()
                return 0
            out.write(
                CLEAR
                + frame
                + (
                    f"{DIM}refresh {args.interval:g}s · Ctrl-C quits{RESET}\n"
                    if color
                    else f"refresh {args.interval:g}s, Ctrl-C quits\n"
                )
            )
            out.flush()
            prev, prev_t = snap, now
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="polaris-twin top",
        description="Live view of a running twin: throughput, queue, dead letters, latencies.",
    )
    configure_parser(p)
    return run(p.parse_args(argv))
