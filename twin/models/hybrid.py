"""The ``hybrid`` world model: several world models asked at once, answers fused.

Members (``settings.members``, default ``gemini``, ``statistical``, ``mock``) are
built from the registry over the runtime's shared ``TwinState``; a member that
cannot be built or initialised (missing optional dependency, no API key, a bug) is
dropped and reported in ``health`` - the hybrid keeps serving with the rest.
``update``/``calibrate``/``reset``/``shutdown`` fan out to every member.

Per request (Simulate, Diagnose) the *primary* members run concurrently, each
within its latency budget (``settings.latency_budget_sec``); members listed in
``settings.last_resort`` (default ``mock``) are asked only when no primary member
answered. Successful answers are fused:

- **simulations** - per metric per timestamp, a weighted mean with weights =
  configured weight × the member's confidence at that time, normalised (members on
  other time grids are interpolated linearly onto the grid of the most trusted
  member, never extrapolated). The result's confidence is the configured-weight
  mean of the members' confidences; its uncertainty band is the weighted mean of
  the members' bands under consensus and their envelope otherwise.
- **diagnoses** - hypotheses from several members that say the same thing (token
  Jaccard similarity ≥ ``hypothesis_match``) are merged; the combined probability
  is the linear opinion pool Σ aᵢ·pᵢ (aᵢ = normalised weight × confidence of the
  member; a member that did not propose it contributes 0), so the probabilities
  still sum to at most 1; then re-ranked.

**Consensus**: at least ``consensus.min_models`` members answered and they agree -
for simulations the mean relative spread ((max − min) / |fused|) of the values they
predicted in common is ≤ ``consensus.agreement_threshold``; for diagnoses the
members whose top hypothesis is the fused top one carry ≥ ``consensus.min_top_agreement``
of the weight. Without consensus the confidence is multiplied by
``consensus.penalty`` and the explanation says so.

Natural-language queries go to the members in ``settings.fallback_order`` (default:
the members order) one at a time, all within ``settings.query_deadline_sec`` (default
28 s, below the servicer's 30 s query timeout); the first successful answer wins.
``current_state``/``historical`` are answered from the store. Every response's
``metadata`` lists which members contributed, their weights and confidences, and
which were dropped and why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twin.core.errors import InvalidRequest
from twin.core.events import new_id
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import WorldModel
from twin.models.domain import (
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Health,
    Hypothesis,
    Impact,
    PredictedState,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)

log = logging.getLogger(__name__)

DEFAULT_MEMBERS = ("gemini", "statistical", "mock")
DEFAULT_WEIGHTS = {"gemini": 0.6, "statistical": 0.3, "mock": 0.1}
DEFAULT_LAST_RESORT = ("mock",)
DEFAULT_BUDGETS = {"gemini": 26.0, "statistical": 10.0, "mock": 2.0}
OTHER_BUDGET = 10.0
OTHER_WEIGHT = 0.1
HYBRID_KEYS = {
    "members", "weights", "last_resort", "fallback_order", "latency_budget_sec", "consensus",
    "hypothesis_match", "member_settings", "query_deadline_sec",
}
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "a", "an", "of", "to", "in", "on", "is", "are", "and", "or", "from", "its", "by", "for", "with", "due", "be"}

MemberFactory = Callable[[str, TwinState, Mapping[str, Any]], WorldModel]


def _registry_factory(name: str, state: TwinState, settings: Mapping[str, Any]) -> WorldModel:
    from twin.models.registry import create_model

    return create_model(name, state, settings)


@dataclass(frozen=True, slots=True)
class Consensus:
    min_models: int = 2
    agreement_threshold: float = 0.25
    min_top_agreement: float = 0.5
    penalty: float = 0.5


@dataclass(slots=True)
class Outcome:
    """One member's part in one answer."""

    name: str
    result: Any = None
    reason: str = ""
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.reason


@dataclass(slots=True)
class _Group:
    texts: dict[str, Hypothesis] = field(default_factory=dict)  # member → its hypothesis
    tokens: set[str] = field(default_factory=set)
    probability: float = 0.0
    contributions: dict[str, float] = field(default_factory=dict)


