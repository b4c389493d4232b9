"""Three exemplar managed systems on the queue simulator, publishing telemetry and
execution results in the original POLARIS formats and applying actions while they run.

- ``SwimTier``: a SWIM-like web tier. Servers (1..``max_servers``) share one queue;
  a request carries optional content with probability ``dimmer`` (longer service).
  SWIM's metric names; actions ADD_SERVER / REMOVE_SERVER / SCALE_UP / SCALE_DOWN
  (``count``), SET_DIMMER (``value``), and ENABLE_CACHE / DISABLE_CACHE (service times
  ×0.8 while enabled: an action the twin has no structural model for).
- ``SwitchInference``: a SWITCH-like ML inference service. Workers run one of five
  object-detection models (``model_level`` 1..5) that trade latency and CPU against
  accuracy (mAP). Actions SWITCH_MODEL (``level`` or ``model``), SET_RESOLUTION
  (``size`` 640/416/320: faster, less accurate) and SCALE_UP / SCALE_DOWN workers.
  Names: input_rate, processing_rate, workers, model_level, image_processing_time (s),
  cpu_usage (percent), model_accuracy.
- ``K8sService``: a Kubernetes-style microservice scaled by replicas, with CPU, mean
  and p95 latency and an error rate (random failures plus client time-outs).
  Prometheus/OpenTelemetry-style names: http_requests_per_second,
  kube_deployment_status_replicas_ready, k8s.pod.cpu.utilization,
  http.server.request.duration.avg / .p95 (s), http_server_error_ratio. Actions
  SCALE_DEPLOYMENT (``replicas``), SCALE_UP / SCALE_DOWN (``count``) and UPDATE_CONFIG
  (``key=db_pool_size``: service times ×0.85; no structural model).

The hidden parameters (service times, per-level speeds and accuracies, error rates)
are drawn from ``random_situation``-style ranges by the callers; the twin only ever sees
the published telemetry and execution results.
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from twin.tools.exemplars.des import Bins, QueueSim, RateFn, Requests, bin_requests, gamma_service

T0 = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Act:
    """An action as an execution adapter would carry it out."""

    action_type: str
    params: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.action_type}({p})"


@dataclass(frozen=True, slots=True)
class ServiceMix:
    """Service of requests arriving under one configuration."""

    mean_basic: float  # seconds
    mean_optional: float
    p_optional: float
    cs2: float
    error_prob: float = 0.0


@dataclass(slots=True)
class Segment:
    """What one run produced: bins, events in the wire formats, and the truth per bin."""

    bins: Bins
    requests: Requests
    telemetry: list[dict[str, Any]]
    executions: list[dict[str, Any]]
    truth: dict[str, np.ndarray]  # canonical units per bin: latency_ms, p95_ms, utilization, ...


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def constant(rate: float) -> RateFn:
    return lambda t: np.full(np.shape(t), float(rate))


class Exemplar:
    """A managed system: configuration + hidden parameters + the queue simulator."""

    source = "exemplar"
    interval = 10.0
    startup_delay = 0.0
    timeout = math.inf

    def __init__(self, seed: int, config: dict[str, float], t0: float = T0) -> None:
        self.seed = seed
        self.config = dict(config)
        self.sim = QueueSim(int(self.units(self.config)), seed, t0, self.startup_delay)
        self.noise = np.random.default_rng(seed + 7_919)

    # -- per system ---------------------------------------------------------------
    def units(self, cfg: dict[str, float]) -> float:
        raise NotImplementedError

    def mix(self, cfg: dict[str, float]) -> ServiceMix:
        raise NotImplementedError

    def apply(self, cfg: dict[str, float], act: Act) -> tuple[dict[str, float], str]:
        """The configuration after ``act`` and a message; raises ValueError if invalid."""
        raise NotImplementedError

    def metrics(self, cfg: dict[str, float], b: Bins, i: int) -> list[tuple[str, float, str]]:
        raise NotImplementedError

    def quality(self, cfg: dict[str, float]) -> float:
        """The quality the system delivers (dimmer share, model accuracy)."""
        return 1.0

    # -- shared ---------------------------------------------------------------------
    @property
    def t(self) -> float:
        return self.sim.t

    def fork(self) -> Exemplar:
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.config = dict(self.config)
        other.sim = self.sim.fork()
        other.noise = copy.deepcopy(self.noise)
        return other

    def run(
        self, duration: float, rate: RateFn, actions: Sequence[tuple[float, Act]] = ()
    ) -> Segment:
        """Runs ``duration`` seconds; ``actions`` are (offset seconds, action) in order."""
        t0 = self.sim.t
        until = t0 + duration
        timeline: list[tuple[float, dict[str, float]]] = [(-math.inf, dict(self.config))]
        changes = []
        executions = []
        cfg = dict(self.config)
        for off, act in sorted(actions, key=lambda a: a[0]):
            at = t0 + off
            before = self.units(cfg)
            try:
                cfg, message = self.apply(cfg, act)
                ok = True
            except ValueError as exc:
                message, ok = str(exc), False
            if ok:
                timeline.append((at, dict(cfg)))
                if self.units(cfg) != before:
                    n = int(self.units(cfg))
                    changes.append((at, lambda sim, when, n=n: sim.resize(n, when)))
            executions.append(self.execution(act, at, ok, message))
        times = np.array([x[0] for x in timeline])
        mixes = [self.mix(c) for _, c in timeline]

        def service(
            arr: np.ndarray, u_cls: np.ndarray, u_svc: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            seg = np.searchsorted(times, arr, side="right") - 1
            mean = np.empty(arr.shape[0])
            opt = np.zeros(arr.shape[0], dtype=bool)
            cs2 = np.empty(arr.shape[0])
            for k, m in enumerate(mixes):
                sel = seg == k
                if not sel.any():
                    continue
                o = u_cls[sel] < m.p_optional
                opt[sel] = o
                mean[sel] = np.where(o, m.mean_optional, m.mean_basic)
                cs2[sel] = m.cs2
            out = np.empty(arr.shape[0])
            for v in np.unique(cs2):
                sel = cs2 == v
                out[sel] = gamma_service(mean[sel], float(v), u_svc[sel])
            return out, opt

        def error_prob(arr: np.ndarray) -> np.ndarray:
            seg = np.searchsorted(times, arr, side="right") - 1
            return np.array([m.error_prob for m in mixes])[seg]

        req = self.sim.run(until, rate, service, changes, error_prob, self.timeout)
        self.config = cfg
        bins = bin_requests(req, t0, until, self.interval, self.sim.units_at)
        cfg_at_bin = [
            timeline[int(np.searchsorted(times, te - 1e-3, side="right") - 1)][1]
            for te in bins.t_end
        ]
        telemetry = []
        for i, te in enumerate(bins.t_end):
            ts = iso(float(te))
            for name, value, unit in self.metrics(cfg_at_bin[i], bins, i):
                if value is None or not math.isfinite(value):
                    continue
                telemetry.append(
                    {
                        "name": name,
                        "value": float(value),
                        "unit": unit,
                        "timestamp": ts,
                        "source": self.source,
                        "tags": {"exemplar": self.source},
                    }
                )
        with np.errstate(invalid="ignore", divide="ignore"):
            truth = {
                "latency_ms": 1000.0 * bins.mean_rt,
                "p95_ms": 1000.0 * bins.rt_p95,
                "utilization": bins.utilization,
                "throughput": bins.completed / bins.interval,
                "arrival_rate": bins.arrivals / bins.interval,
                "error_rate": np.where(
                    bins.completed > 0, bins.errors / np.maximum(bins.completed, 1), 0.0
                ),
                "units": bins.units,
                "quality": np.array([self.quality(c) for c in cfg_at_bin]),
            }
        return Segment(bins, req, telemetry, executions, truth)

    def execution(self, act: Act, at: float, ok: bool, message: str) -> dict[str, Any]:
        """An execution result in the original format (params in ``metadata.params``)."""
        dur = 1.0
        return {
            "action_id": str(uuid.UUID(bytes=self.noise.bytes(16), version=4)),
            "action_type": act.action_type,
            "status": "success" if ok else "failed",
            "success": ok,
            "message": message,
            "started_at": iso(at - dur),
            "finished_at": iso(at),
            "duration_sec": dur,
            "output": {"target": self.source},
            "error": None if ok else message,
            "retry_count": 0,
            "metadata": {"target": self.source, "params": dict(act.params)},
            "target": self.source,
        }


def _count(act: Act, default: int = 1) -> int:
    v = act.params.get("count", act.params.get("delta", act.params.get("value", default)))
    n = float(v)
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"{act.action_type}: bad count {v!r}")
    return int(round(n))


def _rate(b: Bins, i: int, x: np.ndarray) -> float:
    return float(x[i] / b.interval)


def _ms(b: Bins, i: int) -> float | None:
    return 1000.0 * float(b.rt_sum[i] / b.completed[i]) if b.completed[i] else None


class SwimTier(Exemplar):
    source = "swim"

    def __init__(
        self,
        seed: int,
        servers: int = 3,
        dimmer: float = 1.0,
        s_basic: float = 0.05,
        s_opt: float = 0.09,
        max_servers: int = 10,
        t0: float = T0,
    ) -> None:
        self.s_basic, self.s_opt, self.max_servers = s_basic, s_opt, max_servers
        super().__init__(seed, {"servers": servers, "dimmer": dimmer, "cache": 0.0}, t0)

    def units(self, cfg: dict[str, float]) -> float:
        return cfg["servers"]

    def mix(self, cfg: dict[str, float]) -> ServiceMix:
        f = 0.8 if cfg["cache"] else 1.0
        return ServiceMix(self.s_basic * f, self.s_opt * f, cfg["dimmer"], 1.0)

    def apply(self, cfg: dict[str, float], act: Act) -> tuple[dict[str, float], str]:
        k = act.action_type.upper()
        new = dict(cfg)
        if k in ("ADD_SERVER", "SCALE_UP"):
            new["servers"] = min(self.max_servers, cfg["servers"] + _count(act))
        elif k in ("REMOVE_SERVER", "SCALE_DOWN"):
            new["servers"] = max(1, cfg["servers"] - _count(act))
        elif k == "SET_DIMMER":
            new["dimmer"] = min(1.0, max(0.0, float(act.params["value"])))
        elif k == "ENABLE_CACHE":
            new["cache"] = 1.0
        elif k == "DISABLE_CACHE":
            new["cache"] = 0.0
        else:
            raise ValueError(f"{k} is not supported by swim")
        return new, f"{act.describe()}: servers {int(new['servers'])}, dimmer {new['dimmer']:g}"

    def quality(self, cfg: dict[str, float]) -> float:
        return cfg["dimmer"]

    def metrics(self, cfg: dict[str, float], b: Bins, i: int) -> list[tuple[str, float, str]]:
        c = int(cfg["servers"])
        n_opt, n_all = b.cls_completed[i], b.completed[i]
        n_basic = n_all - n_opt
        util = float(b.utilization[i])
        out = [
            ("dimmer", cfg["dimmer"], "ratio"),
            ("active_servers", float(c), "count"),
            ("servers", float(c), "count"),
            ("max_servers", float(self.max_servers), "count"),
            ("arrival_rate", _rate(b, i, b.arrivals), "req/s"),
            ("basic_throughput", n_basic / b.interval, "req/s"),
            ("optional_throughput", n_opt / b.interval, "req/s"),
            ("server_utilization", util, "ratio"),
        ]
        if n_basic:
            out.append(
                (
                    "basic_response_time",
                    1000.0 * float(b.rt_sum[i] - b.cls_rt_sum[i]) / n_basic,
                    "ms",
                )
            )
        if n_opt:
            out.append(("optional_response_time", 1000.0 * float(b.cls_rt_sum[i]) / n_opt, "ms"))
        ms = _ms(b, i)
        if ms is not None:
            out.append(("average_response_time", ms, "ms"))
        out += [(f"utilization_server_{j + 1}", util, "ratio") for j in range(min(c, 10))]
        return out


# name, seconds per image on one worker (at 640 px, relative speed 1), accuracy (mAP)
SWITCH_LEVELS: tuple[tuple[str, float, float], ...] = (
    ("yolov5n", 0.045, 0.280),
    ("yolov5s", 0.095, 0.374),
    ("yolov5m", 0.210, 0.454),
    ("yolov5l", 0.400, 0.490),
    ("yolov5x", 0.700, 0.507),
)
# image size: (service-time factor, accuracy change)
SWITCH_RESOLUTIONS = {640: (1.0, 0.0), 416: (0.55, -0.06), 320: (0.35, -0.11)}


class SwitchInference(Exemplar):
    source = "switch"

    def __init__(
        self,
        seed: int,
        workers: int = 4,
        level: int = 2,
        speed: float = 1.0,
        max_workers: int = 8,
        t0: float = T0,
    ) -> None:
        self.speed, self.max_workers = speed, max_workers
        super().__init__(seed, {"workers": workers, "level": level, "size": 640.0}, t0)

    def units(self, cfg: dict[str, float]) -> float:
        return cfg["workers"]

    def mix(self, cfg: dict[str, float]) -> ServiceMix:
        s = (
            SWITCH_LEVELS[int(cfg["level"]) - 1][1]
            * SWITCH_RESOLUTIONS[int(cfg["size"])][0]
            / self.speed
        )
        return ServiceMix(s, s, 0.0, 0.09)

    def quality(self, cfg: dict[str, float]) -> float:
        return SWITCH_LEVELS[int(cfg["level"]) - 1][2] + SWITCH_RESOLUTIONS[int(cfg["size"])][1]

    def apply(self, cfg: dict[str, float], act: Act) -> tuple[dict[str, float], str]:
        k = act.action_type.upper()
        new = dict(cfg)
        if k in ("SWITCH_MODEL", "SET_MODEL"):
            if "level" in act.params:
                level = int(float(act.params["level"]))
            else:
                names = [n for n, _, _ in SWITCH_LEVELS]
                if act.params.get("model") not in names:
                    raise ValueError(f"unknown model {act.params.get('model')!r}")
                level = names.index(act.params["model"]) + 1
            if not 1 <= level <= len(SWITCH_LEVELS):
                raise ValueError(f"model level {level} out of range")
            new["level"] = float(level)
        elif k == "SET_RESOLUTION":
            size = int(float(act.params.get("size", 640)))
            if size not in SWITCH_RESOLUTIONS:
                raise ValueError(f"unsupported image size {size}")
            new["size"] = float(size)
        elif k in ("SCALE_UP", "ADD_WORKER"):
            new["workers"] = min(self.max_workers, cfg["workers"] + _count(act))
        elif k in ("SCALE_DOWN", "REMOVE_WORKER"):
            new["workers"] = max(1, cfg["workers"] - _count(act))
        else:
            raise ValueError(f"{k} is not supported by switch")
        return (
            new,
            f"{act.describe()}: {SWITCH_LEVELS[int(new['level']) - 1][0]} at {int(new['size'])} "
            f"px on {int(new['workers'])} workers",
        )

    def metrics(self, cfg: dict[str, float], b: Bins, i: int) -> list[tuple[str, float, str]]:
        out = [
            ("input_rate", _rate(b, i, b.arrivals), "req/s"),
            ("processing_rate", _rate(b, i, b.completed), "req/s"),
            ("workers", cfg["workers"], "count"),
            ("max_workers", float(self.max_workers), "count"),
            ("model_level", cfg["level"], "level"),
            ("cpu_usage", 100.0 * float(b.utilization[i]), "percent"),
            ("model_accuracy", self.quality(cfg) + float(self.noise.normal(0.0, 0.003)), "ratio"),
        ]
        ms = _ms(b, i)
        if ms is not None:
            out.append(("image_processing_time", ms / 1000.0, "s"))
        return out


class K8sService(Exemplar):
    source = "checkout"
    startup_delay = 15.0
    timeout = 2.0

    def __init__(
        self,
        seed: int,
        replicas: int = 4,
        service: float = 0.06,
        cs2: float = 0.5,
        error_prob: float = 0.005,
        max_replicas: int = 20,
        t0: float = T0,
    ) -> None:
        self.service, self.cs2, self.error_prob, self.max_replicas = (
            service,
            cs2,
            error_prob,
            max_replicas,
        )
        super().__init__(seed, {"replicas": replicas, "pool": 10.0}, t0)

    def units(self, cfg: dict[str, float]) -> float:
        return cfg["replicas"]

    def mix(self, cfg: dict[str, float]) -> ServiceMix:
        s = self.service * (0.85 if cfg["pool"] >= 50 else 1.0)
        return ServiceMix(s, s, 0.0, self.cs2, self.error_prob)

    def apply(self, cfg: dict[str, float], act: Act) -> tuple[dict[str, float], str]:
        k = act.action_type.upper()
        new = dict(cfg)
        if k == "SCALE_DEPLOYMENT":
            n = int(float(act.params.get("replicas", "nan")))
            if n < 1:
                raise ValueError("SCALE_DEPLOYMENT needs replicas >= 1")
            new["replicas"] = min(self.max_replicas, n)
        elif k in ("SCALE_UP", "ADD_REPLICA"):
            new["replicas"] = min(self.max_replicas, cfg["replicas"] + _count(act))
        elif k in ("SCALE_DOWN", "REMOVE_REPLICA"):
            new["replicas"] = max(1, cfg["replicas"] - _count(act))
        elif k == "UPDATE_CONFIG":
            if act.params.get("key") == "db_pool_size":
                new["pool"] = float(act.params.get("value", cfg["pool"]))
        else:
            raise ValueError(f"{k} is not supported by checkout")
        return new, f"{act.describe()}: {int(new['replicas'])} replicas"

    def metrics(self, cfg: dict[str, float], b: Bins, i: int) -> list[tuple[str, float, str]]:
        r = cfg["replicas"]
        out = [
            ("http_requests_per_second", _rate(b, i, b.arrivals), "1/s"),
            ("kube_deployment_spec_replicas", r, "count"),
            ("kube_deployment_status_replicas_ready", r, "count"),
            ("kube_horizontalpodautoscaler_spec_max_replicas", float(self.max_replicas), "count"),
            ("k8s.pod.cpu.utilization", float(b.utilization[i]), "1"),
            (
                "http_server_error_ratio",
                float(b.errors[i] / b.completed[i]) if b.completed[i] else 0.0,
                "1",
            ),
        ]
        ms = _ms(b, i)
        if ms is not None:
            out.append(("http.server.request.duration.avg", ms / 1000.0, "s"))
        if math.isfinite(b.rt_p95[i]):
            out.append(("http.server.request.duration.p95", float(b.rt_p95[i]), "s"))
        return out


SYSTEMS: dict[str, type[Exemplar]] = {
    "swim": SwimTier,
    "switch": SwitchInference,
    "checkout": K8sService,
}


__all__ = [
    "SWITCH_LEVELS",
    "SYSTEMS",
    "Act",
    "Exemplar",
    "K8sService",
    "Segment",
    "ServiceMix",
    "SwimTier",
    "SwitchInference",
    "constant",
    "iso",
]
