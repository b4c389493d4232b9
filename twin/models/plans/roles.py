"""Metric roles: which series of a system is its load, its capacity, its latency, ...

The what-if machinery never names a metric. It asks a system's ``RoleMap`` for the
series that plays a role, in the role's canonical unit:

=================  ==============================================  ===============
role               examples (normalised names)                     canonical unit
=================  ==============================================  ===============
``load``           arrival.rate, request.rate, input.rate,          req/s
                   http.requests.per.second, http.server.request.rate
``throughput``     throughput, processing.rate (or basic +          req/s
                   optional throughput, summed)
``capacity``       active.servers, servers, replicas,              units
                   kube.deployment.status.replicas.ready, workers
``max_capacity``   max.servers, max.replicas, hpa.max.replicas      units
``utilization``    server.utilization, cpu.utilization,            ratio 0..1
                   k8s.pod.cpu.utilization, cpu.usage (percent)
``latency``        average.response.time, response.time,           ms
                   http.server.request.duration.avg, latency
``latency_tail``   latency.p95, http.request.duration.seconds.p95   ms (``quantile``)
``error_rate``     error.rate, http.server.error.ratio              ratio 0..1
``knob``           dimmer, model.level, quality.level              as published
``quality``        accuracy, model.accuracy, detection.confidence   as published
``cost``           cost.per.hour, cost                             as published
=================  ==============================================  ===============

SWIM's two content classes are extra roles (``latency_basic``, ``latency_optional``,
``throughput_basic``, ``throughput_optional``) and its per-server utilisations a prefix.

Detection reads names (lower case, ``.``-separated, as ingestion normalises them) and
units (``ms``, ``s``, ``us``; ``percent``/``%``), and for a ratio published without a
unit the magnitude of its last value (> 1.5 is read as percent). The first matching
rule of a role wins, in the order listed in ``RULES``. ``world_model.settings.systems``
overrides per system (an exact name or a shell pattern such as ``checkout-*``)::

    systems:
      checkout:
        roles:
          load: http.requests.per.second
          latency: {metric: rt.mean, unit: s}
          knob: null            # not a knob, whatever the name suggests
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twin.core.errors import InvalidRequest

ROLES = (
    "load",
    "throughput",
    "capacity",
    "max_capacity",
    "utilization",
    "latency",
    "latency_tail",
    "error_rate",
    "knob",
    "quality",
    "cost",
    "latency_basic",
    "latency_optional",
    "throughput_basic",
    "throughput_optional",
)
LATENCY_ROLES = frozenset({"latency", "latency_tail", "latency_basic", "latency_optional"})
RATIO_ROLES = frozenset({"utilization", "error_rate"})
MAX_CACHED_SYSTEMS = 2048
PER_UNIT_UTILIZATION = re.compile(
    r"^(?:utilization\.server|server\.utilization|cpu\.utilization\.server)\.\d+$"
)

_EXCLUDE_TAIL = r"(?!.*(?:^|\.)(?:p\d{2,3}|\d{2}th|percentile|quantile|max|min)(?:\.|$))"
_NOT_MEM = r"(?!.*(?:memory|mem|disk|heap|network|net\.))"

# (role, regex over the normalised name). First match of a role wins; earlier roles are
# tried first, and a metric takes at most one role.
RULES: tuple[tuple[str, str], ...] = (
    ("latency_basic", r"^basic\.response\.time$"),
    ("latency_optional", r"^optional\.response\.time$"),
    ("throughput_basic", r"^basic\.throughput$"),
    ("throughput_optional", r"^optional\.throughput$"),
    ("max_capacity", r"^max\.(servers|replicas|instances|workers|pods)$"),
    ("max_capacity", r"(^|\.)(hpa|horizontalpodautoscaler)\.(spec\.)?max\.replicas$"),
    ("max_capacity", r"(^|\.)max\.replicas$"),
    ("capacity", r"^active\.servers$"),
    ("capacity", r"(^|\.)(replicas\.(ready|available)|(ready|available)\.replicas)$"),
    ("capacity", r"(^|\.)k8s\.deployment\.available$"),
    ("capacity", r"^servers$"),
    ("capacity", r"^(server|instance|worker|pod|replica)s?\.count$"),
    ("capacity", r"^(instances|workers|pods|replicas|nodes)$"),
    ("capacity", r"(^|\.)(status\.)?replicas$"),
    ("capacity", r"(^|\.)(k8s\.deployment\.desired|spec\.replicas)$"),
    ("load", r"^arrival\.rate(\.per\.sec)?$"),
    ("load", r"^(request|input|ingress|incoming)\.rate$"),
    ("load", r"(^|\.)(http\.)?(server\.)?requests?\.(per\.second|per\.sec|rate)$"),
    ("load", r"(^|\.)(rps|qps|arrivals?)$"),
    ("load", r"^offered\.load$"),
    (
        "throughput",
        r"^(throughput|processing\.rate|served\.rate|completion\.rate|responses\.per\.second)$",
    ),
    ("throughput", r"(^|\.)(requests\.completed\.rate|throughput)$"),
    (
        "latency_tail",
        r"^(?P<base>.*(latency|response\.time|duration|processing\.time|inference\.time).*)$",
    ),
    ("latency", r"^(average\.response\.time|avg\.response\.time|mean\.response\.time)$"),
    ("latency", r"^response\.time(\.(avg|mean|average))?$"),
    (
        "latency",
        _EXCLUDE_TAIL + r".*(^|\.)(latency|response\.time|request\.duration|server\.duration)"
        r"(\.seconds|\.ms)?(\.(avg|mean|average))?$",
    ),
    (
        "latency",
        _EXCLUDE_TAIL
        + r".*(^|\.)(processing|inference|service)\.time(\.seconds|\.ms)?(\.(avg|mean|average))?$",
    ),
    ("utilization", r"^server\.utilization$"),
    ("utilization", r"^utilization$"),
    (
        "utilization",
        _NOT_MEM
        + r".*(^|\.)cpu\.(utilization|utilisation|usage|percent|util)(\.ratio|\.percent)?$",
    ),
    ("utilization", r"^cpu$"),
    ("error_rate", r"(^|\.)(error|errors|failure|failures|5xx)\.(rate|ratio|percent|fraction)$"),
    ("error_rate", r"^error\.rate$|^errors$"),
    ("knob", r"^dimmer$"),
    (
        "knob",
        r"(^|\.)(model\.level|quality\.level|qos\.level|fidelity|model\.index|resolution\.level)$",
    ),
    (
        "quality",
        r"(^|\.)(accuracy|model\.accuracy|map|detection\.confidence|quality\.score|precision)$",
    ),
    ("cost", r"(^|\.)(cost\.per\.hour|hourly\.cost|cost|spend\.rate)$"),
)
_COMPILED = tuple((role, re.compile(rx)) for role, rx in RULES)
_TAIL = re.compile(
    r"(?:^|\.)(?:p(\d{2,3})|(\d{2})th\.?percentile|percentile\.?(\d{2})|q(\d{2}))(?:\.|$)"
)


@dataclass(frozen=True, slots=True)
class Binding:
    """One role's series: ``value_in_canonical_unit = raw * scale``."""

    metric: str
    scale: float = 1.0
    quantile: float | None = None  # latency_tail only
    source: str = "detected"  # or "settings"

    def describe(self) -> str:
        extra = f" ×{self.scale:g}" if self.scale != 1.0 else ""
        q = f" (p{self.quantile * 100:g})" if self.quantile is not None else ""
        return f"{self.metric}{q}{extra}"


