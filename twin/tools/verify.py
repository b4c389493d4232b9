"""``polaris-twin verify``: an end-to-end integration check (the seed's
``verify_digital_twin_integration.py`` / ``test_digital_twin_integration.py``).

Without ``--target`` it starts its own twin in process (embedded nats-server, free
gRPC port, the chosen ``--world-model``); with ``--target``/``--nats-url`` it checks
a running one. It publishes one message on every subject (plus a malformed one),
then exercises every RPC and prints a PASS/FAIL line per check. Exit 0 = all passed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import nats
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.msg import Msg

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


async def _checks(target: str, nats_url: str, out: Callable[[str], None]) -> bool:
    source = f"verify_{uuid.uuid4().hex[:8]}"
    ok = True
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.DigitalTwinStub(ch)
        nc = await nats.connect(nats_url)
        errors: list[bytes] = []

        async def on_error(msg: Msg) -> None:
            errors.append(msg.data)

        await nc.subscribe("polaris.digitaltwin.errors", cb=on_error)
        now = time.time()
        await nc.publish(
            "polaris.telemetry.events.stream",
            orjson.dumps(
                {
                    "name": "cpu_usage",
                    "value": 42.0,
                    "unit": "percent",
                    "source": source,
                    "timestamp": now,
                }
            ),
        )
        await nc.publish(
            "polaris.telemetry.events.batch",
            orjson.dumps(
                {
                    "batch_id": "v",
                    "count": 2,
                    "events": [
                        {
                            "name": "response_time",
                            "value": 120.0,
                            "unit": "ms",
                            "source": source,
                            "timestamp": now,
                        },
                        {"name": "arrival_rate", "value": 30.0, "source": source, "timestamp": now},
                    ],
                }
            ),
        )
        await nc.publish(
            "polaris.execution.results",
            orjson.dumps(
                {
                    "action_id": str(uuid.uuid4()),
                    "action_type": "ADD_SERVER",
                    "status": "success",
                    "success": True,
                    "message": "verify",
                    "target": source,
                }
            ),
        )
        await nc.publish(
            "polaris.digitaltwin.calibrate",
            orjson.dumps(
                {
                    "prediction_id": "verify",
                    "predicted_outcome": {"value": 1.0},
                    "actual_outcome": {"value": 1.0},
                }
            ),
        )
        await nc.publish("polaris.telemetry.events.stream", b"{malformed")
        await nc.flush()

        async def check(name: str, fn: Callable[[], Awaitable[bool | tuple[bool, str]]]) -> None:
            """Runs one check; a failure prints why (the twin's explanation when it gave one)."""
            nonlocal ok
            try:
                got = await fn()
                passed, why = got if isinstance(got, tuple) else (got, "")
                detail = f"\n      why: {why}" if (why and not passed) else ""
            except Exception as exc:  # noqa: BLE001 - reported as a failed check
                passed, detail = False, f"\n      why: {exc.__class__.__name__}: {exc}"
            ok &= passed
            out(f"{'PASS' if passed else 'FAIL'}  {name}{detail}")

        async def health() -> bool:
            r = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            return r.status == health_pb2.HealthCheckResponse.SERVING

        async def telemetry_visible() -> bool:
            for _ in range(100):
                r = await stub.Query(
                    pb.QueryRequest(query_type="current_state", parameters={"system": source}),
                    timeout=10,
                )
                if r.success and len(orjson.loads(r.result)["systems"].get(source, {})) == 3:
                    return True
                await asyncio.sleep(0.1)
            return False

        async def dead_letter() -> bool:
            for _ in range(50):
                if any(b"malformed" in e for e in errors):
                    return True
                await asyncio.sleep(0.1)
            return False

        async def simulate() -> tuple[bool, str]:
            # The seed README's example: ADD_SERVER count=2 under a traffic spike.
            act = pb.ControlAction(action_type="ADD_SERVER", target=source, params={"count": "2"})
            req = pb.SimulationRequest(
                simulation_type="what_if",
                actions=[act],
                horizon_minutes=30,
                parameters={"scenario": "traffic_spike"},
            )
            r = await stub.Simulate(req, timeout=30)
            ok = (
                r.success
                and len(r.future_states) > 0
                and all(len(s.metrics) > 0 for s in r.future_states)
            )
            return ok, r.explanation or "no future states"

        async def compare() -> tuple[bool, str]:
            plans = [
                pb.CandidatePlan(
                    plan_id="add",
                    actions=[
                        pb.ControlAction(
                            action_type="ADD_SERVER", target=source, params={"count": "2"}
                        )
                    ],
                ),
                pb.CandidatePlan(
                    plan_id="remove",
                    actions=[pb.ControlAction(action_type="REMOVE_SERVER", target=source)],
                ),
            ]
            r = await stub.Simulate(
                pb.SimulationRequest(
                    simulation_type="compare",
                    plans=plans,
                    horizon_minutes=30,
                    parameters={"system": source},
                ),
                timeout=30,
            )
            ids = sorted(o.plan_id for o in r.plan_outcomes)
            ranks = sorted(o.rank for o in r.plan_outcomes)
            ok = r.success and ids == ["add", "do_nothing", "remove"] and ranks == [1, 2, 3]
            return ok, r.explanation or f"plan outcomes: {ids}"

        async def diagnose() -> bool:
            r = await stub.Diagnose(
                pb.DiagnosisRequest(
                    anomaly_description="High response times detected",
                    context={"system": source, "metric": "response_time"},
                ),
                timeout=20,
            )
            return bool(r.diagnosis_id) and (r.success or bool(r.explanation))

        async def metrics() -> bool:
            r = await stub.Manage(pb.ManagementRequest(operation="get_metrics"), timeout=5)
            return (
                r.success
                and float(r.metrics["events_applied_total"]) >= 5
                and float(r.metrics["dead_lettered_total"]) >= 1
            )

        async def invalid() -> bool:
            try:
                await stub.Query(pb.QueryRequest(query_type="nonsense"), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            return False

        await check("grpc.health.v1 SERVING", health)
        await check(
            "telemetry (stream + batch) visible through Query current_state", telemetry_visible
        )
        await check("malformed message published on polaris.digitaltwin.errors", dead_letter)
        await check(
            "Simulate what_if ADD_SERVER count=2 under traffic_spike returns future states",
            simulate,
        )
        await check("Simulate compare ranks 2 plans and do_nothing", compare)
        await check("Diagnose answers", diagnose)
        await check("Manage get_metrics counts applied and dead-lettered events", metrics)
        await check("malformed request → INVALID_ARGUMENT", invalid)
        await nc.drain()
    return ok


async def run(args: argparse.Namespace) -> int:
    app = None
    target, nats_url = args.target, args.nats_url
    if not target:
        from twin.app import TwinApp
        from twin.core.config import load_config

        cfg = load_config(
            overrides={
                "digital_twin": {
                    "grpc": {"host": "127.0.0.1", "port": 0},
                    "world_model": {"implementation": args.world_model},
                    "nats": {"batch_timeout_sec": 0.05},
                }
            },
        )
        app = TwinApp(cfg)
        await app.start()
        target, nats_url = f"127.0.0.1:{app.grpc_port}", app.nats_url
        print(f"started an in-process twin: model={args.world_model} grpc={target} nats={nats_url}")
    try:
        ok = await _checks(target, nats_url or "nats://127.0.0.1:4222", print)
    finally:
        if app is not None:
            await app.stop()
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="HOST:PORT of a running twin (default: start one in process)")
    p.add_argument("--nats-url", help="NATS of the running twin (with --target)")
    p.add_argument("--world-model", default="mock", help="model of the in-process twin")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="polaris-twin verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(p)
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
