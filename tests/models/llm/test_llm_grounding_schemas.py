"""Units of the LLM model: answer parsing/validation and the grounded state summary."""

from __future__ import annotations

import pytest

from twin.core.events import Point
from twin.core.state import TwinState
from twin.models.llm import grounding
from twin.models.llm.schemas import AnswerError, DiagnosisAnswer, SimulationAnswer, parse_answer

T0 = 1_700_000_000.0


def test_fenced_json_and_prose_around_it_are_accepted() -> None:
    text = 'Here you go:\n```json\n{"answer": "ok", "confidence": 0.5}\n```\nAnything else?'
    assert parse_answer("query", text).answer == "ok"  # type: ignore[attr-defined]
    assert parse_answer("query", 'prefix {"answer": "x", "confidence": 1} suffix').confidence == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "text", "fragment"),
    [
        ("query", "", "the reply is empty"),
        ("query", "[1, 2]", "expected a JSON object"),
        (
            "query",
            '{"answer": "x", "confidence": 1.5}',
            "confidence: Input should be less than or equal to 1",
        ),
        ("query", '{"answer": "x", "confidence": NaN}', "NaN is not a finite number"),
        (
            "simulation",
            '{"future_states": [{"metrics": {"a": 1}, "confidence": 0.5}], "confidence": 0.5}',
            "needs minutes_ahead",
        ),
        (
            "simulation",
            '{"future_states": [{"minutes_ahead": -5, "metrics": {}, "confidence": 0.5}], '
            '"confidence": 0.5}',
            "must be >= 0",
        ),
        (
            "simulation",
            '{"future_states": [{"minutes_ahead": 5, "metrics": {}, "confidence": 0.5}], '
            '"confidence": 0.5, "uncertainty_lower": 0.9, "uncertainty_upper": 0.1}',
            "is above uncertainty_upper",
        ),
        (
            "diagnosis",
            '{"hypotheses": [], "confidence": 0.5}',
            "hypotheses: List should have at least 1 item",
        ),
    ],
)
def test_invalid_answers_are_rejected_with_a_message_for_the_model(
    kind: str, text: str, fragment: str
) -> None:
    with pytest.raises(AnswerError, match=None) as info:
        parse_answer(kind, text)
    assert fragment in str(info.value)


def test_probabilities_above_one_in_total_are_rescaled() -> None:
    ans = parse_answer(
        "diagnosis",
        '{"hypotheses": [{"hypothesis": "a", "probability": 0.8}, {"hypothesis": "b", '
        '"probability": 0.8}], "confidence": 0.5}',
    )
    assert isinstance(ans, DiagnosisAnswer)
    assert [h.probability for h in ans.hypotheses] == [0.5, 0.5]
    ans = parse_answer(
        "diagnosis",
        '{"hypotheses": [{"hypothesis": "a", "probability": 0.2}, {"hypothesis": "b", '
        '"probability": 0.3}], "confidence": 0.5}',
    )
    assert [h.hypothesis for h in ans.hypotheses] == ["b", "a"]  # sorted, not rescaled
    sim = parse_answer(
        "simulation",
        '{"future_states": [{"timestamp": "2023-11-14T22:13:20Z", "metrics": {"u": 1}, '
        '"confidence": 0.4}], "confidence": 0.4}',
    )
    assert isinstance(sim, SimulationAnswer) and sim.future_states[0].minutes_ahead is None


def test_grounding_prefers_the_system_in_question_and_caps_the_text() -> None:
    st = TwinState()
    pts = [Point("web", "latency", T0 + i, 10.0 + (i % 2), "ms", None) for i in range(20)]
    pts += [Point("db", f"m{j}", T0 + i, float(j), "", None) for j in range(50) for i in range(3)]
    pts += [Point("db", "cpu", T0 + i, 0.2 if i < 19 else 0.99, "", None) for i in range(20)]
    st.apply_points(pts)
    g = grounding.build(
        st, "why is latency high", grounding.GroundingConfig(max_series=5), system="web"
    )
    assert g.series_shown[0] == "web/latency"
    assert "db/cpu" in g.series_shown  # another system, shown because it is anomalous
    assert not any(k.startswith("db/m") for k in g.series_shown)
    assert g.anomalies == ["db/cpu"]
    small = grounding.build(st, "anything", grounding.GroundingConfig(max_series=50, max_chars=600))
    assert small.truncated and len(small.text) <= 600 + 80
    assert "more line(s) omitted (prompt budget)" in small.text
    empty = grounding.build(TwinState(), "hello", grounding.GroundingConfig())
    assert "no telemetry yet" in empty.text and empty.now == 0.0


def test_grounding_carries_the_ledgers_track_record() -> None:
    """The LLM sees how far this twin's own predictions were from what then happened."""
    from twin.core.events import Point
    from twin.core.state import TwinState
    from twin.models.llm.grounding import GroundingConfig, build
    from twin.models.plans.skill import Skill

    class Ledger:
        def skill(self, system: str, kind: str, metric: str | None = None) -> Skill:
            if (system, kind) == ("swim", "what_if"):
                return Skill(25, 0.7, 0.06, 0.88, 1.0, 0.8)
            return Skill(0)

    state = TwinState()
    state.apply_points([Point("swim", "average.response.time", 1.0, 100.0, "ms", None)])
    plain = build(state, "what if I add a server", GroundingConfig(), system="swim")
    assert "track record" not in plain.text  # no ledger yet: nothing invented
    state.ledger = Ledger()  # type: ignore[attr-defined]
    g = build(state, "what if I add a server", GroundingConfig(), system="swim")
    assert "track record of this twin's predictions for swim" in g.text
    assert (
        "- what_if: 25 scored, relative error 6.0%, within ±10 % 80%, interval coverage 88%"
        in g.text
    )
    assert "- forecast" not in g.text
