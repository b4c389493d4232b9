"""One error tree for the whole twin.

::

    TwinError
    ├── ConfigError          invalid or unreadable configuration (.errors: list of "path: message")
    │   ├── ChatModelConfigError   the LLM chat model cannot be built (models.llm.chat_factory)
    │   └── PortInUse        a configured port cannot be bound (.setting, .address) → exit 2
    ├── DecodeError          a NATS payload that fails decoding/validation (.reason, .index, .raw)
    ├── InvalidRequest       a malformed gRPC request → INVALID_ARGUMENT
    ├── Busy                 admission refused: too many requests in flight → RESOURCE_EXHAUSTED
    ├── IngestError          NATS connection / subscription failures
    ├── SnapshotError        an unusable snapshot file (durability.snapshot; .path, .reason)
    └── ModelError           a world model failed to answer
        ├── ModelNotFound    no model registered under that name
        ├── ModelUnavailable the model is not initialised or a dependency is missing
        ├── LLMFailure       an LLM task produced no valid answer (models.llm.runner; .reason)
        ├── BudgetExceeded   the LLM's per-minute budget refuses a call now (models.llm.budget)
        └── AnswerError      an LLM reply failing its schema (models.llm.schemas; a ValueError)

The errors of one area are defined next to the code that raises them and listed here,
so ``except TwinError`` catches everything the twin raises on purpose.

Domain failures (a question the model cannot answer) are *not* errors: they are
returned in-band as ``success=False`` with an explanation, as existing clients expect.
"""

from __future__ import annotations


class TwinError(Exception):
    """Base of every error raised by the twin."""


class ConfigError(TwinError):
    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        self.errors = list(errors or [])
        detail = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{message}\n{detail}" if detail else message)


class PortInUse(ConfigError):
    """A configured listen address cannot be bound; ``setting`` names the config key."""

    def __init__(self, setting: str, address: str, flag: str = "") -> None:
        self.setting = setting
        self.address = address
        how = f"digital_twin.{setting}" + (f" or {flag}" if flag else "")
        super().__init__(
            f"{setting}: cannot listen on {address}: the address is in use (or not this host's); "
            f"choose another port with {how} (0 picks a free one)"
        )


class DecodeError(TwinError):
    """Carries the reason that goes to the dead-letter subject."""

    def __init__(
        self, reason: str, index: int | None = None, raw: bytes | None = None, subject: str = ""
    ) -> None:
        self.reason = reason
        self.index = index  # position inside a batch message
        self.raw = raw  # the offending event's bytes, for the dead-letter record
        self.subject = subject
        super().__init__(reason)


class InvalidRequest(TwinError):
    """Maps to gRPC ``INVALID_ARGUMENT``; ``field`` names the offending request field."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class Busy(TwinError):
    """Admission refused a request: as many are waiting as may run (→ RESOURCE_EXHAUSTED)."""


class IngestError(TwinError):
    pass


class ModelError(TwinError):
    pass


class ModelNotFound(ModelError):
    pass


class ModelUnavailable(ModelError):
    pass
