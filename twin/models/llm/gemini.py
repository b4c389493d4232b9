"""The ``gemini`` world model: LLM reasoning grounded in the twin's state.

Each natural-language Query, Simulate and Diagnose builds a bounded summary of the
state (:mod:`grounding`), runs a LangChain chain (prompt template → chat model) with
timeouts, retries, a concurrency limit and a per-minute budget (:mod:`runner`), and
validates the JSON answer against a schema (:mod:`schemas`) before mapping it to the
domain types. ``current_state`` and ``historical`` queries are answered from the
store like every model.

The chat model is ``ChatGoogleGenerativeAI`` (Gemini) by default, but any LangChain
chat model can be configured (:mod:`chat_factory`) or injected::

    GeminiWorldModel(state, settings, chat_model=my_chat_model)
    GeminiWorldModel(state, settings, chat_model_factory=lambda settings: ...)

Forecasts from the statistical layer are included in the grounding when a
forecaster is available: injected (``forecaster=`` / :meth:`set_forecaster`, which is
how ``hybrid`` shares its statistical member) or, with ``settings.forecast_helper``
``auto`` (default) / ``statistical``, a private ``statistical`` model fed by
``update``. Without an API key the model starts, reports ``unhealthy`` health with
the reason and answers in-band ``success=false``; ``validate_settings`` reports it
before start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from twin.core.events import iso, parse_time
from twin.core.state import CalibrationRecord, TwinState
from twin.models.base import WorldModel
from twin.models.capabilities import (
    AnomalySource,
    Forecaster,
    anomaly_source_from_model,
    forecaster_from_model,
)
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
from twin.models.llm import chat_factory, grounding
from twin.models.llm.budget import UsageStats
from twin.models.llm.runner import LLMFailure, LLMRunner, RunInfo, RunnerConfig
from twin.models.llm.schemas import AnswerError, DiagnosisAnswer, QueryAnswer, SimulationAnswer
from twin.models.state_queries import requested_system

log = logging.getLogger(__name__)

DEGRADED_AFTER_FAILURES = 3


def format_anomaly(item: Any) -> str:
    """One entry of ``current_anomalies()`` (a string or a mapping) as a prompt line."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        key = "/".join(str(item[k]) for k in ("system", "source", "metric", "name") if item.get(k))
        score = item.get("score")
        since = f" since {item['since']}" if item.get("since") else ""
        if isinstance(score, (int, float)):
            return f"{key or item} (statistical anomaly score {score:.4f}{since})"
        return f"{key or item}{since}"
    return str(item)


