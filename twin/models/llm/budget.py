"""Per-minute request and token budget of the LLM world model, plus its usage figures.

The budget is a sliding 60-second window of (time, tokens) entries. A call first
*reserves* an estimate (prompt characters / 4 + the output allowance); when the reply
arrives the reservation is replaced by the provider's usage figures. When the window
is full the caller may wait (if the slot frees up within ``max_wait``) or is refused
with :class:`BudgetExceeded`, whose message says which budget and when to retry.

This is operational rate limiting (the provider's quota), so it runs on a monotonic
clock - not on event time, which is what the models' *reasoning* uses.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twin.core.errors import ModelError

WINDOW_SEC = 60.0


class BudgetExceeded(ModelError):
    """The per-minute budget does not allow this call now."""


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters per token for English and JSON)."""
    return max(1, (len(text) + 3) // 4)


@dataclass
class _Entry:
    t: float
    tokens: int


class RateBudget:
    """Requests and tokens per minute; ``0`` disables a limit."""

    def __init__(
        self,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        max_wait_sec: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = int(requests_per_minute)
        self.tokens_per_minute = int(tokens_per_minute)
        self.max_wait_sec = float(max_wait_sec)
        self.clock = clock
        self._entries: deque[_Entry] = deque()
        self._lock = asyncio.Lock()
        self.rejections = 0
        self.waits = 0

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0].t <= now - WINDOW_SEC:
            self._entries.popleft()

    def used(self) -> tuple[int, int]:
        self._prune(self.clock())
        return len(self._entries), sum(e.tokens for e in self._entries)

    def _wait_needed(self, now: float, tokens: int) -> tuple[float, str]:
        """Seconds until the call fits (0 = now) and which limit binds; inf = never."""
        self._prune(now)
        wait = 0.0
        why = ""
        if self.requests_per_minute and len(self._entries) >= self.requests_per_minute:
            # The oldest entries must leave the window until one slot is free.
            idx = len(self._entries) - self.requests_per_minute
            wait = self._entries[idx].t + WINDOW_SEC - now
            why = (
                f"request budget of {self.requests_per_minute} requests/minute "
                "(settings.requests_per_minute)"
            )
        if self.tokens_per_minute:
            if tokens > self.tokens_per_minute:
                return float("inf"), (
                    f"token budget of {self.tokens_per_minute} tokens/minute "
                    "(settings.tokens_per_minute); "
                    f"this request alone needs about {tokens}"
                )
            used = sum(e.tokens for e in self._entries)
            if used + tokens > self.tokens_per_minute:
                freed = 0
                for e in self._entries:
                    freed += e.tokens
                    if used - freed + tokens <= self.tokens_per_minute:
                        w = e.t + WINDOW_SEC - now
                        if w > wait:
                            wait, why = (
                                w,
                                f"token budget of {self.tokens_per_minute} tokens/minute "
                                "(settings.tokens_per_minute)",
                            )
                        break
        return max(0.0, wait), why

    async def reserve(self, tokens: int, deadline: float | None = None) -> _Entry:
        """Takes a slot for a call of about ``tokens`` tokens, waiting if allowed."""
        async with self._lock:
            while True:
                now = self.clock()
                wait, why = self._wait_needed(now, tokens)
                if wait <= 0.0:
                    entry = _Entry(now, tokens)
                    self._entries.append(entry)
                    return entry
                limit = self.max_wait_sec
                if deadline is not None:
                    limit = min(limit, deadline - now)
                if wait > limit:
                    self.rejections += 1
                    retry = "" if wait == float("inf") else f"; retry in {wait:.1f}s"
                    raise BudgetExceeded(f"LLM {why} exhausted{retry}")
                self.waits += 1
                await asyncio.sleep(wait)

    def settle(self, entry: _Entry, tokens: int) -> None:
        """Replaces a reservation's estimate by the tokens actually used."""
        entry.tokens = max(0, int(tokens))

    def reset(self) -> None:
        self._entries.clear()


@dataclass
class UsageStats:
    """What ``metrics()`` reports (the runtime prefixes each key with ``model.``)."""

    requests_total: int = 0
    request_failures_total: int = 0
    retries_total: int = 0
    transient_errors_total: int = 0
    permanent_errors_total: int = 0
    timeouts_total: int = 0
    parse_failures_total: int = 0
    parse_repairs_total: int = 0
    invalid_answers_total: int = 0
    budget_rejections_total: int = 0
    input_tokens_total: int = 0
    output_tokens_total: int = 0
    estimated_token_calls_total: int = 0
    in_flight: int = 0
    latency_last_ms: float = 0.0
    latency_max_ms: float = 0.0
    _latency_sum_ms: float = 0.0
    _latency_n: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def observe_latency(self, seconds: float) -> None:
        ms = seconds * 1000.0
        self.latency_last_ms = ms
        self.latency_max_ms = max(self.latency_max_ms, ms)
        self._latency_sum_ms += ms
        self._latency_n += 1
        self._recent.append(ms)

    def as_metrics(self) -> dict[str, float]:
        recent = sorted(self._recent)

        def q(p: float) -> float:
            return recent[min(len(recent) - 1, int(p * len(recent)))] if recent else 0.0

        return {
            "llm_requests_total": self.requests_total,
            "llm_request_failures_total": self.request_failures_total,
            "llm_retries_total": self.retries_total,
            "llm_transient_errors_total": self.transient_errors_total,
            "llm_permanent_errors_total": self.permanent_errors_total,
            "llm_timeouts_total": self.timeouts_total,
            "llm_parse_failures_total": self.parse_failures_total,
            "llm_parse_repairs_total": self.parse_repairs_total,
            "llm_invalid_answers_total": self.invalid_answers_total,
            "llm_budget_rejections_total": self.budget_rejections_total,
            "llm_input_tokens_total": self.input_tokens_total,
            "llm_output_tokens_total": self.output_tokens_total,
            "llm_tokens_total": self.input_tokens_total + self.output_tokens_total,
            "llm_estimated_token_calls_total": self.estimated_token_calls_total,
            "llm_in_flight": self.in_flight,
            "llm_latency_last_ms": self.latency_last_ms,
            "llm_latency_max_ms": self.latency_max_ms,
            "llm_latency_avg_ms": self._latency_sum_ms / self._latency_n
            if self._latency_n
            else 0.0,
            "llm_latency_p50_ms": q(0.5),
            "llm_latency_p99_ms": q(0.99),
        }
