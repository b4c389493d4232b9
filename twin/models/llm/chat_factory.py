"""Builds the LangChain chat model the LLM world model talks to.

Provider-agnostic by configuration (``world_model.settings``):

- ``provider: google`` (default) - ``langchain_google_genai.ChatGoogleGenerativeAI``,
  ``model_name`` (default :data:`DEFAULT_GEMINI_MODEL`), key from ``GEMINI_API_KEY``
  (or ``GOOGLE_API_KEY``). Google's SDK retries are switched off: the world model
  retries with its own backoff inside the RPC deadline.
- ``provider: openai`` - ``langchain_openai.ChatOpenAI`` (if installed), ``base_url``
  for OpenAI-compatible servers (vLLM, Ollama, LM Studio, ...), key from
  ``api_key_env`` (default ``OPENAI_API_KEY``; self-hosted servers may need none).
- ``chat_model_class: "package.module:Class"`` - any LangChain ``BaseChatModel``,
  constructed with ``chat_model_kwargs``.

Keys never live in settings files: only the *name* of the environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from twin.core.errors import ConfigError

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
PROVIDERS = ("google", "gemini", "openai")


class ChatModelConfigError(ConfigError):
    """The configured chat model cannot be built (missing key, package, class)."""


def provider_of(settings: Mapping[str, Any]) -> str:
    if settings.get("chat_model_class"):
        return "custom"
    p = str(settings.get("provider", "google")).lower()
    return "google" if p == "gemini" else p


def api_key_vars(settings: Mapping[str, Any]) -> tuple[str, ...]:
    custom = settings.get("api_key_env")
    if custom:
        return (str(custom),)
    provider = provider_of(settings)
    if provider == "google":
        return GEMINI_KEY_VARS
    if provider == "openai":
        return ("OPENAI_API_KEY",)
    return ()


def find_api_key(settings: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    for var in api_key_vars(settings):
        value = environ.get(var, "").strip()
        if value:
            return value
    return None


def missing_key_message(settings: Mapping[str, Any]) -> str | None:
    """Why the chat model cannot be built for lack of a key, or None if no key is needed/missing."""
    provider = provider_of(settings)
    if provider == "google":
        return (
            "GEMINI_API_KEY is not set (nor GOOGLE_API_KEY): the gemini world model cannot call "
            "the Gemini API; export GEMINI_API_KEY (in Kubernetes: spec.llm.apiKeySecretRef)"
        )
    if provider == "openai" and not settings.get("base_url"):
        var = api_key_vars(settings)[0]
        return (
            f"{var} is not set: the openai provider needs it unless settings.base_url points at a "
            "self-hosted server"
        )
    return None


def validate(settings: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Configuration problems that can be known before start (no network)."""
    errors: list[str] = []
    provider = provider_of(settings)
    if provider not in (*PROVIDERS, "custom"):
        errors.append(
            f"settings.provider: unknown provider {provider!r}; use google, openai or "
            "settings.chat_model_class"
        )
        return errors
    if provider == "custom":
        target = str(settings["chat_model_class"])
        if ":" not in target:
            errors.append(
                f"settings.chat_model_class: expected 'package.module:Class', got {target!r}"
            )
        kwargs = settings.get("chat_model_kwargs", {})
        if not isinstance(kwargs, Mapping):
            errors.append("settings.chat_model_kwargs: must be a mapping")
        return errors
    if provider == "openai":
        try:
            import_module("langchain_openai")
        except ImportError:
            errors.append(
                "settings.provider: 'openai' needs the langchain-openai package (pip install "
                "langchain-openai)"
            )
    if find_api_key(settings, environ) is None:
        msg = missing_key_message(settings)
        if msg:
            errors.append(msg)
    return errors


def _load_class(target: str) -> type:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ChatModelConfigError(
            f"settings.chat_model_class {target!r} cannot be imported: {exc}"
        ) from exc
    return cls


def build_chat_model(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """The chat model described by ``settings``; raises :class:`ChatModelConfigError`."""
    env = os.environ if environ is None else environ
    provider = provider_of(settings)
    call_timeout = float(settings.get("call_timeout_sec", 20.0))
    temperature = float(settings.get("temperature", 0.2))
    max_tokens = int(settings.get("max_output_tokens", 2048))
    if provider == "custom":
        cls = _load_class(str(settings["chat_model_class"]))
        custom_kwargs = dict(settings.get("chat_model_kwargs") or {})
        try:
            return cls(**custom_kwargs)
        except Exception as exc:  # noqa: BLE001 - any constructor failure is a config problem
            raise ChatModelConfigError(
                f"cannot construct {settings['chat_model_class']}: {exc}"
            ) from exc
    key = find_api_key(settings, env)
    if provider == "google":
        if key is None:
            raise ChatModelConfigError(missing_key_message(settings) or "no API key")
        try:
            from langchain_google_genai import ChatGoogleGenerativeAI
        except ImportError as exc:  # pragma: no cover - the llm extra installs it
            raise ChatModelConfigError(
                "the google provider needs langchain-google-genai (pip install "
                "polaris-digital-twin[llm])"
            ) from exc
        kwargs: dict[str, Any] = {
            "model": str(settings.get("model_name", DEFAULT_GEMINI_MODEL)),
            "google_api_key": key,
            "temperature": temperature,
            "max_output_tokens": max_tokens,
            "timeout": call_timeout,
            "max_retries": 0,
            "response_mime_type": "application/json",
        }
        kwargs.update(dict(settings.get("chat_model_kwargs") or {}))
        try:
            return ChatGoogleGenerativeAI(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ChatModelConfigError(f"cannot construct ChatGoogleGenerativeAI: {exc}") from exc
    if provider == "openai":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:
            raise ChatModelConfigError(
                "the openai provider needs langchain-openai (pip install langchain-openai)"
            ) from exc
        if key is None and not settings.get("base_url"):
            raise ChatModelConfigError(missing_key_message(settings) or "no API key")
        kwargs = {
            "model": str(settings.get("model_name", "gpt-4o-mini")),
            "api_key": key or "not-needed",
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": call_timeout,
            "max_retries": 0,
        }
        if settings.get("base_url"):
            kwargs["base_url"] = str(settings["base_url"])
        kwargs.update(dict(settings.get("chat_model_kwargs") or {}))
        try:
            return ChatOpenAI(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ChatModelConfigError(f"cannot construct ChatOpenAI: {exc}") from exc
    raise ChatModelConfigError(f"unknown provider {provider!r}")
