"""LLM world models (``gemini``): LangChain chains grounded in the twin's state.

Modules: ``gemini`` (the ``WorldModel``), ``chat_factory`` (which LangChain chat model,
from settings), ``grounding`` (the bounded state summary a prompt carries), ``prompts``
(templates), ``schemas`` (answer schemas and validation), ``runner`` (timeouts,
retries, concurrency, repair), ``budget`` (per-minute request/token budget, usage).
Importing this package does not import LangChain; ``gemini`` and ``runner`` do.
"""
