#!/usr/bin/env python3
"""A Python client for a running twin: the seed README's examples, runnable.

    polaris-twin --demo-load 200 &          # a twin with SWIM-like telemetry
    python examples/digital_twin_client.py --target localhost:50051
"""

from __future__ import annotations

import argparse
import json

import grpc

from twin.proto import digital_twin_pb2, digital_twin_pb2_grpc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", default="localhost:50051")
    args = p.parse_args()
    channel = grpc.insecure_channel(args.target)
    stub = digital_twin_pb2_grpc.DigitalTwinStub(channel)

    # Query current state (the seed's example). Deadlines as the original clients set them.
    request = digital_twin_pb2.QueryRequest(
        query_type="current_state",
        query_content="What is the current CPU usage?",
        parameters={"system": "web_cluster"},
    )
    response = stub.Query(request, timeout=10)
    print(f"Result: {json.dumps(json.loads(response.result or 'null'), indent=2)[:600]}")
    print(f"Confidence: {response.confidence}")

    # What is it 10 minutes ago? (historical: value at a time, or a range with downsampling)
    hist = stub.Query(
        digital_twin_pb2.QueryRequest(
            query_type="historical",
            parameters={
                "system": "swim",
                "metric": "arrival_rate",
                "window_minutes": "10",
                "max_points": "5",
            },
        ),
        timeout=10,
    )
    print(f"Historical: success={hist.success} {hist.result[:300]}")

    # What-if: add 2 servers to the SWIM web tier over 60 minutes.
    action = digital_twin_pb2.ControlAction(
        action_type="ADD_SERVER", target="swim", params={"count": "2"}, priority="normal"
    )
    sim = stub.Simulate(
        digital_twin_pb2.SimulationRequest(
            simulation_type="what_if",
            actions=[action],
            horizon_minutes=60,
            parameters={"scenario": "traffic_spike"},
        ),
        timeout=30,
    )
    print(
        f"Future states: {len(sim.future_states)}  confidence: {sim.confidence:.2f}  "
        f"{sim.explanation[:200]}"
    )
    if sim.future_states:
        last = sim.future_states[-1]
        print(
            f"  at {last.timestamp}: "
            + ", ".join(f"{k}={v:.3g}" for k, v in sorted(last.metrics.items())[:6])
        )

    # Plan comparison: three plans and "do nothing", ranked in one call under a traffic spike.
    def act(kind: str, **params: str) -> digital_twin_pb2.ControlAction:
        return digital_twin_pb2.ControlAction(action_type=kind, target="swim", params=params)

    plans = [
        digital_twin_pb2.CandidatePlan(plan_id="add-2", actions=[act("ADD_SERVER", count="2")]),
        digital_twin_pb2.CandidatePlan(
            plan_id="dimmer-0.3", actions=[act("SET_DIMMER", value="0.3")]
        ),
        digital_twin_pb2.CandidatePlan(
            plan_id="add-1+dimmer-0.6",
            actions=[act("ADD_SERVER", count="1"), act("SET_DIMMER", value="0.6")],
        ),
    ]
    cmp = stub.Simulate(
        digital_twin_pb2.SimulationRequest(
            simulation_type="compare",
            plans=plans,
            horizon_minutes=60,
            parameters={
                "system": "swim",
                "scenario": "traffic_spike",
                "spike_factor": "1.8",
                "slo.latency_ms": "500",
            },
        ),
        timeout=30,
    )
    print(f"Compare: success={cmp.success} best={cmp.metadata.get('best_plan')}")
    for o in cmp.plan_outcomes:
        print(
            f"  #{o.rank} {o.plan_id}: utility {o.utility:.2f} {o.impact_estimates.cost_currency}, "
            f"SLO breach {o.slo_breach_probability:.0%}, confidence {o.confidence:.2f}"
        )

    # Root-cause analysis.
    diag = stub.Diagnose(
        digital_twin_pb2.DiagnosisRequest(
            anomaly_description="High response times detected",
            context={"metric": "response_time", "value": "2500ms", "threshold": "500ms"},
        ),
        timeout=20,
    )
    for h in diag.hypotheses[:3]:
        print(f"Hypothesis #{h.rank}: {h.hypothesis} (p={h.probability:.2f})")

    # Health.
    health = stub.Manage(digital_twin_pb2.ManagementRequest(operation="health_check"), timeout=5)
    print(f"Status: {health.health_status.status}  Issues: {list(health.health_status.issues)}")


if __name__ == "__main__":
    main()
