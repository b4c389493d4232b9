"""Fake LangChain chat models for the LLM world-model tests (no network, ever)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class RecordingChatModel(GenericFakeChatModel):
    """``GenericFakeChatModel`` that keeps every prompt it was sent."""

    calls: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def prompt_text(self, call: int = -1) -> str:
        return "\n".join(str(m.content) for m in self.calls[call])


def recording(*replies: str | dict[str, Any] | AIMessage) -> RecordingChatModel:
    msgs: list[str | AIMessage] = [json.dumps(r) if isinstance(r, dict) else r for r in replies]
    return RecordingChatModel(messages=iter(msgs))


class ScriptedChatModel(BaseChatModel):
    """Each call takes the next step: an exception to raise, a delay, or a reply."""

    steps: list[Any] = Field(default_factory=list)
    delay: float = 0.0
    calls: int = 0
    active: int = 0
    max_active: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _next(self) -> AIMessage:
        self.calls += 1
        step = self.steps.pop(0) if self.steps else self.steps_default()
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, AIMessage):
            return step
        return AIMessage(content=json.dumps(step) if isinstance(step, dict) else str(step))

    def steps_default(self) -> Any:
        raise RuntimeError("script exhausted")

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        if self.delay:
            time.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._next())])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return ChatResult(generations=[ChatGeneration(message=self._next())])
        finally:
            self.active -= 1


class HttpError(Exception):
    """Looks like a provider SDK error: carries an HTTP status code."""

    def __init__(self, status_code: int, message: str = "") -> None:
        super().__init__(message or f"HTTP {status_code}")
        self.status_code = status_code


def iter_replies(replies: list[Any]) -> Iterator[Any]:
    return iter(replies)
