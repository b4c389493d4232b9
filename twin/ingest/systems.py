"""Which managed systems a twin answers for (``digital_twin.systems``).

One twin per managed system (or per group of systems) gives each its own isolated world
model. The twin still receives every message (no shared queue group), keeps the records of
its systems and counts the others as skipped: they are not errors, so they never go to the
dead-letter subject.

- Telemetry belongs to its ``source``.
- An execution result belongs to ``metadata.system``, else its ``target``.
- A calibration belongs to ``system`` (alias ``source``) in its predicted or actual outcome.

A record that names no system at all (an execution without target, a calibration by
simulation id) cannot be attributed and is applied: the twin cannot tell whose it is, and
losing it silently would be worse than sharing it.

Patterns are ``fnmatch`` globs (``*``, ``?``, ``[...]``), matched case-sensitively; the
verdict per system name is cached (bounded), so the hot path pays one dict lookup per
point.

Server-side filtering: when a subject's last token is ``*`` it carries the system name, and
when every entry of ``systems`` is a literal name, :meth:`SystemFilter.subjects_for` narrows
that subject to one concrete subject per system (NATS cannot express a glob inside a token,
so patterns keep the wildcard and the twin filters after decoding).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["SystemFilter", "calibration_system", "execution_system", "subject_matches"]

_GLOB = re.compile(r"[*?\[\]]")
_CACHE_MAX = 65536


def execution_system(
    metadata: Mapping[str, Any] | None, target: str | None, output: Mapping[str, Any] | None = None
) -> str:
    """The system an execution result is about ("" when it names none)."""
    meta = metadata or {}
    for value in (meta.get("system"), target, meta.get("target"), (output or {}).get("target")):
        if value:
            return str(value)
    return ""


def calibration_system(
    predicted: Mapping[str, Any] | None, actual: Mapping[str, Any] | None
) -> str:
    """The system a calibration is about ("" when it names none)."""
    for outcome in (predicted or {}, actual or {}):
        for key in ("system", "source"):
            value = outcome.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


class SystemFilter:
    """Matches system names against the configured names and patterns."""

    def __init__(self, systems: Iterable[str]) -> None:
        self.systems: tuple[str, ...] = tuple(dict.fromkeys(s for s in systems if s))
        self._literal = frozenset(s for s in self.systems if not _GLOB.search(s))
        self._patterns = [re.compile(fnmatch.translate(s)) for s in self.systems if _GLOB.search(s)]
        self._cache: dict[str, bool] = {}
        # False when every system is accepted (no ``systems``): a plain attribute, read per
        # message on the ingestion path.
        self.active = bool(self.systems)

    @property
    def literal(self) -> bool:
        """Every entry is a plain name that fits in one subject token (so NATS subjects can
        express the filter)."""
        return (
            self.active
            and not self._patterns
            and not any(c in name for name in self.systems for c in ". >")
        )

    def accepts(self, system: str) -> bool:
        """Whether records of ``system`` are applied ("" = unattributed: applied)."""
        if not self.systems or not system:
            return True
        verdict = self._cache.get(system)
        if verdict is None:
            verdict = system in self._literal or any(p.match(system) for p in self._patterns)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[system] = verdict
        return verdict

    def subjects_for(self, subject: str) -> list[str]:
        """Concrete subjects the server can filter on for a configured ``subject``.

        ``polaris.telemetry.events.stream.*`` with systems ``[swim, web]`` gives
        ``[...stream.swim, ...stream.web]``; a subject without a trailing ``*`` token, or
        patterns among the systems, give ``[subject]`` unchanged.
        """
        tokens = subject.split(".")
        if tokens[-1] != "*" or not self.literal:
            return [subject]
        prefix = ".".join(tokens[:-1])
        return [f"{prefix}.{name}" for name in self.systems]

    def server_side(self, subjects: Sequence[str]) -> list[str]:
        """All concrete filter subjects for a list of configured subjects (order kept)."""
        out: list[str] = []
        for subject in subjects:
            for concrete in self.subjects_for(subject):
                if concrete not in out:
                    out.append(concrete)
        return out


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching (``*`` one token, ``>`` the rest)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)
