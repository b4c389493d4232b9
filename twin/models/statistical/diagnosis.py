"""Metric-based root-cause diagnosis: rank services by how anomalous they became at
the incident time, and explain why.

``diagnose(state, request, anomaly_scores)`` is synchronous and pure given the
state: it reads the store (and the action log), never the wall clock. It is
``prepare`` (reads the state: ``gather`` → ``DiagnosisInput``, plain arrays) then
``answer`` (pure and picklable: ``rank_services``, ``incident_odds``, the text); the
statistical world model runs ``answer`` in a compute worker (``twin.core.workers``) so a
diagnosis never holds the serving loop. Evaluations call it through the RPC mapping.

Method, per (source, metric) series around the incident time ``t0``:

1. **Robust baseline** over ``[t0 - baseline, t0)``: the median and a scale that
   survives near-constant, quantised and bursty series: the largest of 1.4826·MAD,
   the spread of successive differences, the quantisation step (smallest gap between
   distinct baseline values), a relative floor (``rel_floor·|median|``) and an
   absolute floor. A median over the whole window is robust to the earlier incidents
   that usually sit in it, as long as they cover less than half of it.
2. **Post-incident change** over ``[t0, t0 + horizon)``: for each sample the geometric
   mean of its distance to the baseline median and to the median of the last
   ``recent_sec`` before ``t0``, over the scale (monotonic counters are scored as
   rates), i.e. a change *at* ``t0`` against both the long-run and the immediately
   preceding level (a series still elevated by, or
   recovering from, an earlier incident is not a new change). The series score is the
   *k*-th largest value, *k* at least ``persistence`` and a third of the horizon's
   samples (``persistence_share``), so spikes that a quantised or bursty series makes now
   and then do not outweigh a shift that lasts.
3. **Onset**: the first post-incident sample whose z crosses ``onset_z``; services
   whose anomalies start first get a bonus that decays with the delay (in samples of
   the series' own step, so any sampling rate works).
4. **Evidence per service**: metrics are grouped into families by generic keywords
   (cpu, memory, latency, client-side latency, network, io, load, errors, ...), the
   strongest series of each family counts once and the service score is the sum of
   ``log1p`` of the family scores, so agreement of independent families outranks a
   single huge z of one noisy series. **Peer comparison**: each family counts only by
   how far it stands out from the same family of the other services (the ``peer_q``
   quantile across services is subtracted), so the system-wide noise of a family does
   not lift a service with many metrics above a quiet one; the uncentred sum breaks
   ties (``weak_weight``).
   Propagation (no call graph is needed): a service whose server-side latency rose while
   it waits longer on its callees (its client-side latency rose by about as much, or
   significantly: sustained z >= ``onset_z``; percentiles of single calls need not add
   up to the percentile of the request that makes them) is a victim and its latency
   counts less; a caller's client-side latency counts less when some
   other service's server-side latency rose as much (the callee is slow). Even when
   nothing explains it, a caller's wait is a symptom (of the network between the caller
   and one of its callees, or of a callee): it is *shared* (below) between the caller and
   its likely callees, so it counts once in total, however many callees there are (in a
   big system, copying it to every candidate would drown the other evidence). Exogenous demand (an
   ``arrival``/``ingress`` rate) rising is a cause: it gets a bonus, and services whose
   request rates rose in proportion are load victims.
   **Likely callees** (a call graph inferred from the data): a caller's client-side
   latency rising beyond its peers' also points at the services it calls, which may show
   nothing themselves (a delay on a callee's network is seen only by its callers). The
   callees are the services whose request rates co-move with the caller's in the
   baseline (rank correlation of step-to-step changes on matched timestamps, above
   ``callee_min_corr``). The wait ``w`` is split in proportion 1 : rho_1 : ... : rho_k
   between the caller (its own network) and its k likely callees: callee i gets
   ``callee_weight`` × w × rho_i / (1 + sum rho) (the largest over callers), the caller
   keeps w / (1 + sum rho) (``own_wait_weight`` × w when it has no request rates).
   **Entry tier**: errors at a user-facing symptom (a ``_`` source's success/error
   series) beyond what any service's own error series reports were produced where the
   users' requests are served: services whose server-side latency co-moves with the
   symptom's latency in the baseline get ``ingress_weight`` × the unexplained error
   evidence × that correlation.
5. **Actions**: an execution result on a target shortly before the incident (a
   deployment, a restart, a config change) is strong evidence; failed ones more so.
6. **Streaming detector**: when ``anomaly_scores`` is given, the detector's maximum
   score in the post window adds a small amount to the series' evidence.
7. **Probabilities**: a softmax of the service scores with a temperature, scaled by
   ``1 - reserve`` so the probabilities of the listed hypotheses sum to less than 1
   (the rest is "something not observed").

Sources whose name starts with ``_`` (aggregates such as a user-facing SLI) are read
as symptoms but never ranked.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from twin.core.events import iso
from twin.core.state import TwinState
from twin.core.store import Series
from twin.models.domain import DiagnosisRequest, DiagnosisResult, Hypothesis

AnomalyScores = Callable[[str, str], tuple[np.ndarray, np.ndarray]]

__all__ = [
    "ActionEvent",
    "DEFAULT_CONFIG",
    "DiagnosisConfig",
    "DiagnosisInput",
    "IncidentOdds",
    "PreparedDiagnosis",
    "NO_INCIDENT",
    "SeriesWindow",
    "ServiceScore",
    "TUNABLE",
    "answer",
    "diagnose",
    "gather",
    "incident_odds",
    "metric_family",
    "prepare",
    "rank_services",
    "robust_baseline",
]

METHOD = "robust-onset-v3"
NO_INCIDENT = "no incident"  # the text every "nothing is wrong" hypothesis starts with


@dataclass(frozen=True, slots=True)
class DiagnosisConfig:
    baseline_sec: float = 3600.0  # history used for the baseline
    horizon_sec: float = 360.0  # post-incident window read for the deviation
    recent_sec: float = 600.0  # "just before" reference level
    min_baseline: int = 2  # fewer baseline samples: the series is skipped
    rel_floor: float = 0.01  # scale >= rel_floor * |median|
    abs_floor: float = 1e-6
    tail_q: float = 0.0  # > 0: scale >= the central (1 - 2 tail_q) range (bursty series)
    persistence: int = 2  # k-th largest post-incident z is the series score ...
    persistence_share: float = 0.34  # ... with k at least this share of the horizon's samples
    onset_z: float = 3.0
    noise_z: float = 0.0  # z below this is noise, not evidence (0: every z counts, log1p-damped)
    onset_weight: float = 1.0
    onset_decay_steps: float = 2.0
    client_latency_weight: float = 0.5  # a caller's wait explained by a callee's latency
    explained_ratio: float = 0.8
    demand_bonus: float = 1.0
    victim_share: float = 0.5  # "in proportion": at least this share of the cause's change
    victim_weight: float = 0.5
    detector_weight: float = 0.5
    action_lookback_sec: float = 1800.0
    action_weight: float = 3.0
    failed_action_factor: float = 1.5
    temperature: float = 1.5
    reserve: float = 0.05
    max_hypotheses: int = 20
    peer_q: float = 0.7  # > 0: subtract this quantile of a family's evidence across services
    weak_weight: float = 0.01  # weight of the uncentred family sum when peer_q > 0
    # A caller's wait on its calls is a symptom, shared between the caller (its own network)
    # and its likely callees in proportion 1 : co-movement (the shares add up to the wait);
    # without request rates to find callees, the caller keeps ``own_wait_weight`` of it.
    own_wait_weight: float = 0.25
    callee_weight: float = 1.0  # scale of the callees' shares (1: the wait is conserved)
    ingress_weight: float = 0.5  # share of a symptom's unexplained errors given to the entry tier
    callee_min_corr: float = 0.3  # co-movement of request rates needed to count as a likely callee
    # "No incident": the same ranking at ``placebos`` earlier times (t0 - k * horizon) is the
    # null; an incident is a top score ``null_offset`` null spreads above their median (the
    # spread at least ``null_floor`` score units).
    placebos: int = 4
    null_offset: float = 2.0
    null_floor: float = 0.5
    min_placebos: int = 2  # fewer usable earlier times: no "no incident" answer


DEFAULT_CONFIG = DiagnosisConfig()

#: Knobs whose values were chosen by looking at labelled incidents, with the alternatives
#: cross-validation chooses among (``eval rca --cv``, ``twin.evaluation.rca_cv``).
TUNABLE: dict[str, tuple[float, ...]] = {
    "horizon_sec": (240.0, 360.0, 480.0),
    "persistence_share": (0.0, 0.34, 0.5),
    "peer_q": (0.0, 0.5, 0.7, 0.9),
    "onset_weight": (0.0, 1.0, 2.0),
    "victim_weight": (0.25, 0.5, 1.0),
    "own_wait_weight": (0.25, 0.5, 1.0),
    "callee_weight": (0.0, 0.5, 1.0, 2.0),
    "ingress_weight": (0.0, 0.5, 1.0),
    "client_latency_weight": (0.25, 0.5, 1.0),
}


# --------------------------------------------------------------------------- families

_FAMILY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "client_latency",
        re.compile(
            r"client.*(latency|duration|response|rt\b)|(latency|duration).*client|upstream.*(latency|time)"
        ),
    ),
    ("latency", re.compile(r"latency|duration|response.?time|resp.?time|\brt\b|wait")),
    ("errors", re.compile(r"error|success|fail|5xx|4xx|exception|status")),
    ("demand", re.compile(r"arrival|ingress.?rate|incoming|external.?load")),
    ("load", re.compile(r"workload|request|rps|qps|throughput|ops|rate|traffic|connections")),
    ("cpu", re.compile(r"cpu|util|saturation|load.?avg")),
    ("memory", re.compile(r"mem|heap|rss|gc|swap")),
    ("network", re.compile(r"net|rx|tx|bytes|packet|bandwidth")),
    ("io", re.compile(r"syscall|disk|io\b|iops|read|write|fs")),
    ("queue", re.compile(r"queue|backlog|pending|inflight|threads|pool")),
)
_PCTL = re.compile(r"[._-]?(p\d{2,3}|pct|percent|mcores|avg|mean|max|min|sum|count|total)$")


def metric_family(name: str) -> str:
    """The evidence family of a metric name (generic keywords; fallback: the name's stem)."""
    n = name.lower().replace("_", ".")
    for fam, pat in _FAMILY_RULES:
        if pat.search(n):
            return fam
    stem = n
    while True:
        new = _PCTL.sub("", stem)
        if new == stem or not new:
            break
        stem = new
    return stem or n


# --------------------------------------------------------------------------- series math


def _median(x: np.ndarray) -> float:
    """``np.median`` of a small 1-d float array, without its per-call overhead (same value)."""
    n = x.size
    if n == 0:
        return math.nan
    s = np.sort(x)
    h = n // 2
    return float(s[h]) if n % 2 else float((s[h - 1] + s[h]) / 2.0)


def robust_baseline(
    values: np.ndarray, rel_floor: float = 0.01, abs_floor: float = 1e-6, tail_q: float = 0.0
) -> tuple[float, float]:
    """(median, scale) of a baseline that survives near-constant, quantised and bursty data."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    sv = np.sort(v)
    h = sv.size // 2
    med = float(sv[h]) if sv.size % 2 else float((sv[h - 1] + sv[h]) / 2.0)
    mad = 1.4826 * _median(np.abs(v - med))
    diffs = np.abs(np.diff(v))
    dspread = 1.4826 * _median(diffs) / math.sqrt(2.0) if diffs.size else 0.0
    gaps = np.diff(sv)
    gaps = gaps[gaps > 0]
    quantum = float(gaps.min()) if gaps.size else 0.0
    tail = 0.0
    if tail_q > 0 and v.size >= 2 / tail_q:
        lo, hi = np.quantile(v, [tail_q, 1.0 - tail_q])
        tail = float(hi - lo) / (2.0 * 1.6449)  # Gaussian equivalent of the central 90 %
    scale = max(mad, dspread, quantum, rel_floor * abs(med), abs_floor, tail)
    return med, scale


@dataclass(slots=True)
class SeriesEvidence:
    source: str
    metric: str
    family: str
    score: float  # k-th largest robust z after t0
    peak: float  # largest robust z after t0
    direction: int  # +1 up, -1 down
    onset: float | None  # seconds after t0 of the first |z| >= onset_z
    step: float
    baseline: float
    value: float  # the post value at the peak
    shift: float = 0.0  # median after t0 minus median before (units of the metric)
    rel_shift: float = 0.0  # shift / |baseline median|


@dataclass(slots=True)
class ServiceScore:
    service: str
    score: float
    probability: float = 0.0
    onset: float | None = None
    families: dict[str, float] = field(default_factory=dict)
    contributions: dict[str, float] = field(
        default_factory=dict
    )  # what the score counted, by reason
    top: list[SeriesEvidence] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def _series_evidence(
    source: str, metric: str, t: np.ndarray, v: np.ndarray, t0: float, cfg: DiagnosisConfig
) -> SeriesEvidence | None:
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size < cfg.min_baseline + 1:
        return None
    t, v = _counter_to_rate(t, v, t0)
    if t.size < cfg.min_baseline + 1:
        return None
    pre = (t < t0) & (t >= t0 - cfg.baseline_sec)
    post = (t >= t0) & (t < t0 + cfg.horizon_sec)
    if int(pre.sum()) < cfg.min_baseline or not post.any():
        return None
    base = v[pre]
    med, scale = robust_baseline(base, cfg.rel_floor, cfg.abs_floor, cfg.tail_q)
    # Change at t0 relative to both the long-run level and the level just before t0
    # (geometric mean): a series still elevated by an earlier incident, or recovering
    # from one, is not a new change; a level that was already drifting is discounted.
    recent = base[t[pre] >= t0 - cfg.recent_sec]
    rec = _median(recent) if recent.size else med
    dz = (v[post] - med) / scale
    z = np.sqrt(np.abs(v[post] - med) * np.abs(v[post] - rec)) / scale
    order = np.sort(z)
    k = min(max(cfg.persistence, math.ceil(cfg.persistence_share * z.size)), z.size)
    score = float(order[-k])
    ipk = int(np.argmax(z))
    tp = t[post]
    on = np.nonzero(z >= cfg.onset_z)[0]
    steps = np.diff(t[pre]) if pre.sum() > 1 else np.diff(t)
    post_med = _median(v[post])
    step = _median(steps) if steps.size else cfg.horizon_sec
    return SeriesEvidence(
        source,
        metric,
        metric_family(metric),
        score,
        float(z[ipk]),
        1 if dz[ipk] >= 0 else -1,
        float(tp[on[0]] - t0) if on.size else None,
        max(step, 1e-9),
        med,
        float(v[post][ipk]),
        post_med - med,
        (post_med - med) / abs(med) if med else (math.inf if post_med != med else 0.0),
    )


def _counter_to_rate(t: np.ndarray, v: np.ndarray, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """A monotonic counter (``*_total``: never decreasing before ``t0``, mostly rising)
    grows past its baseline by construction; score its rate instead (resets → restart)."""
    pre = t < t0
    if int(pre.sum()) < 4:
        return t, v
    d = np.diff(v[pre])
    if not (np.all(d >= 0) and np.mean(d > 0) > 0.5):
        return t, v
    dv = np.diff(v)
    dv = np.where(dv < 0, v[1:], dv)  # counter reset: the new value is the increase
    dt = np.diff(t)
    keep = dt > 0
    return t[1:][keep], dv[keep] / dt[keep]


_EMPTY = np.empty(0)


def _detector_window(
    anomaly_scores: AnomalyScores | None, source: str, metric: str, start: float, end: float
) -> tuple[np.ndarray, np.ndarray]:
    """The streaming detector's scores of one series in ``[start, end)`` (empty if none)."""
    if anomaly_scores is None:
        return _EMPTY, _EMPTY
    try:
        ts, ss = anomaly_scores(source, metric)
    except Exception:  # noqa: BLE001 - the detector is optional evidence
        return _EMPTY, _EMPTY
    ts = np.asarray(ts, dtype=float)
    ss = np.asarray(ss, dtype=float)
    if ts.size == 0 or ss.size != ts.size:
        return _EMPTY, _EMPTY
    sel = (ts >= start) & (ts < end) & np.isfinite(ss)
    return ts[sel], ss[sel]


def _detector_bonus(ts: np.ndarray, ss: np.ndarray, t0: float, horizon: float) -> float:
    """The detector's largest score in ``[t0, t0 + horizon)``, clipped to 0..1."""
    if ts.size == 0:
        return 0.0
    sel = (ts >= t0) & (ts < t0 + horizon)
    return float(np.clip(np.max(ss[sel]), 0.0, 1.0)) if sel.any() else 0.0


# --------------------------------------------------------------------------- ranking


def _window(series: Series, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """``series.window`` that copies only a growing tail, not the whole (long) series."""
    n = 256
    while True:
        t, v = series.tail(n)
        if n >= len(series) or (t.size and t[0] <= start):
            break
        n *= 4
    lo = int(np.searchsorted(t, start, side="left"))
    hi = int(np.searchsorted(t, end, side="right"))
    return t[lo:hi], v[lo:hi]


def _filter_sources(sources: list[str], system: str) -> list[str]:
    if not system:
        return sources
    scoped = [
        s
        for s in sources
        if s == system or s.startswith((f"{system}/", f"{system}.", f"{system}:"))
    ]
    return scoped or sources


@dataclass(frozen=True, slots=True, eq=False)
class SeriesWindow:
    """One series around the incident: samples in ``[t0 - baseline, t0 + horizon]``."""

    source: str
    metric: str
    t: np.ndarray
    v: np.ndarray
    det_t: np.ndarray = field(default_factory=lambda: _EMPTY)  # the streaming detector's scores
    det_s: np.ndarray = field(default_factory=lambda: _EMPTY)  # after t0 (times, 0..1 scores)


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """An execution result near the incident, as the ranking sees it."""

    t: float
    target: str
    action_type: str
    action_id: str
    status: str
    success: bool | None


@dataclass(frozen=True, slots=True, eq=False)
class DiagnosisInput:
    """Everything the ranking reads: plain arrays and tuples, no store, no clock.

    ``gather`` builds it from the twin's state; ``rank`` is a pure function of it (so it
    can run in another process, and an evaluation can rank one input under many configs).
    """

    t0: float
    sources: tuple[str, ...]
    series: tuple[SeriesWindow, ...]
    actions: tuple[ActionEvent, ...] = ()


def gather(
    state: TwinState,
    t0: float,
    cfg: DiagnosisConfig = DEFAULT_CONFIG,
    anomaly_scores: AnomalyScores | None = None,
    system: str = "",
    history_sec: float = 0.0,
) -> DiagnosisInput:
    """The windows, detector scores and actions around ``t0`` (the only read of the state);
    ``history_sec`` more history before the baseline (for the placebo diagnoses)."""
    store = state.store
    sources = _filter_sources(store.sources(), system)
    out: list[SeriesWindow] = []
    for src in sources:
        for metric in store.metrics_of(src):
            s = store.get(src, metric)
            if s is None or len(s) == 0:
                continue
            t, v = _window(s, t0 - cfg.baseline_sec - history_sec, t0 + cfg.horizon_sec)
            if t.size == 0:
                continue
            if src.startswith("_"):
                out.append(SeriesWindow(src, metric, t, v))
            else:
                dt, ds = _detector_window(anomaly_scores, src, metric, t0, t0 + cfg.horizon_sec)
                out.append(SeriesWindow(src, metric, t, v, dt, ds))
    acts = tuple(
        ActionEvent(rec.t, rec.target, rec.action_type, rec.action_id, rec.status, rec.success)
        for rec in state.actions
        if rec.target
        and not rec.target.startswith("_")
        and -cfg.horizon_sec <= t0 - rec.t <= cfg.action_lookback_sec + history_sec
    )
    return DiagnosisInput(t0, tuple(sources), tuple(out), acts)


def rank_services(
    inp: DiagnosisInput, cfg: DiagnosisConfig = DEFAULT_CONFIG
) -> tuple[list[ServiceScore], list[SeriesEvidence]]:
    """All rankable services, best first, with their evidence; plus symptom series (``_``-sources).

    Pure: a function of ``inp`` and ``cfg`` only."""
    t0 = inp.t0
    sources = list(inp.sources)
    per_service: dict[str, list[SeriesEvidence]] = {}
    symptoms: list[SeriesEvidence] = []
    detector: dict[tuple[str, str], float] = {}
    load_base: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lat_base: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for sw in inp.series:
        src, metric, t, v = sw.source, sw.metric, sw.t, sw.v
        lo = int(np.searchsorted(t, t0 - cfg.baseline_sec, side="left"))
        hi = int(np.searchsorted(t, t0 + cfg.horizon_sec, side="right"))
        if lo > 0 or hi < t.size:
            t, v = t[lo:hi], v[lo:hi]
        ev = _series_evidence(src, metric, t, v, t0, cfg)
        if ev is None:
            continue
        if ev.family == "latency" and cfg.ingress_weight > 0:
            pre = (t >= t0 - cfg.baseline_sec) & (t < t0) & np.isfinite(v)
            lat_base.setdefault(src, []).append((t[pre], v[pre]))
        if src.startswith("_"):
            symptoms.append(ev)
            continue
        per_service.setdefault(src, []).append(ev)
        if ev.family == "load" and cfg.callee_weight > 0:
            pre = (t >= t0 - cfg.baseline_sec) & (t < t0) & np.isfinite(v)
            if int(pre.sum()) > int(load_base.get(src, (np.empty(0), np.empty(0)))[0].size):
                load_base[src] = (t[pre], v[pre])
        b = _detector_bonus(sw.det_t, sw.det_s, t0, cfg.horizon_sec)
        if b:
            detector[(src, metric)] = b

    # Server-side latency per service: a caller's client-side latency is "explained" when
    # some other service's server-side latency rose about as much (the caller is a victim);
    # otherwise the wait is on the caller's own side (its network, its connection pool).
    def evidence(
        z: float,
    ) -> float:  # beyond what noise gives: the first ``noise_z`` robust z are free
        return max(0.0, math.log1p(z) - math.log1p(cfg.noise_z))

    server_lat = {
        svc: max((evidence(e.score) for e in evs if e.family == "latency"), default=0.0)
        for svc, evs in per_service.items()
    }

    # Exogenous demand: a service whose arrival rate rose carries the load it pushes
    # downstream; services whose request rates rose in proportion are load victims.
    demand_rise = max(
        (
            e.rel_shift
            for evs in per_service.values()
            for e in evs
            if e.family == "demand" and e.score >= cfg.onset_z and e.shift > 0
        ),
        default=0.0,
    )

    scores: dict[str, ServiceScore] = {}
    pending: list[
        tuple[str, dict[str, float], bool, float, float | None, list[SeriesEvidence]]
    ] = []
    for svc, evs in per_service.items():
        fams: dict[str, float] = {}
        # Victim of its callees: its server latency rose while it waits longer on its calls
        # (by about as much, or significantly: a request's percentile is not the sum of its
        # calls' percentiles, so the shifts alone miss callers that make many calls).
        d_server = max((e.shift for e in evs if e.family == "latency"), default=0.0)
        d_client = max((e.shift for e in evs if e.family == "client_latency"), default=0.0)
        z_client = max(
            (e.score for e in evs if e.family == "client_latency" and e.direction > 0), default=0.0
        )
        waits_on_callees = d_server > 0 and (
            d_client >= cfg.victim_share * d_server or z_client >= cfg.onset_z
        )
        load_victim = (
            demand_rise > 0
            and not any(e.family == "demand" for e in evs)
            and any(
                e.family == "load" and e.shift > 0 and e.rel_shift >= cfg.victim_share * demand_rise
                for e in evs
            )
        )
        onset: float | None = None
        onset_steps = math.inf
        others_lat = max((v for k, v in server_lat.items() if k != svc), default=0.0)
        for ev in evs:
            val = evidence(ev.score)
            val += cfg.detector_weight * detector.get((svc, ev.metric), 0.0)
            if ev.family == "client_latency" and others_lat >= cfg.explained_ratio * val:
                val *= cfg.client_latency_weight
            if ev.family == "latency" and waits_on_callees:
                val *= cfg.victim_weight
            if ev.family == "demand" and ev.direction > 0 and ev.score >= cfg.onset_z:
                val += cfg.demand_bonus
            if val > fams.get(ev.family, 0.0):
                fams[ev.family] = val
            if ev.onset is not None and ev.family != "client_latency":
                st = ev.onset / ev.step
                if st < onset_steps:
                    onset_steps, onset = st, ev.onset
        pending.append((svc, fams, load_victim, onset_steps, onset, evs))

    # Peer comparison: a family counts only as far as it stands out from the same family
    # of the other services (the ``peer_q`` quantile across services is subtracted), so
    # the system-wide noise level of a family does not rank a service with many metrics
    # above one with few.
    peer: dict[str, float] = {}
    if cfg.peer_q > 0 and len(pending) >= 3:
        by_fam: dict[str, list[float]] = {}
        for _, fams, *_rest in pending:
            for f, fv in fams.items():
                by_fam.setdefault(f, []).append(fv)
        n_svc = len(pending)
        for f, vals in by_fam.items():
            vals = vals + [0.0] * (n_svc - len(vals))
            peer[f] = float(np.quantile(vals, cfg.peer_q))
    # Inferred evidence for services that may show nothing themselves, with its reason.
    inferred: dict[str, dict[str, float]] = {}
    callee_ev, own_share = _callee_evidence(pending, peer, load_base, cfg)
    for svc, (val, caller) in callee_ev.items():
        inferred.setdefault(svc, {})[f"callee of waiting {caller}"] = val
    for svc, (val, sym) in _ingress_evidence(pending, symptoms, lat_base, cfg, evidence).items():
        inferred.setdefault(svc, {})[f"entry tier of {sym} errors"] = val
    for svc, fams, load_victim, onset_steps, onset, evs in pending:
        # A caller's wait on its calls is mostly a symptom (of its callees or the network to
        # them): it counts ``own_wait_weight`` for the caller and is passed to likely callees.
        counted = {
            f: max(0.0, v - peer.get(f, 0.0))
            * (own_share.get(svc, cfg.own_wait_weight) if f == "client_latency" else 1.0)
            for f, v in fams.items()
        }
        counted.update(inferred.get(svc, {}))
        total = sum(counted.values()) + cfg.weak_weight * sum(fams.values())
        if load_victim:
            total *= cfg.victim_weight
        if math.isfinite(onset_steps):
            total += cfg.onset_weight * math.exp(-onset_steps / cfg.onset_decay_steps)
        top = sorted(evs, key=lambda e: -e.score)[:3]
        counted = {k: v for k, v in counted.items() if v > 0}
        scores[svc] = ServiceScore(
            svc, total, onset=onset, families=fams, top=top, contributions=counted
        )

    # Recent execution results: a change on a target shortly before the incident.
    for rec in inp.actions:
        target = rec.target
        dt = t0 - rec.t
        if not (-cfg.horizon_sec <= dt <= cfg.action_lookback_sec):
            continue
        weight = cfg.action_weight * math.exp(
            -max(dt, 0.0) / max(cfg.action_lookback_sec / 3.0, 1.0)
        )
        if rec.success is False:
            weight *= cfg.failed_action_factor
        sc = scores.get(target)
        if sc is None:
            sc = scores[target] = ServiceScore(target, 0.0)
        sc.score += weight
        sc.actions.append(
            f"{rec.action_type} {rec.action_id} on {target} ({rec.status}) {dt:+.0f}s before the "
            "incident"
        )

    # Services with telemetry but no usable evidence still appear, at the bottom.
    for src in sources:
        if not src.startswith("_") and src not in scores:
            scores[src] = ServiceScore(src, 0.0)
    ranked = sorted(scores.values(), key=lambda s: (-s.score, s.service))
    if ranked:
        x = np.array([s.score for s in ranked]) / max(cfg.temperature, 1e-9)
        p = np.exp(x - x.max())
        p = p / p.sum() * (1.0 - cfg.reserve)
        for s, pi in zip(ranked, p.tolist()):
            s.probability = float(pi)
    return ranked, symptoms


@dataclass(frozen=True, slots=True)
class IncidentOdds:
    """How the top score at ``t0`` compares with the same diagnosis at earlier times."""

    probability: float  # P(an incident at t0); P(no incident) = 1 - probability
    top: float  # the top service's score at t0
    null_median: float  # median top score of the placebo diagnoses
    null_spread: float  # their robust spread (floored)
    placebo_tops: tuple[float, ...]


def incident_odds(
    inp: DiagnosisInput, top: float, cfg: DiagnosisConfig = DEFAULT_CONFIG
) -> IncidentOdds | None:
    """Is anything wrong at ``t0`` at all? Pure, like ``rank_services``.

    The null is the system's own recent past: the same ranking run at ``placebos`` earlier
    times ``t0 - k * horizon`` (each against its own baseline) gives the top scores that
    ordinary operation, noise and earlier blips produce *on this system* (no threshold
    fitted to one data set). An incident is a top score well above them: P(incident) is a
    logistic in ``(top - median) / spread - null_offset`` (spread = 1.4826 * MAD of the
    placebo tops, at least ``null_floor``; the offset of 2 spreads is about the null's
    95th percentile, so an ordinary top score gives P(no incident) ≈ 0.88). None when
    fewer than ``min_placebos`` earlier times have a baseline.
    """
    tops: list[float] = []
    for k in range(1, cfg.placebos + 1):
        shifted = dataclasses.replace(inp, t0=inp.t0 - k * cfg.horizon_sec)
        ranked, _ = rank_services(shifted, cfg)
        if ranked and any(s.families or s.actions for s in ranked):
            tops.append(ranked[0].score)
    if len(tops) < cfg.min_placebos:
        return None
    arr = np.asarray(tops)
    med = float(np.median(arr))
    spread = max(1.4826 * float(np.median(np.abs(arr - med))), cfg.null_floor)
    x = (top - med) / spread - cfg.null_offset
    prob = 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0
    return IncidentOdds(prob, top, med, spread, tuple(tops))


def _co_movement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Rank correlation of the step-to-step changes of two series on their common timestamps."""
    ta, va = a
    tb, vb = b
    if ta.size < 6 or tb.size < 6:
        return 0.0
    step = float(np.median(np.diff(ta))) if ta.size > 1 else 0.0
    if step <= 0:
        return 0.0
    # Match samples within half a step (scrapes of different pods are not simultaneous).
    idx = np.searchsorted(tb, ta)
    idx = np.clip(idx, 1, tb.size - 1)
    left = tb[idx - 1]
    right = tb[idx]
    j = np.where(np.abs(ta - left) <= np.abs(right - ta), idx - 1, idx)
    ok = np.abs(tb[j] - ta) <= step / 2.0
    if int(ok.sum()) < 6:
        return 0.0
    x = np.diff(va[ok])
    y = np.diff(vb[j[ok]])
    if x.size < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    c = float(np.corrcoef(rx, ry)[0, 1])
    return c if math.isfinite(c) else 0.0


def _callee_evidence(
    pending: list[tuple[str, dict[str, float], bool, float, float | None, list[SeriesEvidence]]],
    peer: dict[str, float],
    load_base: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: DiagnosisConfig,
) -> tuple[dict[str, tuple[float, str]], dict[str, float]]:
    """A caller waiting longer on its calls (client-side latency up) points at its callees,
    which may show nothing themselves (a delay on a callee's network). Without a call graph,
    the callees are the services whose request rates moved together with the caller's in the
    baseline (every call of the caller is a request to them). The wait is shared between the
    caller (its own network) and them in proportion 1 : co-movement, so it counts once.
    Returns ``{callee: (share, caller)}`` (largest over callers) and the callers' own shares
    as fractions of their wait."""
    own: dict[str, float] = {}
    if cfg.callee_weight <= 0 or not load_base:
        return {}, own
    waits: dict[str, float] = {}
    for svc, fams, *_rest in pending:
        w = max(0.0, fams.get("client_latency", 0.0) - peer.get("client_latency", 0.0))
        if w > 0 and svc in load_base:
            waits[svc] = w
    out: dict[str, tuple[float, str]] = {}
    for caller, w in sorted(waits.items()):
        cands: dict[str, float] = {}
        for item in pending:
            svc = item[0]
            if svc == caller or svc not in load_base:
                continue
            rho = _co_movement(load_base[caller], load_base[svc])
            if rho > cfg.callee_min_corr:
                cands[svc] = rho
        tot = 1.0 + sum(cands.values())
        own[caller] = 1.0 / tot
        for svc, rho in cands.items():
            val = w * rho / tot
            if val > out.get(svc, (0.0, ""))[0]:
                out[svc] = (val, caller)
    return out, own


def _ingress_evidence(
    pending: list[tuple[str, dict[str, float], bool, float, float | None, list[SeriesEvidence]]],
    symptoms: list[SeriesEvidence],
    lat_base: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    cfg: DiagnosisConfig,
    evidence: Callable[[float], float],
) -> dict[str, tuple[float, str]]:
    """Errors at a user-facing symptom (a ``_`` source) that no service reports itself were
    produced where the users' requests are served: the services whose server-side latency
    moved together with the symptom's latency in the baseline (the entry tier) get the
    unexplained part of the symptom's error evidence, times that co-movement (and the symptom)."""
    if cfg.ingress_weight <= 0:
        return {}
    sym_err: dict[str, float] = {}
    for e in symptoms:
        if e.family == "errors" and e.score >= cfg.onset_z:
            sym_err[e.source] = max(sym_err.get(e.source, 0.0), evidence(e.score))
    if not sym_err:
        return {}
    svc_err = max((fams.get("errors", 0.0) for _, fams, *_r in pending), default=0.0)
    out: dict[str, tuple[float, str]] = {}
    for src, err in sorted(sym_err.items()):
        unexplained = max(0.0, err - svc_err)
        if unexplained <= 0 or src not in lat_base:
            continue
        for svc, *_r in pending:
            rho = max(
                (_co_movement(a, b) for a in lat_base[src] for b in lat_base.get(svc, [])),
                default=0.0,
            )
            val = cfg.ingress_weight * unexplained * rho
            if rho > 0 and val > out.get(svc, (0.0, ""))[0]:
                out[svc] = (val, src)
    return out


# --------------------------------------------------------------------------- the answer


def _ctx_float(ctx: Mapping[str, str], key: str) -> float | None:
    raw = ctx.get(key)
    if raw is None or raw == "":
        return None
    try:
        x = float(raw)
    except ValueError:
        return None
    return x if math.isfinite(x) and x > 0 else None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True, slots=True, eq=False)
class PreparedDiagnosis:
    """A request with its input gathered: everything ``answer`` needs (picklable)."""

    inp: DiagnosisInput
    cfg: DiagnosisConfig
    t0_note: str
    context: dict[str, str]
    description: str


def diagnose(
    state: TwinState,
    request: DiagnosisRequest,
    anomaly_scores: AnomalyScores | None = None,
    config: DiagnosisConfig | None = None,
) -> DiagnosisResult:
    """Ranks the services that most likely caused the incident at ``request.timestamp``
    (``prepare`` then ``answer``, in this thread)."""
    prepared = prepare(state, request, anomaly_scores, config)
    return prepared if isinstance(prepared, DiagnosisResult) else answer(prepared)


def prepare(
    state: TwinState,
    request: DiagnosisRequest,
    anomaly_scores: AnomalyScores | None = None,
    config: DiagnosisConfig | None = None,
) -> PreparedDiagnosis | DiagnosisResult:
    """The part that reads the twin's state (on the serving loop): the incident time, the
    config the request's context asks for, and the gathered input; or the failure."""
    cfg = config or DEFAULT_CONFIG
    ctx = dict(request.context or {})
    wm = _ctx_float(ctx, "window_minutes")
    hm = _ctx_float(ctx, "horizon_minutes")
    if wm:
        cfg = dataclasses.replace(cfg, baseline_sec=wm * 60.0)
    if hm:
        cfg = dataclasses.replace(cfg, horizon_sec=hm * 60.0)
    newest = state.store.newest_time
    if not math.isfinite(newest):
        return DiagnosisResult(
            False, explanation="no telemetry to diagnose", metadata={"method": METHOD}
        )
    if request.timestamp is not None:
        t0 = float(request.timestamp)
        t0_note = "incident time from the request"
    else:
        t0 = newest - cfg.horizon_sec / 2.0
        t0_note = "no incident time given: the newest telemetry was treated as the incident"
    system = ctx.get("system", "")
    history = cfg.placebos * cfg.horizon_sec
    inp = gather(state, t0, cfg, anomaly_scores, system, history_sec=history)
    return PreparedDiagnosis(inp, cfg, t0_note, ctx, request.anomaly_description or "")


def answer(prepared: PreparedDiagnosis) -> DiagnosisResult:
    """The ranking, the no-incident odds and the answer: a pure function of ``prepared``
    (module level and picklable, so it can run in a compute worker process)."""
    inp, cfg, t0_note, ctx = prepared.inp, prepared.cfg, prepared.t0_note, prepared.context
    t0 = inp.t0
    ranked, symptoms = rank_services(inp, cfg)
    if not ranked:
        return DiagnosisResult(
            False,
            explanation=f"not enough telemetry around the incident time ({t0_note}) to rank "
                        "services",
            metadata={"method": METHOD, "incident_time": _fmt(t0)},
        )

    # Is anything wrong at all? The services share P(incident); "no incident" gets the rest.
    odds = incident_odds(inp, ranked[0].score, cfg) if cfg.placebos > 0 else None
    p_inc = odds.probability if odds is not None else 1.0
    for s in ranked:
        s.probability *= p_inc
    p_none = (1.0 - cfg.reserve) * (1.0 - p_inc) if odds is not None else None

    hint_metric = (ctx.get("metric") or "").lower().replace("_", ".")
    hint_service = ctx.get("service") or ""
    hyps: list[Hypothesis] = []
    for i, s in enumerate(ranked[: cfg.max_hypotheses]):
        ev = s.top[0] if s.top else None
        lead = max(s.contributions.items(), key=lambda kv: kv[1])[0] if s.contributions else ""
        if lead and lead not in s.families:  # mostly inferred: say why
            what = s.service
            head = f"{s.service} is the root cause ({lead})"
        elif ev is not None:
            what = f"{s.service}/{ev.metric}"
            verb = "rose" if ev.direction > 0 else "fell"
            head = (
                f"{s.service} is the root cause ({ev.metric} {verb} from {_fmt(ev.baseline)} to "
                f"{_fmt(ev.value)})"
            )
        else:
            what = s.service
            head = f"{s.service} is the root cause (a recent change on it)"
        evidence = [
            f"{e.source}/{e.metric}: robust z {e.peak:.1f} (sustained {e.score:.1f}), baseline "
            f"{_fmt(e.baseline)} -> {_fmt(e.value)}"
            + (f", onset +{e.onset:.0f}s" if e.onset is not None else "")
            for e in s.top
        ] + s.actions
        fams = ", ".join(
            f"{k} {v:.2f}"
            for k, v in sorted((s.contributions or s.families).items(), key=lambda kv: -kv[1])[:4]
        )
        reasoning = (
            f"score {s.score:.2f} from [{fams}]"
            + (
                f"; first anomaly {s.onset:.0f}s after the incident time"
                if s.onset is not None
                else ""
            )
            + (f"; {len(s.actions)} recent action(s) on it" if s.actions else "")
        )
        hyps.append(Hypothesis(head, round(s.probability, 6), reasoning, evidence or [what], i + 1))
    if odds is not None and p_none is not None:
        hyps.append(_no_incident_hypothesis(odds, p_none, t0, cfg))
        hyps.sort(key=lambda h: -h.probability)  # stable: ties keep the service order
        for i, h in enumerate(hyps):
            h.rank = i + 1
    quiet = p_none is not None and hyps[0].hypothesis.startswith(NO_INCIDENT)

    # Causal chain: root → the next services whose anomalies started no earlier → the symptom.
    root = ranked[0]
    chain = [root.service]
    for s in ranked[1:4]:
        if (
            s.onset is not None
            and (root.onset is None or s.onset >= root.onset)
            and s.score > 0.5 * root.score
        ):
            chain.append(s.service)
    symptom_names = sorted({f"{e.source}/{e.metric}" for e in symptoms if e.score >= cfg.onset_z})[
        :3
    ]
    tail = hint_service or (symptom_names[0] if symptom_names else "")
    if hint_metric and hint_service:
        tail = f"{hint_service}/{hint_metric}"
    if tail and tail not in chain:
        chain.append(tail)
    causal_chain = " -> ".join(chain)

    supporting = [
        f"{e.source}/{e.metric}: z {e.peak:.1f}, {_fmt(e.baseline)} -> {_fmt(e.value)}"
        for e in root.top
    ]
    supporting += root.actions
    supporting += [f"symptom {n}" for n in symptom_names]
    explanation = (
        f"{len(ranked)} services ranked by robust deviation after {_fmt(t0)} ({t0_note}); "
        f"baseline {cfg.baseline_sec / 60:.0f} min median/MAD, horizon {cfg.horizon_sec / 60:.0f} "
        "min. "
    )
    if quiet and p_none is not None:
        explanation += (
            f"No incident: nothing stands out from the system's own recent past (p={p_none:.2f}); "
            f"the most anomalous service is {root.service} (p={root.probability:.2f})."
        )
    else:
        explanation += f"Most likely: {root.service} (p={root.probability:.2f})."
        if p_none is not None:
            explanation += f" No incident: p={p_none:.2f}."
    if prepared.description:
        explanation += f" Symptom reported: {prepared.description[:200]}"
    metadata = {
        "method": METHOD,
        "ranking": ",".join(s.service for s in ranked),
        "incident_time": _fmt(t0),
        "services_ranked": str(len(ranked)),
        "root_cause": root.service,
        "root_metric": root.top[0].metric if root.top else "",
        "answer": "no_incident" if quiet else "incident",
    }
    if odds is not None and p_none is not None:
        metadata["incident_probability"] = f"{p_inc:.6f}"
        metadata["no_incident_probability"] = f"{p_none:.6f}"
        metadata["null_top_scores"] = ",".join(f"{x:.3f}" for x in odds.placebo_tops)
    return DiagnosisResult(
        True, hyps, causal_chain, round(hyps[0].probability, 6), explanation, supporting, metadata
    )


def _no_incident_hypothesis(
    odds: IncidentOdds, p_none: float, t0: float, cfg: DiagnosisConfig
) -> Hypothesis:
    return Hypothesis(
        f"{NO_INCIDENT}: nothing at {iso(t0)} stands out from the system's own recent past",
        round(p_none, 6),
        (
            f"top service score {odds.top:.2f} vs {odds.null_median:.2f} ± {odds.null_spread:.2f} "
            f"for the same diagnosis at {len(odds.placebo_tops)} earlier times "
            f"(every {cfg.horizon_sec / 60:.0f} min before); "
            f"an incident needs about {cfg.null_offset:g} spreads more"
        ),
        [f"placebo top scores: {', '.join(f'{x:.2f}' for x in odds.placebo_tops)}"],
        0,
    )