@dataclass(frozen=True, slots=True)
class RoleMap:
    system: str
    bindings: Mapping[str, Binding]
    per_unit_utilization: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def get(self, role: str) -> Binding | None:
        return self.bindings.get(role)

    def metric(self, role: str) -> str | None:
        b = self.bindings.get(role)
        return b.metric if b is not None else None

    def has(self, *roles: str) -> bool:
        return all(r in self.bindings for r in roles)

    @property
    def queue_ready(self) -> bool:
        """Load (or throughput) + capacity + latency or utilisation: a queueing model applies."""
        demand = self.has("load") or self.has("throughput") or self.has("throughput_basic")
        return (
            demand
            and self.has("capacity")
            and (self.has("utilization") or self.has("latency") or self.has("latency_tail"))
        )

    def missing_for_queue(self) -> list[str]:
        out = []
        if not (self.has("load") or self.has("throughput") or self.has("throughput_basic")):
            out.append("load (arrival/request rate)")
        if not self.has("capacity"):
            out.append("capacity (servers/replicas/instances)")
        if not (self.has("utilization") or self.has("latency") or self.has("latency_tail")):
            out.append("utilisation or latency")
        return out

    def describe(self) -> str:
        parts = [f"{r}={b.describe()}" for r, b in self.bindings.items()]
        if self.per_unit_utilization:
            parts.append(f"per-unit utilisation={len(self.per_unit_utilization)} series")
        return ", ".join(parts) or "none"

    def metric_role(self) -> dict[str, str]:
        return {b.metric: r for r, b in self.bindings.items()}


