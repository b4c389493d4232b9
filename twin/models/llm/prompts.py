"""Prompt templates of the LLM world model (LangChain ``ChatPromptTemplate``).

One template per task: a system message (role, rules, the JSON schema of the
answer) and a human message with the grounded state and the request. A
``repair`` placeholder carries the failed reply and the parse error on the single
repair attempt. Templates use only ``{variables}``; grounded text is passed as a
variable, so braces in metric names or user text cannot break formatting.
"""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

_RULES = (
    "You are the reasoning layer of a digital twin of a self-adaptive software system. "
    "Ground every statement in the state summary you are given; do not invent metrics, "
    "systems or values that are not in it, and say so when the data is insufficient. "
    "Reply with ONE JSON object and nothing else (no Markdown, no prose around it). "
    "All numbers must be finite; confidences and probabilities are in [0, 1]."
)

QUERY_SYSTEM = _RULES + "\nAnswer the operator's question. JSON schema of your reply:\n{schema}"
SIMULATION_SYSTEM = (
    _RULES
    + "\nPredict the future states of the system over the horizon, given the actions. "
    "Use the exact metric names of the state summary. Give future states at increasing "
    "minutes_ahead (0 < minutes_ahead <= horizon), confidence decreasing with distance, "
    "and the impact of the actions (cost: positive = more expensive; performance and "
    "reliability: positive = better). JSON schema of your reply:\n{schema}"
)
DIAGNOSIS_SYSTEM = (
    _RULES
    + "\nDiagnose the anomaly: give competing root-cause hypotheses, most probable first, "
    "with probabilities that sum to at most 1, the reasoning and the evidence (series and "
    "values from the summary) for each, and the causal chain of the most probable one. "
    "JSON schema of your reply:\n{schema}"
)

HUMAN = "State of the twin:\n{grounding}\n\n{request}"


def _template(system: str) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages(
        [("system", system), ("human", HUMAN), MessagesPlaceholder("repair", optional=True)]
    )


TEMPLATES = {
    "query": _template(QUERY_SYSTEM),
    "simulation": _template(SIMULATION_SYSTEM),
    "diagnosis": _template(DIAGNOSIS_SYSTEM),
}

REPAIR = (
    "Your previous reply could not be used: {error}\n"
    "Reply again with ONE JSON object that matches the schema exactly."
)
