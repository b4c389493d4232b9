"""Fault-injection scenarios for a small multi-service system, with ground truth.

The system: an ingress ``web`` tier calling ``app`` and ``auth``; ``app`` calls ``db``
and ``cache``. Each service is an M/M/1-like queue: its request rate is the external
arrival rate times its fan-out, utilisation = rate / capacity (+ extra CPU of a fault),
server-side latency = own service time / (1 - utilisation) + the latency of the calls it
makes (client-side latency). Metrics carry noise, quantisation and occasional bursts.

Faults (``FAULT_KINDS``), injected at ``fault_t`` on one service:

* ``cpu_saturation``: a CPU hog on the target (utilisation and latency rise);
* ``memory_leak``: the target's memory grows linearly, late GC pauses add latency;
* ``slow_dependency``: ``db`` or ``cache`` answers slowly (its latency rises, callers wait);
* ``bad_deployment``: an execution result (a deployment on the target) just before the
  symptom; afterwards the target returns errors and gets slower;
* ``traffic_surge``: the external arrival rate jumps; the root cause is the load, i.e.
  the ingress tier (``web``) whose ``arrival_rate`` is the demand.

``NO_FAULT`` (``"none"``) generates the same system with no fault at all (the earlier
unrelated incident, routine action and blip still happen by chance): ``root_cause`` is
empty and a good diagnosis says that nothing is wrong.

Every scenario is reproducible from its seed. The output uses the wire formats:
telemetry event dicts ``{name, value, unit, timestamp, source, tags}`` and execution
result dicts. ``python -m twin.tools.scenarios --nats-url ... --seed N`` publishes one.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = [
    "FAULT_KINDS",
    "NO_FAULT",
    "SERVICES",
    "Scenario",
    "configure_parser",
    "diagnose_scenario",
    "diagnosis_request",
    "feed_of",
    "generate",
    "main",
    "publish",
]

FAULT_KINDS = (
    "cpu_saturation",
    "memory_leak",
    "slow_dependency",
    "bad_deployment",
    "traffic_surge",
)
NO_FAULT = "none"

# name: (fan-out per external request, capacity req/s, own service time ms, memory MB, callees)
SERVICES: dict[str, tuple[float, float, float, float, tuple[str, ...]]] = {
    "web": (1.0, 120.0, 8.0, 256.0, ("app", "auth")),
    "auth": (1.0, 150.0, 4.0, 128.0, ()),
    "app": (1.0, 90.0, 15.0, 512.0, ("db", "cache")),
    "db": (0.6, 80.0, 6.0, 1024.0, ()),
    "cache": (2.0, 400.0, 0.8, 300.0, ()),
}
INGRESS = "web"
STEPS = (10.0, 15.0, 30.0, 60.0)
EPOCH0 = 1_600_000_000.0  # 2020: every scenario lies in the past (requests far ahead are refused)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Scenario:
    seed: int
    kind: str
    root_cause: str
    fault_t: float  # when the fault starts (event time)
    alert_t: float  # the incident time a caller would put into Diagnose
    step: float
    events: list[dict[str, Any]] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""

    def timeline(self) -> list[tuple[float, str, dict[str, Any]]]:
        """Events and execution results merged in event-time order (``telemetry``/``execution``)."""
        out: list[tuple[float, str, dict[str, Any]]] = []
        for ev in self.events:
            out.append((_parse(ev["timestamp"]), "telemetry", ev))
        for ex in self.executions:
            out.append((_parse(ex["finished_at"]), "execution", ex))
        out.sort(key=lambda x: (x[0], x[1]))
        return out


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _execution(
    rng: random.Random, t_end: float, action_type: str, target: str, success: bool, message: str
) -> dict[str, Any]:
    dur = round(rng.uniform(5.0, 60.0), 1)
    return {
        "action_id": f"act-{rng.getrandbits(48):012x}",
        "action_type": action_type,
        "status": "success" if success else "failed",
        "success": success,
        "message": message,
        "started_at": _iso(t_end - dur),
        "finished_at": _iso(t_end),
        "duration_sec": dur,
        "output": {"target": target},
        "error": None if success else "rollout did not become healthy",
        "retry_count": 0,
        "metadata": {"target": target, "source": "scenario"},
        "target": target,
    }


def generate(seed: int, kind: str | None = None) -> Scenario:
    """One scenario; the same seed (and kind) always gives the same scenario."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    kind = kind or FAULT_KINDS[seed % len(FAULT_KINDS)]
    if kind not in FAULT_KINDS and kind != NO_FAULT:
        raise ValueError(
            f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)} or {NO_FAULT}"
        )
    step = rng.choice(STEPS)
    history = rng.uniform(25.0, 60.0) * 60.0
    after = rng.uniform(8.0, 12.0) * 60.0
    start = EPOCH0 + (seed % 10_000) * 7919.0  # at most ~2.5 years after EPOCH0
    fault_t = start + history
    n = int((history + after) // step)
    t = start + step * np.arange(n)
    on = t >= fault_t
    ramp = np.clip((t - fault_t) / 60.0, 0.0, 1.0)  # faults take about a minute to bite

    names = list(SERVICES)
    base_arrival = rng.uniform(20.0, 45.0)
    # Demand: slow drift + noise.
    phase = rng.uniform(0, 2 * math.pi)
    arrival = base_arrival * (
        1.0 + 0.08 * np.sin(2 * math.pi * (t - start) / rng.uniform(1800, 5400) + phase)
    )
    arrival = arrival * (1.0 + 0.04 * nrng.standard_normal(n))

    extra_cpu = {s: np.zeros(n) for s in names}  # utilisation added by a fault
    extra_lat = {s: np.zeros(n) for s in names}  # ms added to the service's own time
    error_pct = {s: np.zeros(n) for s in names}
    mem_growth = {s: np.zeros(n) for s in names}
    executions: list[dict[str, Any]] = []

    # A smaller, unrelated earlier incident in the history sometimes (like real data).
    if rng.random() < 0.5 and history > 20 * 60:
        s_prev = rng.choice(names)
        t1 = start + rng.uniform(0.2, 0.6) * history
        w = (t >= t1) & (t < t1 + rng.uniform(3, 6) * 60)
        extra_cpu[s_prev][w] += rng.uniform(0.15, 0.3)
    # An unrelated, older routine action sometimes.
    if rng.random() < 0.4:
        tgt = rng.choice(names)
        executions.append(
            _execution(
                rng,
                fault_t - rng.uniform(20, 40) * 60,
                rng.choice(["SCALE_UP", "UPDATE_CONFIG"]),
                tgt,
                True,
                f"routine change on {tgt}",
            )
        )

    # A distractor sometimes: an unrelated short CPU blip on another service after the fault.
    distractor = rng.random() < 0.3

    if kind == "cpu_saturation":
        root = rng.choice(["web", "app", "auth", "db"])
        extra_cpu[root] += ramp * rng.uniform(0.2, 0.6)
        desc = "response time rising"
    elif kind == "memory_leak":
        root = rng.choice(names)
        mem_growth[root] = (
            np.where(on, (t - fault_t) / 60.0, 0.0) * rng.uniform(0.005, 0.05) * SERVICES[root][3]
        )
        extra_lat[root] += (
            np.where(on, (t - fault_t) / 600.0, 0.0) * SERVICES[root][2] * rng.uniform(0.5, 1.5)
        )
        desc = "memory alert"
    elif kind == "slow_dependency":
        root = rng.choice(["db", "cache"])
        extra_lat[root] += ramp * SERVICES[root][2] * rng.uniform(1.5, 15.0)
        desc = "checkout latency high"
    elif kind == "bad_deployment":
        root = rng.choice(["app", "auth", "web"])
        t_dep = fault_t - rng.uniform(0.0, 90.0)
        executions.append(
            _execution(
                rng,
                t_dep,
                "DEPLOY",
                root,
                rng.random() < 0.7,
                f"rolled out a new version of {root}",
            )
        )
        error_pct[root] += ramp * rng.uniform(1.0, 25.0)
        extra_lat[root] += ramp * SERVICES[root][2] * rng.uniform(0.5, 2.0)
        desc = "error rate above SLO"
    elif kind == NO_FAULT:
        root = ""
        desc = "is anything wrong?"
    else:  # traffic_surge
        root = INGRESS
        arrival = arrival * (1.0 + ramp * rng.uniform(0.3, 1.3))
        desc = "traffic spike, latency rising"

    if distractor:
        other = rng.choice([s for s in names if s != root])  # (with no fault: any service)
        t1 = fault_t + rng.uniform(0.0, 4.0) * 60.0
        w = (t >= t1) & (t < t1 + rng.uniform(1.0, 3.0) * 60.0)
        extra_cpu[other][w] += rng.uniform(0.1, 0.25)

    # Queueing model, callees first.
    rate: dict[str, np.ndarray] = {}
    util: dict[str, np.ndarray] = {}
    lat: dict[str, np.ndarray] = {}
    client: dict[str, np.ndarray] = {}
    err: dict[str, np.ndarray] = {}
    for s in ("db", "cache", "auth", "app", "web"):
        fan, cap, own, _mem, callees = SERVICES[s]
        rate[s] = arrival * fan * (1.0 + 0.03 * nrng.standard_normal(n))
        u = np.clip(rate[s] / cap + extra_cpu[s], 0.0, 0.97)
        util[s] = u
        svc_time = (own + extra_lat[s]) / (1.0 - u)
        client[s] = (
            sum((lat[c] * (SERVICES[c][0] / max(fan, 1e-9)) for c in callees), np.zeros(n))
            if callees
            else np.zeros(n)
        )
        lat[s] = svc_time + client[s]
        err[s] = error_pct[s] + sum((err[c] for c in callees), np.zeros(n)) * 0.8

    def noisy(x: np.ndarray, rel: float, q: float = 0.0, bursty: bool = True) -> np.ndarray:
        y = x * (1.0 + rel * nrng.standard_normal(n))
        # Occasional bursts (rates, latencies, CPU; not memory).
        burst = nrng.random(n) < (0.02 if bursty else 0.0)
        y = np.where(burst, y * (1.0 + nrng.uniform(0.3, 1.0, n)), y)
        if q:
            y = np.round(y / q) * q
        return y

    events: list[dict[str, Any]] = []
    series: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    for s in names:
        _fan, _cap, _own, mem, callees = SERVICES[s]
        series[(s, "cpu_utilization")] = (
            np.clip(noisy(util[s] * 100.0, 0.05, 0.1), 0, 100),
            "percent",
        )
        series[(s, "memory_usage")] = (noisy(mem + mem_growth[s], 0.002, 1.0, bursty=False), "MB")
        series[(s, "response_time")] = (noisy(lat[s], 0.08, 0.1), "ms")
        series[(s, "request_rate")] = (noisy(rate[s], 0.03, 0.01), "req/s")
        series[(s, "error_rate")] = (np.clip(noisy(err[s] + 0.1, 0.3, 0.01), 0, 100), "percent")
        if callees:
            series[(s, "client_latency")] = (noisy(client[s], 0.08, 0.1), "ms")
        if s == INGRESS:
            series[(s, "arrival_rate")] = (noisy(arrival, 0.02, 0.01), "req/s")
    tags = {
        s: {"service": s, "calls": ",".join(SERVICES[s][4]), "system": "scenario-shop"}
        for s in names
    }
    for i in range(n):
        ts = _iso(float(t[i]))
        for (s, name), (vals, unit) in series.items():
            events.append(
                {
                    "name": name,
                    "value": round(float(vals[i]), 6),
                    "unit": unit,
                    "timestamp": ts,
                    "source": s,
                    "tags": tags[s],
                }
            )
    alert_t = fault_t + rng.uniform(0.0, min(30.0, step))
    return Scenario(seed, kind, root, fault_t, alert_t, step, events, executions, desc)


# --------------------------------------------------------------------------- in-process run


def feed_of(sc: Scenario, chunk: int = 2000) -> list[list[Any] | Any]:
    """The scenario as decoded telemetry chunks and execution results in event-time order,
    through the wire decoders (a malformed generated event is a bug: it raises)."""
    import orjson

    from twin.core.events import decode_batch, decode_execution

    feed: list[list[Any] | Any] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            points, errors = decode_batch(orjson.dumps({"events": pending}), sc.alert_t)
            if errors:
                raise ValueError(f"scenario produced undecodable events: {errors[0].reason}")
            feed.append(points)
            pending.clear()

    for _t, what, obj in sc.timeline():
        if what == "execution":
            flush()
            feed.append(decode_execution(orjson.dumps(obj)))
        else:
            pending.append(obj)
            if len(pending) >= chunk:
                flush()
    flush()
    return feed


def diagnosis_request(sc: Scenario) -> Any:
    from twin._proto import digital_twin_pb2 as pb

    return pb.DiagnosisRequest(
        diagnosis_id=f"scenario-{sc.seed}",
        anomaly_description=sc.description,
        timestamp=_iso(sc.alert_t),
        context={"system": "scenario-shop"},
    )


async def diagnose_scenario(sc: Scenario) -> tuple[list[str], Any]:
    """A fresh in-process twin fed the scenario through the wire decoders, then Diagnose
    through the RPC mapping (the ``eval rca`` path); returns (ranking, proto response)."""
    from twin.evaluation.replay import replay_and_diagnose

    out = await replay_and_diagnose(feed_of(sc), diagnosis_request(sc))
    return out.ranking, out.response


# --------------------------------------------------------------------------- publisher


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--kind",
        choices=(*FAULT_KINDS, NO_FAULT),
        default=None,
        help="fault kind (default: by seed)",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--batch-subject", default="polaris.telemetry.events.batch")
    p.add_argument("--execution-subject", default="polaris.execution.results")
    p.add_argument(
        "--print", action="store_true", help="print the ground truth and counts, publish nothing"
    )


async def publish(args: argparse.Namespace, sc: Scenario) -> int:
    import nats
    import orjson

    nc = await nats.connect(args.nats_url, max_reconnect_attempts=5)
    sent = 0
    try:
        pending: list[dict[str, Any]] = []
        for _t, what, obj in sc.timeline():
            if what == "execution":
                if pending:
                    await nc.publish(
                        args.batch_subject, orjson.dumps({"events": pending, "count": len(pending)})
                    )
                    sent += len(pending)
                    pending = []
                await nc.publish(args.execution_subject, orjson.dumps(obj))
                continue
            pending.append(obj)
            if len(pending) >= args.batch_size:
                await nc.publish(
                    args.batch_subject, orjson.dumps({"events": pending, "count": len(pending)})
                )
                sent += len(pending)
                pending = []
        if pending:
            await nc.publish(
                args.batch_subject, orjson.dumps({"events": pending, "count": len(pending)})
            )
            sent += len(pending)
        await nc.flush()
    finally:
        await nc.drain()
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twin.tools.scenarios", description=__doc__.splitlines()[0]
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    sc = generate(args.seed, args.kind)
    truth = (
        f"seed={sc.seed} kind={sc.kind} root_cause={sc.root_cause} fault_at={_iso(sc.fault_t)} "
        f"alert_at={_iso(sc.alert_t)} step={sc.step:g}s"
    )
    if args.print:
        print(f"{truth} events={len(sc.events)} executions={len(sc.executions)}")
        return 0
    sent = asyncio.run(publish(args, sc))
    print(
        f"published {sent} events and {len(sc.executions)} execution results to {args.nats_url}; "
        f"{truth}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
