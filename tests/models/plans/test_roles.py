"""Metric roles detected from names and units, and overridden per system."""

from __future__ import annotations

import pytest

from twin.core.events import Point, normalise_name
from twin.core.state import TwinState
from twin.models.plans.roles import RoleCache, detect, system_settings, validate_systems_setting


def _detect(system: str, items: list[tuple[str, str, float]], overrides: dict | None = None):
    return detect(system, [(normalise_name(n), u, v) for n, u, v in items], overrides)


SWIM = [
    ("dimmer", "ratio", 0.5),
    ("active_servers", "count", 3),
    ("servers", "count", 3),
    ("max_servers", "count", 10),
    ("arrival_rate", "req/s", 40),
    ("basic_throughput", "req/s", 20),
    ("optional_throughput", "req/s", 20),
    ("basic_response_time", "ms", 50),
    ("optional_response_time", "ms", 80),
    ("average_response_time", "ms", 60),
    ("server_utilization", "ratio", 0.6),
    ("utilization_server_1", "ratio", 0.6),
    ("utilization_server_2", "ratio", 0.6),
]


def test_swim_names() -> None:
    rm = _detect("swim", SWIM)
    assert rm.queue_ready
    assert {r: b.metric for r, b in rm.bindings.items()} == {
        "load": "arrival.rate",
        "capacity": "active.servers",
        "max_capacity": "max.servers",
        "utilization": "server.utilization",
        "latency": "average.response.time",
        "knob": "dimmer",
        "latency_basic": "basic.response.time",
        "latency_optional": "optional.response.time",
        "throughput_basic": "basic.throughput",
        "throughput_optional": "optional.throughput",
    }
    assert rm.per_unit_utilization == ("utilization.server.1", "utilization.server.2")


def test_switch_names_and_units() -> None:
    rm = _detect(
        "switch",
        [
            ("input_rate", "req/s", 10),
            ("workers", "count", 4),
            ("model_level", "level", 3),
            ("image_processing_time", "s", 0.3),
            ("cpu_usage", "percent", 60),
            ("model_accuracy", "ratio", 0.45),
        ],
    )
    assert rm.queue_ready
    assert (rm.metric("load"), rm.metric("capacity"), rm.metric("knob"), rm.metric("quality")) == (
        "input.rate",
        "workers",
        "model.level",
        "model.accuracy",
    )
    assert rm.get("latency").scale == 1000.0  # seconds -> ms
    assert rm.get("utilization").scale == 0.01  # percent -> ratio


def test_kubernetes_and_opentelemetry_names() -> None:
    rm = _detect(
        "checkout",
        [
            ("http_requests_per_second", "1/s", 100),
            ("kube_deployment_status_replicas_ready", "count", 4),
            ("kube_deployment_spec_replicas", "count", 4),
            ("kube_horizontalpodautoscaler_spec_max_replicas", "count", 20),
            ("k8s.pod.cpu.utilization", "1", 0.6),
            ("http.server.request.duration.avg", "s", 0.1),
            ("http.server.request.duration.p95", "s", 0.3),
            ("http.server.request.duration.p99", "s", 0.5),
            ("http_server_error_ratio", "1", 0.01),
            ("memory_usage", "bytes", 1e9),
        ],
    )
    assert rm.queue_ready
    assert rm.metric("capacity") == "kube.deployment.status.replicas.ready"  # ready beats desired
    assert rm.metric("max_capacity") == "kube.horizontalpodautoscaler.spec.max.replicas"
    tail = rm.get("latency_tail")
    assert tail.metric == "http.server.request.duration.p95" and tail.quantile == pytest.approx(
        0.95
    )
    assert rm.metric("latency") == "http.server.request.duration.avg"
    assert rm.metric("error_rate") == "http.server.error.ratio"
    assert "memory.usage" not in rm.metric_role()


def test_percent_without_unit_is_read_by_magnitude_and_missing_capacity_is_reported() -> None:
    rm = _detect(
        "web",
        [
            ("cpu_usage", "unknown", 42.0),
            ("response_time", "ms", 120),
            ("request_rate", "req/s", 30),
        ],
    )
    assert rm.get("utilization").scale == 0.01
    assert not rm.queue_ready and rm.missing_for_queue() == [
        "capacity (servers/replicas/instances)"
    ]


def test_settings_override_and_disable_roles() -> None:
    rm = _detect(
        "odd",
        [
            ("hits", "1/s", 10),
            ("boxes", "count", 2),
            ("rt_mean", "s", 0.2),
            ("dimmer", "ratio", 1.0),
        ],
        {
            "load": "hits",
            "capacity": {"metric": "boxes"},
            "latency": {"metric": "rt_mean", "unit": "s"},
            "knob": None,
            "bogus": "x",
        },
    )
    assert rm.queue_ready and rm.metric("load") == "hits" and rm.get("latency").scale == 1000.0
    assert rm.get("knob") is None  # disabled although "dimmer" would match
    assert any("unknown role 'bogus'" in n for n in rm.notes)


def test_system_settings_exact_then_pattern_and_validation() -> None:
    settings = {
        "systems": {
            "checkout": {"slo": {"latency_ms": 1}},
            "checkout-*": {"slo": {"latency_ms": 2}},
        }
    }
    assert system_settings(settings, "checkout")["slo"]["latency_ms"] == 1
    assert system_settings(settings, "checkout-eu")["slo"]["latency_ms"] == 2
    assert system_settings(settings, "other") == {}
    assert validate_systems_setting({"systems": {"a": {"roles": {"nope": "x"}}}})
    assert validate_systems_setting({"systems": []})
    assert validate_systems_setting(settings) == []


def test_role_cache_follows_new_series() -> None:
    st = TwinState()
    st.apply_points(
        [
            Point("s", "request.rate", 1.0, 10.0, "req/s", None),
            Point("s", "response.time", 1.0, 50.0, "ms", None),
        ]
    )
    cache = RoleCache({})
    first = cache.roles(st.store, "s")
    assert not first.queue_ready
    st.apply_points([Point("s", "replicas", 2.0, 3.0, "count", None)])
    assert cache.roles(st.store, "s").queue_ready