def _latency_scale(name: str, unit: str) -> float:
    u = unit.strip().lower()
    if u in ("ms", "millisecond", "milliseconds", "msec"):
        return 1.0
    if u in ("s", "sec", "secs", "second", "seconds"):
        return 1000.0
    if u in ("us", "µs", "microsecond", "microseconds", "usec"):
        return 0.001
    if u in ("ns", "nanosecond", "nanoseconds"):
        return 1e-6
    if name.endswith((".seconds", ".sec", ".s")) or ".seconds." in name:
        return 1000.0
    if name.endswith((".us", ".micros")):
        return 0.001
    return 1.0


def _ratio_scale(name: str, unit: str, last: float | None) -> float:
    u = unit.strip().lower()
    if u in ("percent", "%", "pct", "percentage"):
        return 0.01
    if u in ("ratio", "1", "fraction", "{ratio}"):
        return 1.0
    if "percent" in name or name.endswith(".pct"):
        return 0.01
    if last is not None and math.isfinite(last) and abs(last) > 1.5:
        return 0.01
    return 1.0


def _quantile_of(name: str) -> float | None:
    """0.95 for ``latency.p95``, ``duration.95th.percentile``, ``rt.q99`` ...; None otherwise."""
    m = _TAIL.search(name)
    if m is None:
        return None
    digits = next(g for g in m.groups() if g)
    value = float(digits) if len(digits) == 2 else float(digits[:2] + "." + digits[2:])
    return value / 100.0 if 50.0 <= value < 100.0 else None


def _scale(role: str, name: str, unit: str, last: float | None) -> float:
    if role in LATENCY_ROLES:
        return _latency_scale(name, unit)
    if role in RATIO_ROLES:
        return _ratio_scale(name, unit, last)
    return 1.0


