"""Answer schemas of the LLM world model and their validation.

The model is asked for one JSON object per task; :func:`parse_answer` extracts it
from the reply (tolerating a Markdown fence or prose around it), validates it with
the pydantic model of the task and normalises what may be normalised (hypothesis
probabilities summing to more than 1 are rescaled). Anything else that is wrong -
a probability of 1.7, a NaN, a state beyond the horizon, a missing field - raises
:class:`AnswerError` with a message short enough to be fed back to the model on the
single repair attempt.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twin.core.errors import ModelError
from twin.core.events import parse_time

MAX_FUTURE_STATES = 200
MAX_HYPOTHESES = 10
MAX_METRICS_PER_STATE = 100


class AnswerError(ModelError, ValueError):
    """The reply is not a valid answer; ``str(exc)`` is what the model is told."""


def _finite(v: float, what: str) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return v


class _Strict(BaseModel):
    # Unknown keys are ignored (models like to add commentary fields); types are coerced
    # only where JSON is ambiguous (ints for floats).
    model_config = ConfigDict(extra="ignore")


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class QueryAnswer(_Strict):
    answer: str = Field(min_length=1, max_length=8000)
    confidence: Probability
    facts: list[str] = Field(default_factory=list, max_length=30)
    referenced_metrics: list[str] = Field(default_factory=list, max_length=50)


class FutureState(_Strict):
    minutes_ahead: float | None = None
    timestamp: str | None = None
    metrics: dict[str, float] = Field(max_length=MAX_METRICS_PER_STATE)
    confidence: Probability
    description: str = Field(default="", max_length=500)

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            _finite(x, f"metrics[{k!r}]")
        return v

    @model_validator(mode="after")
    def _time_given(self) -> FutureState:
        if self.minutes_ahead is None and not self.timestamp:
            raise ValueError("each future state needs minutes_ahead (or an ISO-8601 timestamp)")
        if self.minutes_ahead is not None:
            _finite(self.minutes_ahead, "minutes_ahead")
            if self.minutes_ahead < 0:
                raise ValueError(f"minutes_ahead must be >= 0, got {self.minutes_ahead}")
        if self.timestamp and self.minutes_ahead is None:
            try:
                parse_time(self.timestamp)
            except ValueError as exc:
                raise ValueError(f"timestamp {self.timestamp!r} is not ISO-8601") from exc
        return self


class ImpactAnswer(_Strict):
    cost_impact: float = 0.0
    performance_impact: float = 0.0
    reliability_impact: float = 0.0
    description: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _finite_all(self) -> ImpactAnswer:
        for name in ("cost_impact", "performance_impact", "reliability_impact"):
            _finite(getattr(self, name), name)
        return self


class SimulationAnswer(_Strict):
    future_states: list[FutureState] = Field(min_length=1, max_length=MAX_FUTURE_STATES)
    confidence: Probability
    uncertainty_lower: float | None = Field(default=None, ge=0.0, le=1.0)
    uncertainty_upper: float | None = Field(default=None, ge=0.0, le=1.0)
    impact: ImpactAnswer | None = None
    explanation: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def _bounds(self) -> SimulationAnswer:
        lo, hi = self.uncertainty_lower, self.uncertainty_upper
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"uncertainty_lower ({lo}) is above uncertainty_upper ({hi})")
        return self


class HypothesisAnswer(_Strict):
    hypothesis: str = Field(min_length=1, max_length=500)
    probability: Probability
    reasoning: str = Field(default="", max_length=2000)
    evidence: list[str] = Field(default_factory=list, max_length=20)


class DiagnosisAnswer(_Strict):
    hypotheses: list[HypothesisAnswer] = Field(min_length=1, max_length=MAX_HYPOTHESES)
    causal_chain: str = Field(default="", max_length=2000)
    confidence: Probability
    explanation: str = Field(default="", max_length=4000)
    supporting_evidence: list[str] = Field(default_factory=list, max_length=30)

    @model_validator(mode="after")
    def _normalise(self) -> DiagnosisAnswer:
        # Probabilities of competing root causes may not sum above 1; a model that
        # scores each one independently is rescaled rather than rejected.
        total = sum(h.probability for h in self.hypotheses)
        if total > 1.0 + 1e-9:
            for h in self.hypotheses:
                h.probability = h.probability / total
        self.hypotheses.sort(key=lambda h: -h.probability)
        return self


SCHEMAS: dict[str, type[BaseModel]] = {
    "query": QueryAnswer,
    "simulation": SimulationAnswer,
    "diagnosis": DiagnosisAnswer,
}

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def message_text(content: Any) -> str:
    """The text of a chat message's content (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text":
                parts.append(str(p.get("text", "")))
        return "".join(parts)
    return str(content)


def extract_json(text: str) -> Any:
    """The JSON object in a reply: the whole text, a fenced block, or the outermost braces."""
    text = text.strip()
    candidates = [text]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    lo, hi = text.find("{"), text.rfind("}")
    if 0 <= lo < hi:
        candidates.append(text[lo : hi + 1])
    last: Exception | None = None
    for c in candidates:
        try:
            return json.loads(c, parse_constant=_reject_constant)
        except (ValueError, TypeError) as exc:
            last = exc
    raise AnswerError(f"the reply is not a JSON object ({last})" if text else "the reply is empty")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:8]:
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    more = len(exc.errors()) - 8
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_answer(kind: str, text: str) -> BaseModel:
    """Parses and validates a reply for ``kind`` (query | simulation | diagnosis)."""
    data = extract_json(text)
    if not isinstance(data, dict):
        raise AnswerError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return SCHEMAS[kind].model_validate(data)
    except ValidationError as exc:
        raise AnswerError(f"the answer does not match the schema: {_describe(exc)}") from exc


def schema_text(kind: str) -> str:
    """A compact JSON schema of the answer, embedded in the prompt."""
    return json.dumps(SCHEMAS[kind].model_json_schema(), separators=(",", ":"))