class GeminiWorldModel(WorldModel):
    name = "gemini"
    version = "2.0.0"

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str]
    ) -> list[str]:
        errors = chat_factory.validate(settings, environ)
        try:
            errors += RunnerConfig.from_settings(settings).problems()
        except (TypeError, ValueError) as exc:
            errors.append(f"settings: a timeout/retry/budget value is not a number ({exc})")
        try:
            grounding.GroundingConfig.from_settings(settings)
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
        helper = str(settings.get("forecast_helper", "auto"))
        if helper not in ("auto", "statistical", "none"):
            errors.append(
                f"settings.forecast_helper: expected auto, statistical or none, got {helper!r}"
            )
        return errors

    @classmethod
    def shared_forecaster_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Inside a hybrid: the hybrid's statistical member forecasts, no private helper."""
        out = dict(settings)
        out.setdefault("forecast_helper", "none")
        return out

    @classmethod
    def latency_budget_sec(cls, settings: Mapping[str, Any]) -> float:
        """The whole LLM task's deadline plus a second for the mapping around it."""
        return RunnerConfig.from_settings(settings).request_timeout_sec + 1.0

    def __init__(
        self,
        state: TwinState,
        settings: Mapping[str, Any] | None = None,
        *,
        chat_model: Any = None,
        chat_model_factory: Callable[[Mapping[str, Any]], Any] | None = None,
        forecaster: Forecaster | None = None,
        anomaly_source: AnomalySource | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state, settings)
        self._injected_model = chat_model
        self._factory = chat_model_factory
        self._forecaster = forecaster
        self._anomaly_source = anomaly_source
        self._environ = environ
        self.stats = UsageStats()
        self.runner: LLMRunner | None = None
        self.config_error: str | None = None
        self.grounding_cfg = grounding.GroundingConfig()
        self._helper: WorldModel | None = None
        self._helper_issue: str | None = None
        self.forecasts_total = 0
        self.forecast_failures_total = 0

    # ------------------------------------------------------------ lifecycle
    def set_forecaster(
        self, forecaster: Forecaster | None, anomaly_source: AnomalySource | None = None
    ) -> None:
        self._forecaster = forecaster
        if anomaly_source is not None:
            self._anomaly_source = anomaly_source

    def _build(self) -> None:
        self.config_error = None
        self.runner = None
        problems: list[str] = []
        try:
            cfg = RunnerConfig.from_settings(self.settings)
            problems = cfg.problems()
            self.grounding_cfg = grounding.GroundingConfig.from_settings(self.settings)
        except (TypeError, ValueError) as exc:
            self.config_error = f"invalid settings: {exc}"
            return
        if problems:
            self.config_error = "invalid settings: " + "; ".join(problems)
            return
        try:
            if self._injected_model is not None:
                model = self._injected_model
            elif self._factory is not None:
                model = self._factory(self.settings)
            else:
                model = chat_factory.build_chat_model(self.settings, self._environ)
        except chat_factory.ChatModelConfigError as exc:
            self.config_error = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a broken factory must not crash the twin
            self.config_error = f"cannot build the chat model: {type(exc).__name__}: {exc}"
            return
        self.runner = LLMRunner(model, cfg, self.stats)

    async def _start_helper(self) -> None:
        self._helper_issue = None
        mode = str(self.settings.get("forecast_helper", "auto"))
        if self._forecaster is not None or mode == "none":
            return
        try:
            from twin.models.registry import create_model

            helper = create_model("statistical", self.state, self.settings.get("statistical") or {})
            await helper.initialize()
        except Exception as exc:  # noqa: BLE001 - forecasts are optional grounding
            if mode == "statistical":
                self._helper_issue = f"forecast helper 'statistical' unavailable: {exc}"
            log.info("gemini: no statistical forecasts in prompts (%s)", exc)
            return
        # The helper has not seen what is already in the store; models learn from the
        # store on initialize or lazily, so nothing is replayed here.
        self._helper = helper
        self._forecaster = forecaster_from_model(helper)
        self._anomaly_source = self._anomaly_source or anomaly_source_from_model(helper)

    async def initialize(self) -> None:
        self._build()
        await self._start_helper()
        self.initialized = True

    async def shutdown(self) -> None:
        if self._helper is not None:
            helper, self._helper = self._helper, None
            self._forecaster = None
            try:
                await helper.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("gemini: forecast helper shutdown failed")
        self.initialized = False

    def update(self, batch: EventBatch) -> None:
        if self._helper is not None:
            self._helper.update(batch)

    async def calibrate(self, record: CalibrationRecord) -> dict[str, float]:
        # Calibrations reach the prompt through the grounding (recent calibrations).
        if self._helper is not None:
            return await self._helper.calibrate(record)
        return {}

    def reset(self) -> None:
        if self.runner is not None:
            self.runner.budget.reset()
        if self._helper is not None:
            self._helper.reset()

    # ------------------------------------------------------------ health & metrics
    async def health(self) -> Health:
        perf = {
            k: float(v)
            for k, v in self.stats.as_metrics().items()
            if k
            in (
                "llm_requests_total",
                "llm_request_failures_total",
                "llm_latency_p50_ms",
                "llm_tokens_total",
            )
        }
        if not self.initialized:
            return Health("not_initialized", [], perf, self.name, self.version)
        issues: list[str] = []
        status = "healthy"
        if self.config_error:
            return Health("unhealthy", [self.config_error], perf, self.name, self.version)
        if self.stats.consecutive_failures >= DEGRADED_AFTER_FAILURES:
            status = "degraded"
            issues.append(
                f"the last {self.stats.consecutive_failures} LLM requests failed; last: "
                f"{self.stats.last_error}"
            )
        if self._helper_issue:
            status = "degraded"
            issues.append(self._helper_issue)
        return Health(status, issues, perf, self.name, self.version)

    def metrics(self) -> dict[str, float]:
        m = self.stats.as_metrics()
        if self.runner is not None:
            req, tok = self.runner.budget.used()
            m["llm_budget_requests_used"] = req
            m["llm_budget_tokens_used"] = tok
            m["llm_budget_waits_total"] = self.runner.budget.waits
        m["llm_available"] = 0.0 if self.runner is None else 1.0
        m["forecast_grounding_total"] = self.forecasts_total
        m["forecast_grounding_failures_total"] = self.forecast_failures_total
        return {k: float(v) for k, v in m.items()}

    # ------------------------------------------------------------ helpers
    def _unavailable_text(self) -> str:
        return f"gemini world model unavailable: {self.config_error or 'not initialised'}"

    async def _forecast(
        self, system: str | None, horizon: int, now: float | None
    ) -> tuple[str, SimulationResult] | None:
        if self._forecaster is None:
            return None
        timeout = float(self.settings.get("forecast_timeout_sec", 2.0))
        try:
            res = await asyncio.wait_for(self._forecaster(system, horizon, now), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - optional grounding
            self.forecast_failures_total += 1
            log.debug("gemini: forecast for grounding failed: %s", exc)
            return None
        if res is None or not res.success:
            return None
        self.forecasts_total += 1
        return "statistical model", res

    def _extra_anomalies(self) -> list[str]:
        if self._anomaly_source is None:
            return []
        try:
            return [format_anomaly(a) for a in list(self._anomaly_source() or [])[:20]]
        except Exception:  # noqa: BLE001 - optional grounding
            return []

    async def _ground(
        self, question: str, system: str | None, now: float | None, horizon: int | None
    ) -> grounding.Grounding:
        fc = await self._forecast(system, horizon, now) if horizon is not None else None
        return grounding.build(
            self.state,
            question,
            self.grounding_cfg,
            system=system,
            now=now,
            forecast=fc,
            extra_anomalies=self._extra_anomalies(),
        )

    def _meta(self, g: grounding.Grounding, info: RunInfo | None) -> dict[str, str]:
        meta = {
            "model": self.name,
            "provider": chat_factory.provider_of(self.settings)
            if self._injected_model is None and self._factory is None
            else "injected",
            "model_name": str(self.settings.get("model_name", chat_factory.DEFAULT_GEMINI_MODEL)),
            "grounding_series": str(len(g.series_shown)),
            "grounding_series_total": str(g.series_total),
            "grounding_chars": str(len(g.text)),
            "grounding_truncated": str(g.truncated).lower(),
            "grounding_forecast": str(g.forecasts_shown > 0).lower(),
        }
        if info is not None:
            meta.update(
                {
                    "llm_attempts": str(info.attempts),
                    "llm_parse_attempts": str(info.parse_attempts),
                    "llm_input_tokens": str(info.input_tokens),
                    "llm_output_tokens": str(info.output_tokens),
                    "llm_latency_ms": f"{info.latency_sec * 1000:.1f}",
                }
            )
        return meta

    # ------------------------------------------------------------ RPCs
    async def query(self, request: QueryRequest) -> QueryResult:
        if request.query_type != "natural_language":
            return await super().query(request)
        if self.runner is None:
            return QueryResult(
                False,
                None,
                0.0,
                self._unavailable_text(),
                {"model": self.name, "failure": "unavailable"},
            )
        system = requested_system(request.parameters)
        g = await self._ground(
            request.content,
            system,
            request.timestamp,
            int(self.settings.get("query_forecast_minutes", 60)),
        )
        params = {k: v for k, v in request.parameters.items() if len(k) < 64}
        text = f"Question: {request.content}" + (
            f"\nParameters: {json.dumps(params)}" if params else ""
        )
        try:
            ans, info = await self.runner.run("query", g.text, text)
        except LLMFailure as exc:
            return QueryResult(
                False, None, 0.0, f"gemini: {exc}", self._meta(g, None) | {"failure": exc.reason}
            )
        assert isinstance(ans, QueryAnswer)
        result = {
            "answer": ans.answer,
            "facts": ans.facts,
            "referenced_metrics": ans.referenced_metrics,
        }
        return QueryResult(True, result, ans.confidence, ans.answer, self._meta(g, info))

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        if self.runner is None:
            return SimulationResult(
                False,
                explanation=self._unavailable_text(),
                metadata={"model": self.name, "failure": "unavailable"},
            )
        if request.simulation_type == "compare":
            # Ranking K plans would take K+1 model calls; the plan engine (statistical
            # member of a hybrid) ranks them, and its figures ground the LLM's what-ifs.
            return SimulationResult(
                False,
                explanation=(
                    "the gemini model does not rank plans (one LLM call per plan would be slow "
                    "and costly); ask the statistical or hybrid model"
                ),
                metadata={"model": self.name, "failure": "unsupported"},
            )
        system = next((a.target for a in request.actions if a.target), None) or requested_system(
            request.parameters
        )
        horizon = int(request.horizon_minutes)
        g = await self._ground(
            " ".join(
                [
                    request.simulation_type,
                    *(a.action_type for a in request.actions),
                    *request.parameters.values(),
                ]
            ),
            system,
            request.timestamp,
            horizon,
        )
        now = g.now
        step = request.parameters.get("step_minutes") or str(
            max(5, math.ceil(horizon / 12)) if horizon else 0
        )
        actions = [
            {
                "action_type": a.action_type,
                "target": a.target,
                "params": a.params,
                "priority": a.priority,
            }
            for a in request.actions
        ]
        cadence = (
            f"give a future state about every {step} minutes"
            if horizon
            else "give one state with minutes_ahead 0 (right after the actions)"
        )
        text = (
            f"Simulation ({request.simulation_type}) starting at {iso(now)} over a horizon of "
            f"{horizon} minutes; "
            f"{cadence}.\n"
            f"System: {system or 'as in the state summary'}\n"
            f"Actions: {json.dumps(actions) if actions else 'none (forecast the system as it is)'}"
        )
        extra = {
            k: v
            for k, v in request.parameters.items()
            if k not in ("system", "source", "step_minutes")
        }
        if extra:
            text += f"\nParameters: {json.dumps(extra)}"

        def times(ans: SimulationAnswer) -> list[float]:
            out = []
            limit = now + horizon * 60.0 + 60.0
            for i, st in enumerate(ans.future_states):
                if st.minutes_ahead is not None:
                    if st.minutes_ahead > horizon + 1e-9 and not (
                        horizon == 0 and st.minutes_ahead == 0
                    ):
                        raise AnswerError(
                            f"future_states.{i}.minutes_ahead: {st.minutes_ahead:g} is beyond the "
                            f"horizon of {horizon} minutes"
                        )
                    out.append(now + st.minutes_ahead * 60.0)
                else:
                    t = parse_time(st.timestamp or "")
                    if not (now - 1.0 <= t <= limit):
                        raise AnswerError(
                            f"future_states.{i}.timestamp: {st.timestamp} is outside [{iso(now)}, "
                            f"now + {horizon} min]"
                        )
                    out.append(t)
            return out

        try:
            ans, info = await self.runner.run("simulation", g.text, text, check=lambda a: times(a))
        except LLMFailure as exc:
            return SimulationResult(
                False,
                explanation=f"gemini: {exc}",
                metadata=self._meta(g, None) | {"failure": exc.reason},
            )
        assert isinstance(ans, SimulationAnswer)
        ts = times(ans)
        states = sorted(
            (
                PredictedState(t, dict(st.metrics), st.confidence, st.description)
                for t, st in zip(ts, ans.future_states)
            ),
            key=lambda s: s.t,
        )
        spread = 0.1 * (1 + horizon / 60.0)
        lo = (
            ans.uncertainty_lower
            if ans.uncertainty_lower is not None
            else max(0.0, ans.confidence * (1 - spread))
        )
        hi = (
            ans.uncertainty_upper
            if ans.uncertainty_upper is not None
            else min(1.0, ans.confidence * (1 + spread))
        )
        impact = None
        if ans.impact is not None:
            i = ans.impact
            impact = Impact(
                i.cost_impact, i.performance_impact, i.reliability_impact, "USD", i.description
            )
        meta = self._meta(g, info) | {"system": system or ""}
        return SimulationResult(
            True,
            states,
            ans.confidence,
            lo,
            hi,
            ans.explanation or "gemini simulation",
            impact,
            meta,
        )

    async def diagnose(self, request: DiagnosisRequest) -> DiagnosisResult:
        if self.runner is None:
            return DiagnosisResult(
                False,
                explanation=self._unavailable_text(),
                metadata={"model": self.name, "failure": "unavailable"},
            )
        system = requested_system(request.context)
        question = (
            request.anomaly_description
            + " "
            + " ".join(f"{k} {v}" for k, v in request.context.items())
        )
        g = await self._ground(question, system, request.timestamp, None)
        ctx = {k: v for k, v in request.context.items() if len(k) < 64}
        text = (
            "Anomaly to diagnose: "
            f"{request.anomaly_description or '(no description: find what is anomalous)'}"
        )
        if request.timestamp is not None:
            text += f"\nObserved at: {iso(request.timestamp)}"
        if ctx:
            text += f"\nContext: {json.dumps(ctx)}"
        try:
            ans, info = await self.runner.run("diagnosis", g.text, text)
        except LLMFailure as exc:
            return DiagnosisResult(
                False,
                explanation=f"gemini: {exc}",
                metadata=self._meta(g, None) | {"failure": exc.reason},
            )
        assert isinstance(ans, DiagnosisAnswer)
        hyps = [
            Hypothesis(h.hypothesis, h.probability, h.reasoning, list(h.evidence), i + 1)
            for i, h in enumerate(ans.hypotheses)
        ]
        evidence = list(ans.supporting_evidence) or [e for h in hyps[:3] for e in h.evidence[:2]]
        return DiagnosisResult(
            True,
            hyps,
            ans.causal_chain,
            ans.confidence,
            ans.explanation or "gemini diagnosis",
            evidence,
            self._meta(g, info),
        )