def detect(
    system: str,
    metrics: Iterable[tuple[str, str, float | None]],
    overrides: Mapping[str, Any] | None = None,
) -> RoleMap:
    """Roles of one system from ``(name, unit, last value)`` of its numeric series."""
    table = {name: (unit, last) for name, unit, last in metrics}
    bindings: dict[str, Binding] = {}
    taken: set[str] = set()
    notes: list[str] = []
    disabled: set[str] = set()
    for role, spec in (overrides or {}).items():
        if role not in ROLES:
            notes.append(f"settings: unknown role {role!r} ignored (known: {', '.join(ROLES)})")
            continue
        if spec in (None, "", False):
            disabled.add(role)
            continue
        if isinstance(spec, str):
            spec = {"metric": spec}
        if not isinstance(spec, Mapping) or not spec.get("metric"):
            notes.append(f"settings: role {role} needs a metric name")
            continue
        name = str(spec["metric"]).lower().replace("_", ".")
        unit, last = table.get(name, (str(spec.get("unit", "unknown")), None))
        unit = str(spec.get("unit", unit))
        scale = float(spec["scale"]) if "scale" in spec else _scale(role, name, unit, last)
        q = spec.get("quantile")
        quantile = (
            float(q) if q is not None else (_quantile_of(name) if role == "latency_tail" else None)
        )
        bindings[role] = Binding(name, scale, quantile, "settings")
        taken.add(name)
        if name not in table:
            notes.append(f"settings: {role} = {name}, which {system} has not published (yet)")
    per_unit = tuple(sorted((n for n in table if PER_UNIT_UTILIZATION.match(n)), key=_natural))
    taken.update(per_unit)
    names = sorted(n for n in table if n not in taken)
    for role, rx in _COMPILED:  # rule order: the more specific rules come first
        if role in bindings or role in disabled:
            continue
        matches = [n for n in names if n not in taken and rx.search(n)]
        if role == "latency_tail":
            tails = [(abs(q - 0.95), n, q) for n in matches if (q := _quantile_of(n)) is not None]
            if not tails:
                continue
            _, name, quantile = min(tails)
        else:
            matches = [n for n in matches if role not in LATENCY_ROLES or _quantile_of(n) is None]
            if not matches:
                continue
            name, quantile = matches[0], None
        unit, last = table[name]
        bindings[role] = Binding(name, _scale(role, name, unit, last), quantile)
        taken.add(name)
    return RoleMap(system, {r: bindings[r] for r in ROLES if r in bindings}, per_unit, tuple(notes))


def _natural(name: str) -> tuple[str, int]:
    head, _, tail = name.rpartition(".")
    return (head, int(tail) if tail.isdigit() else 0)


def system_settings(settings: Mapping[str, Any], system: str) -> dict[str, Any]:
    """``settings.systems[<system>]``, by exact name first, then the first matching pattern."""
    systems = settings.get("systems") or {}
    if not isinstance(systems, Mapping):
        return {}
    own = systems.get(system)
    if isinstance(own, Mapping):
        return dict(own)
    for pattern, value in systems.items():
        if (
            isinstance(value, Mapping)
            and any(ch in str(pattern) for ch in "*?[")
            and fnmatch.fnmatchcase(system, str(pattern))
        ):
            return dict(value)
    return {}


def validate_systems_setting(settings: Mapping[str, Any]) -> list[str]:
    """Problems in ``settings.systems`` (for ``--validate-only``)."""
    systems = settings.get("systems")
    if systems is None:
        return []
    if not isinstance(systems, Mapping):
        return ["settings.systems: must be a mapping of system name (or pattern) to settings"]
    errors = []
    for name, value in systems.items():
        if not isinstance(value, Mapping):
            errors.append(f"settings.systems.{name}: must be a mapping")
            continue
        roles = value.get("roles", {})
        if not isinstance(roles, Mapping):
            errors.append(f"settings.systems.{name}.roles: must be a mapping of role to metric")
            continue
        for role in roles:
            if role not in ROLES:
                errors.append(
                    f"settings.systems.{name}.roles.{role}: unknown role (known: "
                    f"{', '.join(ROLES)})"
                )
    return errors


@dataclass(slots=True)
class RoleCache:
    """Role maps per system, recomputed when its set of series or its settings change."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    _cache: OrderedDict[str, tuple[tuple[str, ...], RoleMap]] = field(default_factory=OrderedDict)

    def roles(self, store: Any, system: str) -> RoleMap:
        names = tuple(store.metrics_of(system))
        hit = self._cache.get(system)
        if hit is not None and hit[0] == names:
            self._cache.move_to_end(system)
            return hit[1]
        metrics = []
        for n in names:
            s = store.get(system, n)
            if s is not None and len(s):
                metrics.append((n, s.unit, float(s.last_v)))
        overrides = system_settings(self.settings, system).get("roles") or {}
        if not isinstance(overrides, Mapping):
            raise InvalidRequest(f"settings.systems.{system}.roles must be a mapping")
        rm = detect(system, metrics, overrides)
        self._cache[system] = (names, rm)
        while len(self._cache) > MAX_CACHED_SYSTEMS:
            self._cache.popitem(last=False)
        return rm

    def clear(self) -> None:
        self._cache.clear()
