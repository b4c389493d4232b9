"""Runs one LLM task: prompt → chat model → validated answer, within a deadline.

For each task the chain is ``ChatPromptTemplate | chat model``; the reply is parsed
with :func:`schemas.parse_answer`. Around the chain:

- a deadline for the whole task (``request_timeout_sec``, kept below the RPC timeout
  the servicer enforces) and a per-call timeout (``call_timeout_sec``);
- retries with exponential backoff (``backoff_base_sec`` · 2^n, capped at
  ``backoff_max_sec``, small jitter) on *transient* errors only - timeouts, rate
  limits, 5xx, connection failures - never on permanent ones (bad key, bad request,
  unknown model);
- at most ``max_concurrency`` calls in flight (a semaphore; waiting for it counts
  against the deadline);
- the per-minute request/token budget (:mod:`budget`);
- one repair attempt for an unparseable or invalid answer, with the reply and the
  error fed back to the model.

Every failure ends as :class:`LLMFailure` with a message for the in-band
``explanation``; nothing unvalidated is passed on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel

from twin.core.errors import ModelError
from twin.models.llm import prompts
from twin.models.llm.budget import BudgetExceeded, RateBudget, UsageStats, estimate_tokens
from twin.models.llm.schemas import AnswerError, message_text, parse_answer, schema_text
from twin.models.settings import parse_settings

_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_TRANSIENT_NAMES = (
    "timeout",
    "ratelimit",
    "rate_limit",
    "unavailable",
    "connection",
    "temporar",
    "overloaded",
    "resourceexhausted",
    "serviceunavailable",
    "internalservererror",
    "deadline",
)


class LLMFailure(ModelError):
    """A task that could not produce a valid answer; ``reason`` is a short category."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can help (rate limits, 5xx, timeouts, connection errors)."""
    flag = getattr(exc, "is_retryable", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    for attr in ("status_code", "code", "http_status", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v in _TRANSIENT_STATUS
    name = type(exc).__name__.lower()
    if any(n in name for n in _TRANSIENT_NAMES):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    call_timeout_sec: float = 20.0
    request_timeout_sec: float = 25.0
    max_retries: int = 2
    backoff_base_sec: float = 0.5
    backoff_max_sec: float = 4.0
    max_concurrency: int = 4
    parse_retries: int = 1
    max_output_tokens: int = 2048
    requests_per_minute: int = 60
    tokens_per_minute: int = 200_000
    budget_max_wait_sec: float = 2.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RunnerConfig:
        return parse_settings(cls, settings)

    def problems(self) -> list[str]:
        out = []
        if self.call_timeout_sec <= 0:
            out.append("settings.call_timeout_sec: must be > 0")
        if self.request_timeout_sec <= 0:
            out.append("settings.request_timeout_sec: must be > 0")
        if self.call_timeout_sec > self.request_timeout_sec:
            out.append("settings.call_timeout_sec: must not exceed settings.request_timeout_sec")
        if self.max_retries < 0:
            out.append("settings.max_retries: must be >= 0")
        if self.max_concurrency < 1:
            out.append("settings.max_concurrency: must be >= 1")
        if self.parse_retries < 0:
            out.append("settings.parse_retries: must be >= 0")
        if self.requests_per_minute < 0 or self.tokens_per_minute < 0:
            out.append(
                "settings.requests_per_minute / tokens_per_minute: must be >= 0 (0 = unlimited)"
            )
        return out


@dataclass(slots=True)
class RunInfo:
    attempts: int = 0
    parse_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_sec: float = 0.0


class LLMRunner:
    def __init__(self, chat_model: Any, cfg: RunnerConfig, stats: UsageStats) -> None:
        self.chat_model = chat_model
        self.cfg = cfg
        self.stats = stats
        self.budget = RateBudget(
            cfg.requests_per_minute, cfg.tokens_per_minute, cfg.budget_max_wait_sec
        )
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._chains = {kind: tpl | chat_model for kind, tpl in prompts.TEMPLATES.items()}

    async def run(
        self, kind: str, grounding: str, request: str, check: Callable[[Any], object] | None = None
    ) -> tuple[BaseModel, RunInfo]:
        """A validated answer of ``kind`` or :class:`LLMFailure`.

        ``check`` validates what the schema cannot know (e.g. the request's horizon);
        it raises :class:`AnswerError`, which is handled like a parse error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.request_timeout_sec
        info = RunInfo()
        t0 = time.perf_counter()
        variables: dict[str, Any] = {
            "schema": schema_text(kind),
            "grounding": grounding,
            "request": request,
        }
        repair: list[BaseMessage] = []
        last_error = ""
        try:
            for _ in range(1 + self.cfg.parse_retries):
                info.parse_attempts += 1
                reply = await self._invoke(kind, {**variables, "repair": repair}, deadline, info)
                text = message_text(reply.content)
                try:
                    answer = parse_answer(kind, text)
                    if check is not None:
                        check(answer)
                except AnswerError as exc:
                    self.stats.parse_failures_total += 1
                    last_error = str(exc)
                    repair = [
                        AIMessage(content=text[:4000]),
                        HumanMessage(content=prompts.REPAIR.format(error=last_error)),
                    ]
                    continue
                if info.parse_attempts > 1:
                    self.stats.parse_repairs_total += 1
                self.stats.consecutive_failures = 0
                return answer, info
            self.stats.invalid_answers_total += 1
            raise LLMFailure(
                f"the LLM returned no valid {kind} answer after {info.parse_attempts} attempt(s) "
                f"(the last was retried with the error fed back): {last_error}",
                "invalid_answer",
            )
        except LLMFailure as exc:
            self.stats.request_failures_total += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = str(exc)
            raise
        finally:
            info.latency_sec = time.perf_counter() - t0
            self.stats.observe_latency(info.latency_sec)

    async def _invoke(
        self, kind: str, variables: dict[str, Any], deadline: float, info: RunInfo
    ) -> AIMessage:
        loop = asyncio.get_running_loop()
        chain = self._chains[kind]
        prompt_chars = sum(
            len(message_text(m.content))
            for m in prompts.TEMPLATES[kind].format_messages(**variables)
        )
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.stats.timeouts_total += 1
                raise LLMFailure(
                    "the LLM did not answer within "
                    f"settings.request_timeout_sec={self.cfg.request_timeout_sec:g}s",
                    "timeout",
                )
            est_in = max(1, (prompt_chars + 3) // 4)
            try:
                entry = await self.budget.reserve(
                    est_in + self.cfg.max_output_tokens, deadline=deadline - 0.05
                )
            except BudgetExceeded as exc:
                self.stats.budget_rejections_total += 1
                raise LLMFailure(str(exc), "budget") from exc
            error: BaseException | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    await self._sem.acquire()
            except TimeoutError:
                self.budget.settle(entry, 0)
                self.stats.timeouts_total += 1
                raise LLMFailure(
                    "no LLM call slot freed within "
                    f"settings.request_timeout_sec={self.cfg.request_timeout_sec:g}s "
                    f"(settings.max_concurrency={self.cfg.max_concurrency})",
                    "timeout",
                ) from None
            self.stats.in_flight += 1
            self.stats.requests_total += 1
            info.attempts += 1
            call_timeout = max(0.0, min(self.cfg.call_timeout_sec, deadline - loop.time()))
            try:
                async with asyncio.timeout(call_timeout):
                    reply = await chain.ainvoke(variables)
            except TimeoutError as exc:
                self.stats.timeouts_total += 1
                error = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                error = exc
            finally:
                self.stats.in_flight -= 1
                self._sem.release()
            if error is None:
                if not isinstance(reply, AIMessage):
                    reply = AIMessage(content=message_text(getattr(reply, "content", reply)))
                self._account(entry, reply, est_in, info)
                return reply
            self.budget.settle(entry, est_in)
            transient = is_transient(error)
            desc = (
                f"timed out after {call_timeout:.1f}s (settings.call_timeout_sec)"
                if isinstance(error, TimeoutError)
                else f"{type(error).__name__}: {error}"
            )
            if not transient:
                self.stats.permanent_errors_total += 1
                raise LLMFailure(
                    f"the LLM call failed permanently (not retried): {desc}", "permanent_error"
                ) from error
            self.stats.transient_errors_total += 1
            if attempt >= self.cfg.max_retries:
                reason = "timeout" if isinstance(error, TimeoutError) else "transient_error"
                raise LLMFailure(
                    f"the LLM call failed after {attempt + 1} attempt(s): {desc}", reason
                ) from error
            delay = min(self.cfg.backoff_max_sec, self.cfg.backoff_base_sec * (2**attempt))
            delay *= 1.0 + 0.1 * random.random()  # noqa: S311 - jitter, not crypto
            if loop.time() + delay >= deadline:
                reason = "timeout" if isinstance(error, TimeoutError) else "transient_error"
                raise LLMFailure(
                    "the LLM call failed and no time is left to retry within "
                    f"{self.cfg.request_timeout_sec:g}s: {desc}",
                    reason,
                ) from error
            attempt += 1
            self.stats.retries_total += 1
            await asyncio.sleep(delay)

    def _account(self, entry: Any, reply: AIMessage, est_in: int, info: RunInfo) -> None:
        usage = getattr(reply, "usage_metadata", None) or {}
        tin = int(usage.get("input_tokens") or 0)
        tout = int(usage.get("output_tokens") or 0)
        if not usage:
            tin = est_in
            tout = estimate_tokens(message_text(reply.content))
            self.stats.estimated_token_calls_total += 1
        self.stats.input_tokens_total += tin
        self.stats.output_tokens_total += tout
        info.input_tokens += tin
        info.output_tokens += tout
        self.budget.settle(entry, tin + tout)
