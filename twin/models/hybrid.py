"""The ``hybrid`` world model: several world models asked at once, answers fused.

Members (``settings.members``, default ``gemini``, ``statistical``, ``mock``) are
built from the registry over the runtime's shared ``TwinState``; a member that
cannot be built or initialised (missing optional dependency, no API key, a bug) is
dropped and reported in ``health`` - the hybrid keeps serving with the rest.
``update``/``calibrate``/``reset``/``shutdown`` fan out to every member.

Per request (Simulate, Diagnose) the *primary* members run concurrently, each
within its latency budget (``settings.latency_budget_sec``; a ``LatencyBounded`` member
declares its own default); members listed in ``settings.last_resort`` (default ``mock``)
are asked only when no primary member answered. Successful answers are fused by the
pure functions of ``twin.models.fusion`` (weighted means, opinion pools, consensus).

A ``ForecastConsumer`` member (the LLM) is grounded in the forecasts of the
``statistical`` member instead of starting a private forecaster.

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
import time
from collections.abc import Callable, Mapping
from typing import Any

from twin.core.errors import InvalidRequest, ModelError, ModelNotFound, ModelUnavailable
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import WorldModel
from twin.models.capabilities import (
    BacktestReporter,
    ForecastConsumer,
    LatencyBounded,
    Refittable,
    anomaly_source_from_model,
    forecaster_from_model,
)
from twin.models.domain import (
    DiagnosisRequest,
    DiagnosisResult,
    EventBatch,
    Health,
    QueryRequest,
    QueryResult,
    SimulationRequest,
    SimulationResult,
)
from twin.models.fusion import (
    OTHER_WEIGHT,
    Consensus,
    Fused,
    Outcome,
    R,
    fuse_diagnoses,
    fuse_plan_outcomes,
    fuse_simulations,
    member_metadata,
    member_shares,
)
from twin.models.registry import create_model, model_class
from twin.models.settings import parse_settings

log = logging.getLogger(__name__)

DEFAULT_MEMBERS = ("gemini", "statistical", "mock")
DEFAULT_WEIGHTS = {"gemini": 0.6, "statistical": 0.3, "mock": 0.1}
DEFAULT_LAST_RESORT = ("mock",)
DEFAULT_BUDGETS = {"gemini": 26.0, "statistical": 10.0, "mock": 2.0}
OTHER_BUDGET = 10.0
FORECAST_PROVIDER = "statistical"  # the member whose forecasts ground a ForecastConsumer
HYBRID_KEYS = {
    "members", "weights", "last_resort", "fallback_order", "latency_budget_sec", "consensus",
    "hypothesis_match", "member_settings", "query_deadline_sec",
}

MemberFactory = Callable[[str, TwinState, Mapping[str, Any]], WorldModel]


def _registry_factory(name: str, state: TwinState, settings: Mapping[str, Any]) -> WorldModel:
    return create_model(name, state, settings)


class HybridWorldModel(WorldModel):
    name = "hybrid"
    version = "2.0.0"

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str]
    ) -> list[str]:
        errors: list[str] = []
        members = settings.get("members", list(DEFAULT_MEMBERS))
        if (
            not isinstance(members, list)
            or not members
            or not all(isinstance(m, str) for m in members)
        ):
            errors.append("settings.members: must be a non-empty list of world model names")
        elif "hybrid" in members:
            errors.append("settings.members: a hybrid cannot contain itself")
        weights = settings.get("weights", {})
        if not isinstance(weights, Mapping):
            errors.append("settings.weights: must be a mapping of member name to weight")
        else:
            for k, v in weights.items():
                if (
                    not isinstance(v, (int, float))
                    or isinstance(v, bool)
                    or not math.isfinite(v)
                    or v < 0
                ):
                    errors.append(f"settings.weights.{k}: must be a finite number >= 0")
        budgets = settings.get("latency_budget_sec", {})
        if isinstance(budgets, Mapping):
            for k, v in budgets.items():
                if not isinstance(v, (int, float)) or v <= 0:
                    errors.append(f"settings.latency_budget_sec.{k}: must be a number > 0")
        elif not isinstance(budgets, (int, float)) or budgets <= 0:
            errors.append(
                "settings.latency_budget_sec: must be a number > 0 or a mapping of member to "
                "seconds"
            )
        cons = settings.get("consensus", {})
        if not isinstance(cons, Mapping):
            errors.append("settings.consensus: must be a mapping")
        else:
            for k in cons:
                if k not in Consensus.__dataclass_fields__:
                    errors.append(
                        f"settings.consensus.{k}: unknown key (known: "
                        f"{', '.join(Consensus.__dataclass_fields__)})"
                    )
        # Each member's own settings are checked by its class, but a missing API key is
        # not an error here: the hybrid serves without the LLM (degraded). A member whose
        # class cannot be imported is dropped at start and reported in health.
        if isinstance(members, list) and not errors:
            for name in members:
                try:
                    member_cls = model_class(name)
                except ModelNotFound as exc:
                    errors.append(f"settings.members: {exc}")
                    continue
                except ModelUnavailable:
                    continue
                inner = cls._member_settings_of(settings, name, member_cls)
                errors += [
                    f"member {name}: {e}"
                    for e in member_cls.validate_settings(inner, environ)
                    if "API_KEY" not in e
                ]
        return errors

    @staticmethod
    def _member_settings_of(
        settings: Mapping[str, Any], name: str, member_cls: type[Any] | None
    ) -> dict[str, Any]:
        """Top-level non-hybrid keys (``model_name``, ...) + ``settings[<name>]`` and
        ``member_settings[<name>]``.

        A ``ForecastConsumer`` gets its settings for a shared forecaster: the hybrid
        grounds it in its own statistical member.
        """
        members = set(settings.get("members", DEFAULT_MEMBERS) or ())
        base = {
            k: v
            for k, v in settings.items()
            if k not in HYBRID_KEYS and k not in members and k not in DEFAULT_MEMBERS
        }
        own = settings.get(name)
        if isinstance(own, Mapping):
            base.update(own)
        extra = (settings.get("member_settings") or {}).get(name)
        if isinstance(extra, Mapping):
            base.update(extra)
        if member_cls is not None and issubclass(member_cls, ForecastConsumer):
            base = member_cls.shared_forecaster_settings(base)
        return base

    def _member_class(self, name: str) -> type[Any] | None:
        """The class a member is (injected) or will be (registry), None when unknown."""
        if name in self._injected:
            return type(self._injected[name])
        try:
            return model_class(name)
        except ModelError:
            return None

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
        names = s.get("members") or (
            list(self._injected) if self._injected else list(DEFAULT_MEMBERS)
        )
        self.member_names: list[str] = [str(n) for n in names if str(n) != "hybrid"]
        weights = dict(DEFAULT_WEIGHTS)
        weights.update({k: float(v) for k, v in (s.get("weights") or {}).items()})
        self.weights = {n: weights.get(n, OTHER_WEIGHT) for n in self.member_names}
        self.last_resort = [
            n for n in s.get("last_resort", DEFAULT_LAST_RESORT) if n in self.member_names
        ]
        if len(self.last_resort) == len(self.member_names):
            self.last_resort = []  # nothing would ever be primary
        order = s.get("fallback_order") or self.member_names
        self.fallback_order = [n for n in order if n in self.member_names] + [
            n for n in self.member_names if n not in order
        ]
        budgets = s.get("latency_budget_sec", {})
        self.budgets: dict[str, float] = {}
        for n in self.member_names:
            if isinstance(budgets, (int, float)):
                self.budgets[n] = float(budgets)
            else:
                default = DEFAULT_BUDGETS.get(n, OTHER_BUDGET)
                cls = self._member_class(n)
                if cls is not None and issubclass(cls, LatencyBounded):
                    default = cls.latency_budget_sec(self._member_settings_of(s, n, cls))
                self.budgets[n] = float((budgets or {}).get(n, default))
        self.consensus = parse_settings(
            Consensus, s.get("consensus") or {}, prefix="settings.consensus"
        )
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
                member = self._injected.get(name) or self._factory(
                    name,
                    self.state,
                    self._member_settings_of(self.settings, name, self._member_class(name)),
                )
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
        """Grounds every ``ForecastConsumer`` member in the forecasting member's forecasts."""
        provider = self.members.get(FORECAST_PROVIDER)
        if provider is None:
            return
        for name, member in self.members.items():
            if name != FORECAST_PROVIDER and isinstance(member, ForecastConsumer):
                member.set_forecaster(
                    forecaster_from_model(provider), anomaly_source_from_model(provider)
                )

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
        results = await asyncio.gather(
            *(m.calibrate(record) for m in self.members.values()), return_exceptions=True
        )
        for name, res in zip(self.members, results):
            if isinstance(res, BaseException):
                log.warning("hybrid: member %s calibrate failed: %s", name, res)
                continue
            out.update({f"{name}.{k}": v for k, v in (res or {}).items()})
        return out

    def reset(self) -> None:
        for member in self.members.values():
            member.reset()

    def backtest_error(self, system: str, metric: str) -> tuple[float, float] | None:
        """The first member's that knows one (the statistical forecaster's)."""
        for member in self.members.values():
            if isinstance(member, BacktestReporter):
                bt = member.backtest_error(system, metric)
                if bt is not None:
                    return bt
        return None

    def refit_system(self, system: str) -> int:
        return sum(
            m.refit_system(system) for m in self.members.values() if isinstance(m, Refittable)
        )

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
                issues.append(
                    f"member {name} is {h.status}"
                    + (": " + "; ".join(h.issues) if h.issues else "")
                )
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
                return Outcome(
                    name,
                    None,
                    f"timed out after {budget:g}s (latency budget)",
                    time.perf_counter() - t0,
                )
            return Outcome(name, None, f"failed: TimeoutError: {exc}", time.perf_counter() - t0)
        except InvalidRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing member is dropped from this answer
            log.warning("hybrid: member %s %s failed: %s", name, op, exc)
            return Outcome(
                name, None, f"failed: {type(exc).__name__}: {exc}", time.perf_counter() - t0
            )
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
        tiers = [
            [n for n in self.member_names if n in self.members and n not in self.last_resort],
            [n for n in self.last_resort if n in self.members],
        ]
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

    def _metadata(
        self, good: list[Outcome], dropped: dict[str, str], eff: dict[str, float]
    ) -> dict[str, str]:
        return member_metadata(self.name, self.weights, good, dropped, eff)

    def _failure_text(self, what: str, dropped: dict[str, str]) -> str:
        reasons = "; ".join(
            f"{n}: {why}" for n, why in dropped.items() if why != "last resort, not needed"
        )
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
                dropped[name] = (
                    f"not asked: settings.query_deadline_sec={self.query_deadline:g}s used up by "
                    "earlier members"
                )
                continue
            o = await self._ask(name, "query", request, remaining)
            if o.ok:
                res: QueryResult = o.result
                meta = {f"{name}.{k}": v for k, v in res.metadata.items()}
                meta.update(self._metadata([o], dropped, {name: 1.0}))
                meta["answered_by"] = name
                self.answers_total += 1
                return QueryResult(
                    True, res.result, res.confidence, f"[{name}] {res.explanation}", meta
                )
            dropped[name] = o.reason
            self.member_failures[name] = self.member_failures.get(name, 0) + 1
        self.all_failed_total += 1
        return QueryResult(
            False,
            None,
            0.0,
            self._failure_text("answer the question", dropped),
            self._metadata([], dropped, {}),
        )

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        good, dropped = await self._fan_out("simulate", request)
        if not good:
            self.all_failed_total += 1
            return SimulationResult(
                False,
                explanation=self._failure_text("simulate", dropped),
                metadata=self._metadata([], dropped, {}),
            )
        self.answers_total += 1
        if request.simulation_type == "compare":
            return self._compare(good, dropped)
        fused = fuse_simulations(good, self.weights, self.consensus)
        return self._finish(fused, good, dropped)

    def _compare(self, good: list[Outcome], dropped: dict[str, str]) -> SimulationResult:
        """Plan outcomes fused per plan (members that ranked plans), ranked again; the
        answer's own states and impact are the best plan's."""
        outcomes = fuse_plan_outcomes(good, self.weights, self.consensus)
        if not outcomes:
            self.all_failed_total += 1
            why = "; ".join(f"{o.name}: {o.result.explanation}" for o in good)
            return SimulationResult(
                False,
                explanation=f"hybrid: no member ranked the plans ({why})",
                metadata=self._metadata(good, dropped, {}),
            )
        best = min(outcomes, key=lambda o: o.rank)
        ranked = [o for o in good if o.result.plan_outcomes]
        _, eff = member_shares(ranked, self.weights)
        expl = "hybrid plan comparison fused from " + ", ".join(
            f"{o.name} {eff[o.name]:.2f}" for o in ranked
        )
        expl += "; ranking: " + ", ".join(
            f"{o.rank}. {o.plan_id} {o.utility:+.4g}"
            for o in sorted(outcomes, key=lambda o: o.rank)
        )
        expl += "".join(f" | [{o.name}] {o.result.explanation}" for o in ranked)
        meta = self._metadata(ranked, dropped, eff)
        meta.update(
            {
                "fusion": "per_plan_confidence_weighted",
                "best_plan": best.plan_id,
                "plans": str(len(outcomes)),
            }
        )
        unused = [o.name for o in good if not o.result.plan_outcomes]
        if unused:
            meta["members_without_plan_outcomes"] = ",".join(unused)
        result = SimulationResult(
            True,
            best.future_states,
            best.confidence,
            0.0,
            0.0,
            expl,
            best.impact,
            meta,
            {"best_utility": best.utility},
            len(outcomes),
        )
        result.plan_outcomes = outcomes
        return result

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        good, dropped = await self._fan_out("diagnose", request)
        if not good:
            self.all_failed_total += 1
            return DiagnosisResult(
                False,
                explanation=self._failure_text("diagnose", dropped),
                metadata=self._metadata([], dropped, {}),
            )
        self.answers_total += 1
        fused = fuse_diagnoses(good, self.weights, self.consensus, self.hypothesis_match)
        return self._finish(fused, good, dropped)

    def _finish(self, fused: Fused[R], good: list[Outcome], dropped: dict[str, str]) -> R:
        """Counts a disagreement and puts the membership report before the fusion's."""
        if not fused.agreed:
            self.no_consensus_total += 1
        result = fused.result
        result.metadata = {**self._metadata(good, dropped, fused.effective), **result.metadata}
        return result