def tokens(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b) if (a | b) else 0.0


def _is_bound(key: str, metrics: Mapping[str, float]) -> bool:
    """``cpu.lower``/``cpu.upper`` next to ``cpu``: an interval bound, fused with its metric."""
    for suffix in (".lower", ".upper"):
        if key.endswith(suffix) and key[: -len(suffix)] in metrics:
            return True
    return False


def _interp(states: list[PredictedState], t: float, tol: float = 1.0) -> tuple[dict[str, float], float] | None:
    """Metrics and confidence of a member's trajectory at ``t`` (linear, no extrapolation)."""
    if not states:
        return None
    if t < states[0].t - tol or t > states[-1].t + tol:
        return None
    for i, s in enumerate(states):
        if abs(s.t - t) <= tol:
            return dict(s.metrics), s.confidence
        if s.t > t and i > 0:
            a, b = states[i - 1], s
            f = (t - a.t) / (b.t - a.t)
            metrics = {k: a.metrics[k] + f * (b.metrics[k] - a.metrics[k]) for k in a.metrics if k in b.metrics}
            return metrics, a.confidence + f * (b.confidence - a.confidence)
    return None


class HybridWorldModel(WorldModel):
    name = "hybrid"
    version = "2.0.0"

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
        errors: list[str] = []
        members = settings.get("members", list(DEFAULT_MEMBERS))
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            errors.append("settings.members: must be a non-empty list of world model names")
        elif "hybrid" in members:
            errors.append("settings.members: a hybrid cannot contain itself")
        weights = settings.get("weights", {})
        if not isinstance(weights, Mapping):
            errors.append("settings.weights: must be a mapping of member name to weight")
        else:
            for k, v in weights.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    errors.append(f"settings.weights.{k}: must be a finite number >= 0")
        budgets = settings.get("latency_budget_sec", {})
        if isinstance(budgets, Mapping):
            for k, v in budgets.items():
                if not isinstance(v, (int, float)) or v <= 0:
                    errors.append(f"settings.latency_budget_sec.{k}: must be a number > 0")
        elif not isinstance(budgets, (int, float)) or budgets <= 0:
            errors.append("settings.latency_budget_sec: must be a number > 0 or a mapping of member to seconds")
        cons = settings.get("consensus", {})
        if not isinstance(cons, Mapping):
            errors.append("settings.consensus: must be a mapping")
        else:
            for k in cons:
                if k not in Consensus.__dataclass_fields__:
                    errors.append(f"settings.consensus.{k}: unknown key (known: {', '.join(Consensus.__dataclass_fields__)})")
        # Each member's own settings are checked by its class, but a missing API key is
        # not an error here: the hybrid serves without the LLM (degraded). A member whose
        # class cannot be imported is dropped at start and reported in health.
        if isinstance(members, list) and not errors:
            from twin.core.errors import ModelNotFound, ModelUnavailable
            from twin.models.registry import model_class

            for name in members:
                try:
                    member_cls = model_class(name)
                except ModelNotFound as exc:
                    errors.append(f"settings.members: {exc}")
                    continue
                except ModelUnavailable:
                    continue
                inner = cls._member_settings_of(settings, name)
                errors += [
                    f"member {name}: {e}" for e in member_cls.validate_settings(inner, environ) if "API_KEY" not in e
                ]
        return errors

    @staticmethod
    def _member_settings_of(settings: Mapping[str, Any], name: str) -> dict[str, Any]:
        """Top-level non-hybrid keys (e.g. ``model_name``) + ``settings[<name>]`` / ``member_settings[<name>]``."""
        members = set(settings.get("members", DEFAULT_MEMBERS) or ())
        base = {k: v for k, v in settings.items() if k not in HYBRID_KEYS and k not in members and k not in DEFAULT_MEMBERS}
        own = settings.get(name)
        if isinstance(own, Mapping):
            base.update(own)
        extra = (settings.get("member_settings") or {}).get(name)
        if isinstance(extra, Mapping):
            base.update(extra)
        if name == "gemini":
            base.setdefault("forecast_helper", "none")  # the hybrid shares its statistical member
        return base

    def __init__(
        self,
        state: TwinState,
        settings: Mapping[str, Any] | None = None,
        *,
        members: Mapping[str, WorldModel] | None = None,
        member_factory: MemberFactory | None = None,
    ) -> None:
        super().__init__(state, settings)
        self._injected = dict(members or {})
        self._factory = member_factory or _registry_factory
        self.members: dict[str, WorldModel] = {}
        self.unavailable: dict[str, str] = {}
        self._apply_settings()
        self.answers_total = 0
        self.no_consensus_total = 0
        self.all_failed_total = 0
        self.member_failures: dict[str, int] = {}
        self.member_contributions: dict[str, int] = {}
        self.update_errors = 0

    def _apply_settings(self) -> None:
        s = self.settings
        names = s.get("members") or (list(self._injected) if self._injected else list(DEFAULT_MEMBERS))
        self.member_names: list[str] = [str(n) for n in names if str(n) != "hybrid"]
        weights = dict(DEFAULT_WEIGHTS)
        weights.update({k: float(v) for k, v in (s.get("weights") or {}).items()})
        self.weights = {n: weights.get(n, OTHER_WEIGHT) for n in self.member_names}
        self.last_resort = [n for n in s.get("last_resort", DEFAULT_LAST_RESORT) if n in self.member_names]
        if len(self.last_resort) == len(self.member_names):
            self.last_resort = []  # nothing would ever be primary
        order = s.get("fallback_order") or self.member_names
        self.fallback_order = [n for n in order if n in self.member_names] + [n for n in self.member_names if n not in order]
        budgets = s.get("latency_budget_sec", {})
        self.budgets: dict[str, float] = {}
        for n in self.member_names:
            if isinstance(budgets, (int, float)):
                self.budgets[n] = float(budgets)
            else:
                default = DEFAULT_BUDGETS.get(n, OTHER_BUDGET)
                if n == "gemini":
                    inner = self._member_settings_of(s, "gemini")
                    default = float(inner.get("request_timeout_sec", default - 1.0)) + 1.0
                self.budgets[n] = float((budgets or {}).get(n, default))
        self.consensus = Consensus(**{k: type(getattr(Consensus(), k))(v) for k, v in (s.get("consensus") or {}).items() if k in Consensus.__dataclass_fields__})
        self.hypothesis_match = float(s.get("hypothesis_match", 0.6))
        # Natural-language queries try members one after another; together they must stay
        # below the servicer's query timeout (30 s by default).
        self.query_deadline = float(s.get("query_deadline_sec", 28.0))

    # ------------------------------------------------------------ lifecycle
    async def initialize(self) -> None:
        self.members = {}
        self.unavailable = {}
        for name in self.member_names:
            try:
                member = self._injected.get(name) or self._factory(name, self.state, self._member_settings_of(self.settings, name))
            except Exception as exc:  # noqa: BLE001 - a missing member is reported, not fatal
                self.unavailable[name] = f"cannot be created: {exc}"
                log.warning("hybrid: member %s unavailable: %s", name, exc)
                continue
            try:
                await member.initialize()
            except Exception as exc:  # noqa: BLE001
                self.unavailable[name] = f"failed to initialise: {type(exc).__name__}: {exc}"
                log.warning("hybrid: member %s failed to initialise: %s", name, exc)
                continue
            self.members[name] = member
        self._wire_forecasts()
        self.initialized = True

    def _wire_forecasts(self) -> None:
        """Lets the LLM member ground its prompts in the statistical member's forecasts."""
        stat = self.members.get("statistical")
        for name, member in self.members.items():
            hook = getattr(member, "set_forecaster", None)
            if stat is None or name == "statistical" or not callable(hook):
                continue

            async def forecast(system: str | None, horizon: int, now: float | None, _m: WorldModel = stat) -> SimulationResult:
                return await _m.simulate(SimulationRequest(new_id(), "forecast", [], max(1, horizon), {"system": system} if system else {}, now))

            fn = getattr(stat, "current_anomalies", None)
            hook(forecast, fn if callable(fn) else None)

    async def shutdown(self) -> None:
        for name, member in list(self.members.items()):
            try:
                await member.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("hybrid: member %s shutdown failed", name)
        self.initialized = False

    async def reload(self, settings: Mapping[str, Any] | None = None) -> None:
        await self.shutdown()
        if settings is not None:
            self.settings = dict(settings)
            self._apply_settings()
        await self.initialize()

    def update(self, batch: EventBatch) -> None:
        for name, member in self.members.items():
            try:
                member.update(batch)
            except Exception:  # noqa: BLE001 - one member must not stop ingestion
                self.update_errors += 1
                log.exception("hybrid: member %s update failed", name)

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        out: dict[str, float] = {}
        results = await asyncio.gather(*(m.calibrate(record) for m in self.members.values()), return_exceptions=True)
        for name, res in zip(self.members, results):
            if isinstance(res, BaseException):
                log.warning("hybrid: member %s calibrate failed: %s", name, res)
                continue
            out.update({f"{name}.{k}": v for k, v in (res or {}).items()})
        return out

    def reset(self) -> None:
        for member in self.members.values():
            member.reset()

    async def health(self) -> Health:
        if not self.initialized:
            return Health("not_initialized", [], {}, self.name, self.version)
        issues = [f"member {n} unavailable: {why}" for n, why in self.unavailable.items()]
        usable: list[str] = []
        perf: dict[str, float] = {}
        for name, member in self.members.items():
            try:
                h = await asyncio.wait_for(member.health(), 5.0)
            except Exception as exc:  # noqa: BLE001
                issues.append(f"member {name}: health check failed: {exc}")
                continue
            perf[f"member.{name}.healthy"] = 1.0 if h.status == "healthy" else 0.0
            if h.status in ("healthy", "degraded"):
                usable.append(name)
            if h.status != "healthy":
                issues.append(f"member {name} is {h.status}" + (": " + "; ".join(h.issues) if h.issues else ""))
        perf["members_usable"] = float(len(usable))
        primary_usable = [n for n in usable if n not in self.last_resort]
        if not usable:
            status = "unhealthy"
        elif issues or not primary_usable:
            status = "degraded"
            if not primary_usable:
                issues.append("only last-resort members (" + ", ".join(usable) + ") are answering")
        else:
            status = "healthy"
        return Health(status, issues, perf, self.name, self.version)

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {
            "hybrid_answers_total": float(self.answers_total),
            "hybrid_no_consensus_total": float(self.no_consensus_total),
            "hybrid_all_failed_total": float(self.all_failed_total),
            "hybrid_members_active": float(len(self.members)),
            "hybrid_update_errors_total": float(self.update_errors),
        }
        for n, c in self.member_failures.items():
            m[f"hybrid_member_failures_total.{n}"] = float(c)
        for n, c in self.member_contributions.items():
            m[f"hybrid_member_contributions_total.{n}"] = float(c)
        for name, member in self.members.items():
            try:
                for k, v in member.metrics().items():
                    m[f"{name}.{k}"] = float(v)
            except Exception:  # noqa: BLE001
                log.exception("hybrid: member %s metrics failed", name)
        return m

    # ------------------------------------------------------------ fan-out
    async def _ask(self, name: str, op: str, request: Any, limit: float | None = None) -> Outcome:
        member = self.members[name]
        budget = self.budgets.get(name, OTHER_BUDGET)
        if limit is not None and limit < budget:
            budget = max(0.0, limit)
        t0 = time.perf_counter()
        cm = asyncio.timeout(budget)
        try:
            async with cm:
                res = await getattr(member, op)(request)
        except TimeoutError as exc:
            if cm.expired():
                return Outcome(name, None, f"timed out after {budget:g}s (latency budget)", time.perf_counter() - t0)
            return Outcome(name, None, f"failed: TimeoutError: {exc}", time.perf_counter() - t0)
        except InvalidRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing member is dropped from this answer
            log.warning("hybrid: member %s %s failed: %s", name, op, exc)
            return Outcome(name, None, f"failed: {type(exc).__name__}: {exc}", time.perf_counter() - t0)
        elapsed = time.perf_counter() - t0
        if not res.success:
            return Outcome(name, res, f"no answer: {res.explanation or 'success=false'}", elapsed)
        if op == "simulate" and not res.future_states:
            return Outcome(name, res, "no future states", elapsed)
        if op == "diagnose" and not res.hypotheses:
            return Outcome(name, res, "no hypotheses", elapsed)
        return Outcome(name, res, "", elapsed)

    async def _fan_out(self, op: str, request: Any) -> tuple[list[Outcome], dict[str, str]]:
        """Answers from the primary members, or the last-resort ones if none answered."""
        dropped = {n: f"unavailable: {why}" for n, why in self.unavailable.items()}
        tiers = [[n for n in self.member_names if n in self.members and n not in self.last_resort], [n for n in self.last_resort if n in self.members]]
        good: list[Outcome] = []
        for tier in tiers:
            if not tier:
                continue
            tasks = [asyncio.ensure_future(self._ask(n, op, request)) for n in tier]
            try:
                outcomes = await asyncio.gather(*tasks)
            except BaseException:
                # InvalidRequest (the request is malformed for every member) or cancellation.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            for o in outcomes:
                if o.ok:
                    good.append(o)
                else:
                    dropped[o.name] = o.reason
                    self.member_failures[o.name] = self.member_failures.get(o.name, 0) + 1
            if good:
                break
        for n in self.last_resort:
            if n in self.members and n not in dropped and all(o.name != n for o in good):
                dropped[n] = "last resort, not needed"
        for o in good:
            self.member_contributions[o.name] = self.member_contributions.get(o.name, 0) + 1
        return good, dropped

    def _shares(self, good: list[Outcome]) -> tuple[dict[str, float], dict[str, float]]:
        """(normalised configured weights, normalised weight × confidence) of the contributors."""
        w = {o.name: self.weights.get(o.name, OTHER_WEIGHT) for o in good}
        tw = sum(w.values())
        base = {n: (v / tw if tw > 0 else 1.0 / len(w)) for n, v in w.items()}
        eff = {o.name: w[o.name] * max(0.0, float(o.result.confidence)) for o in good}
        te = sum(eff.values())
        eff = {n: (v / te) for n, v in eff.items()} if te > 0 else dict(base)
        return base, eff

    def _metadata(self, good: list[Outcome], dropped: dict[str, str], eff: dict[str, float]) -> dict[str, str]:
        meta = {
            "model": self.name,
            "members": ",".join(o.name for o in good),
            "weights": ",".join(f"{o.name}={self.weights.get(o.name, OTHER_WEIGHT):g}" for o in good),
            "dropped": ",".join(dropped),
        }
        for o in good:
            p = f"member.{o.name}"
            meta[f"{p}.weight"] = f"{self.weights.get(o.name, OTHER_WEIGHT):g}"
            meta[f"{p}.confidence"] = f"{float(o.result.confidence):.4g}"
            meta[f"{p}.effective_weight"] = f"{eff.get(o.name, 0.0):.4g}"
            meta[f"{p}.latency_ms"] = f"{o.latency * 1000:.1f}"
        for n, why in dropped.items():
            meta[f"dropped.{n}"] = why
        return meta

    def _failure_text(self, what: str, dropped: dict[str, str]) -> str:
        reasons = "; ".join(f"{n}: {why}" for n, why in dropped.items() if why != "last resort, not needed")
        return f"hybrid: no member could {what} ({reasons or 'no members'})"

    # ------------------------------------------------------------ RPCs
    async def query(self, request: QueryRequest) -> QueryResult:
        if request.query_type != "natural_language":
            return await super().query(request)
        dropped = {n: f"unavailable: {why}" for n, why in self.unavailable.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.query_deadline
        for name in self.fallback_order:
            if name not in self.members:
                continue
            remaining = deadline - loop.time()
            if remaining <= 0.05:
                dropped[name] = f"not asked: settings.query_deadline_sec={self.query_deadline:g}s used up by earlier members"
                continue
            o = await self._ask(name, "query", request, remaining)
            if o.ok:
                res: QueryResult = o.result
                meta = {f"{name}.{k}": v for k, v in res.metadata.items()}
                meta.update(self._metadata([o], dropped, {name: 1.0}))
                meta["answered_by"] = name
                self.answers_total += 1
                return QueryResult(True, res.result, res.confidence, f"[{name}] {res.explanation}", meta)
            dropped[name] = o.reason
            self.member_failures[name] = self.member_failures.get(name, 0) + 1
        self.all_failed_total += 1
        return QueryResult(False, None, 0.0, self._failure_text("answer the question", dropped), self._metadata([], dropped, {}))

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        good, dropped = await self._fan_out("simulate", request)
        if not good:
            self.all_failed_total += 1
            return SimulationResult(False, explanation=self._failure_text("simulate", dropped), metadata=self._metadata([], dropped, {}))
        self.answers_total += 1
        base, eff = self._shares(good)
        order = sorted(good, key=lambda o: -eff[o.name])
        grid = [s.t for s in sorted(order[0].result.future_states, key=lambda s: s.t)]
        trajectories = {o.name: sorted(o.result.future_states, key=lambda s: s.t) for o in good}
        spreads: list[float] = []
        states: list[PredictedState] = []
        envelopes: list[dict[str, tuple[float, float]]] = []
        for t in grid:
            at = {n: _interp(tr, t) for n, tr in trajectories.items()}
            at = {n: v for n, v in at.items() if v is not None}
            names = sorted({k for metrics, _ in at.values() for k in metrics if not _is_bound(k, metrics)})
            fused: dict[str, float] = {}
            envelope: dict[str, tuple[float, float]] = {}
            for k in names:
                vals = [(n, metrics, conf) for n, (metrics, conf) in at.items() if k in metrics and math.isfinite(metrics[k])]
                if not vals:
                    continue
                ws = [self.weights.get(n, OTHER_WEIGHT) * max(0.0, c) for n, _, c in vals]
                if sum(ws) <= 0:
                    ws = [self.weights.get(n, OTHER_WEIGHT) for n, _, _ in vals]
                total = sum(ws)
                if total <= 0:
                    ws, total = [1.0] * len(vals), float(len(vals))
                xs = [m[k] for _, m, _ in vals]
                value = xs[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, xs)) / total
                fused[k] = value
                # Prediction intervals (``<metric>.lower``/``.upper``, e.g. from the statistical
                # member): weighted mean of the bounds, a member without bounds counting as a
                # point (lower = upper = its value), so the fused interval holds the fused value.
                los = [min(m.get(f"{k}.lower", m[k]), m[k]) for _, m, _ in vals]
                his = [max(m.get(f"{k}.upper", m[k]), m[k]) for _, m, _ in vals]
                if any(f"{k}.lower" in m or f"{k}.upper" in m for _, m, _ in vals):
                    fused[f"{k}.lower"] = los[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, los)) / total
                    fused[f"{k}.upper"] = his[0] if len(vals) == 1 else sum(w * x for w, x in zip(ws, his)) / total
                if len(vals) >= 2:
                    envelope[k] = (min(los), max(his))
                    spreads.append((max(xs) - min(xs)) / max(abs(value), 1e-9))
            wsum = sum(self.weights.get(n, OTHER_WEIGHT) for n in at)
            conf = sum(self.weights.get(n, OTHER_WEIGHT) * c for n, (_, c) in at.items()) / wsum if wsum > 0 else 0.0
            states.append(PredictedState(t, fused, conf, "fused from " + ", ".join(sorted(at))))
            envelopes.append(envelope)
        mean_spread = sum(spreads) / len(spreads) if spreads else math.nan
        max_spread = max(spreads) if spreads else math.nan
        n = len(good)
        cons = self.consensus
        if n < cons.min_models:
            agreed, why = False, f"only {n} member(s) answered (consensus needs {cons.min_models})"
        elif n == 1:
            agreed, why = True, "single member answered (settings.consensus.min_models <= 1)"
        elif not spreads:
            agreed, why = False, "the members predicted no metric in common"
        elif mean_spread > cons.agreement_threshold:
            agreed, why = False, f"members disagree: mean relative spread {mean_spread:.1%} > {cons.agreement_threshold:.0%} (max {max_spread:.1%})"
        else:
            agreed, why = True, f"consensus of {n} members: mean relative spread {mean_spread:.1%} <= {cons.agreement_threshold:.0%}"
        confidence = sum(base[o.name] * float(o.result.confidence) for o in good)
        if not agreed:
            self.no_consensus_total += 1
            confidence *= cons.penalty
            for st, env in zip(states, envelopes):
                st.confidence *= cons.penalty
                # Disagreement: every metric's interval widens to cover all members.
                for k, (lo, hi) in env.items():
                    st.metrics[f"{k}.lower"] = min(lo, st.metrics.get(f"{k}.lower", lo))
                    st.metrics[f"{k}.upper"] = max(hi, st.metrics.get(f"{k}.upper", hi))
        # The result-level band: members declaring ``uncertainty_metric`` (the statistical
        # model) give an interval of that metric's value - then it is the fused interval
        # of that metric at the horizon; otherwise it is a band around the confidence.
        unc_metric = next((o.result.metadata.get("uncertainty_metric") for o in order if o.result.metadata.get("uncertainty_metric")), None)
        last = states[-1].metrics if states else {}
        if unc_metric and f"{unc_metric}.lower" in last:
            lower, upper = last[f"{unc_metric}.lower"], last[f"{unc_metric}.upper"]
        else:
            unc_metric = None
            banded = [o for o in good if not o.result.metadata.get("uncertainty_metric")] or good
            if agreed:
                tw = sum(eff[o.name] for o in banded) or 1.0
                lower = sum(eff[o.name] * float(o.result.uncertainty_lower) for o in banded) / tw
                upper = sum(eff[o.name] * float(o.result.uncertainty_upper) for o in banded) / tw
            else:
                lower = min(float(o.result.uncertainty_lower) for o in banded)
                upper = max(float(o.result.uncertainty_upper) for o in banded)
            lower, upper = min(lower, confidence), max(upper, confidence)
        impacts = [(o, o.result.impact) for o in good if o.result.impact is not None]
        impact = None
        if impacts:
            tw = sum(eff[o.name] for o, _ in impacts) or 1.0
            impact = Impact(
                sum(eff[o.name] * i.cost_impact for o, i in impacts) / tw,
                sum(eff[o.name] * i.performance_impact for o, i in impacts) / tw,
                sum(eff[o.name] * i.reliability_impact for o, i in impacts) / tw,
                impacts[0][1].cost_currency,
                "; ".join(f"[{o.name}] {i.impact_description}" for o, i in impacts if i.impact_description),
            )
        shares = ", ".join(f"{o.name} {eff[o.name]:.2f}" for o in order)
        explanation = (
            f"hybrid simulation fused from {shares} (weight x confidence); "
            + (why if agreed else f"NO CONSENSUS - {why}; confidence lowered x{cons.penalty:g}")
            + "".join(f" | [{o.name}] {o.result.explanation}" for o in order if o.result.explanation)
        )
        meta = self._metadata(good, dropped, eff)
        meta.update(
            {
                "fusion": "confidence_weighted_mean",
                "consensus": str(agreed).lower(),
                "consensus_reason": why,
                "agreement.mean_relative_spread": "" if math.isnan(mean_spread) else f"{mean_spread:.4g}",
                "agreement.max_relative_spread": "" if math.isnan(max_spread) else f"{max_spread:.4g}",
                "time_grid": order[0].name,
            }
        )
        if unc_metric:
            meta["uncertainty_metric"] = unc_metric
        custom = {"members_contributing": float(n), "consensus": 1.0 if agreed else 0.0}
        if spreads:
            custom["mean_relative_spread"] = mean_spread
            custom["max_relative_spread"] = max_spread
        return SimulationResult(
            True, states, confidence, lower, upper, explanation, impact, meta, custom, sum(o.result.scenarios_processed for o in good)
        )

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        good, dropped = await self._fan_out("diagnose", request)
        if not good:
            self.all_failed_total += 1
            return DiagnosisResult(False, explanation=self._failure_text("diagnose", dropped), metadata=self._metadata([], dropped, {}))
        self.answers_total += 1
        base, eff = self._shares(good)
        order = sorted(good, key=lambda o: -eff[o.name])
        groups: list[_Group] = []
        tops: dict[str, _Group] = {}
        for o in order:
            hyps = sorted(o.result.hypotheses, key=lambda h: -h.probability)
            total = sum(max(0.0, h.probability) for h in hyps)
            scale = 1.0 / total if total > 1.0 else 1.0  # a member's probabilities may not sum above 1
            for i, h in enumerate(hyps):
                tk = tokens(h.hypothesis)
                best, best_sim = None, 0.0
                for g in groups:
                    if o.name in g.texts:
                        continue
                    sim = jaccard(tk, g.tokens)
                    if sim > best_sim:
                        best, best_sim = g, sim
                if best is None or best_sim < self.hypothesis_match:
                    best = _Group(tokens=set(tk))
                    groups.append(best)
                best.texts[o.name] = h
                contribution = eff[o.name] * max(0.0, h.probability) * scale
                best.contributions[o.name] = contribution
                best.probability += contribution
                if i == 0:
                    tops[o.name] = best
        groups.sort(key=lambda g: -g.probability)
        hypotheses = []
        for rank, g in enumerate(groups, 1):
            lead = max(g.contributions, key=lambda n: g.contributions[n])
            h0 = g.texts[lead]
            evidence: list[str] = []
            for n in g.texts:
                for e in g.texts[n].evidence:
                    if e not in evidence:
                        evidence.append(e)
            reasoning = f"supported by {', '.join(f'{n} ({g.contributions[n]:.3f})' for n in g.texts)}"
            reasoning += "".join(f" | [{n}] {g.texts[n].reasoning}" for n in g.texts if g.texts[n].reasoning)
            hypotheses.append(Hypothesis(h0.hypothesis, round(g.probability, 12), reasoning, evidence[:10], rank))
        top = groups[0]
        support = sum(eff[n] for n, g in tops.items() if g is top)
        n = len(good)
        cons = self.consensus
        if n < cons.min_models:
            agreed, why = False, f"only {n} member(s) answered (consensus needs {cons.min_models})"
        elif support < cons.min_top_agreement:
            agreed, why = False, f"members disagree on the top hypothesis: {support:.0%} of the weight supports it (< {cons.min_top_agreement:.0%})"
        else:
            agreed, why = True, f"consensus of {n} members: {support:.0%} of the weight has the same top hypothesis"
        confidence = sum(base[o.name] * float(o.result.confidence) for o in good)
        if not agreed:
            self.no_consensus_total += 1
            confidence *= cons.penalty
        lead_member = next((o for o in order if tops.get(o.name) is top), order[0])
        supporting: list[str] = []
        for o in order:
            for e in o.result.supporting_evidence:
                if e not in supporting:
                    supporting.append(e)
        shares = ", ".join(f"{o.name} {eff[o.name]:.2f}" for o in order)
        explanation = (
            f"hybrid diagnosis: hypotheses of {shares} (weight x confidence) merged and re-ranked; "
            + (why if agreed else f"NO CONSENSUS - {why}; confidence lowered x{cons.penalty:g}")
        )
        meta = self._metadata(good, dropped, eff)
        meta.update(
            {
                "fusion": "linear_opinion_pool",
                "consensus": str(agreed).lower(),
                "consensus_reason": why,
                "agreement.top_support": f"{support:.4g}",
                "hypotheses_merged": str(sum(len(g.texts) for g in groups) - len(groups)),
            }
        )
        return DiagnosisResult(True, hypotheses, lead_member.result.causal_chain, confidence, explanation, supporting[:20], meta)
