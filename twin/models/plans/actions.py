"""What an action does to a tier: change its capacity, or set its quality knob.

Built-in vocabulary (action types are upper case; parameters as in ``ControlAction.params``):

================================================  ==========================================
capacity, relative (``count``, default 1)          ADD_SERVER, SCALE_UP, ADD_REPLICA,
                                                   ADD_WORKER, ADD_INSTANCE (+);
                                                   REMOVE_SERVER, SCALE_DOWN, REMOVE_REPLICA,
                                                   REMOVE_WORKER, REMOVE_INSTANCE (-)
capacity, absolute (``replicas``, ``servers``,     SCALE_DEPLOYMENT, SET_REPLICAS,
``instances``, ``workers``, ``count``, ``value``)  SET_SERVERS, SCALE
quality knob (``value``, ``level``, ``dimmer``)    SET_DIMMER, SWITCH_MODEL, SET_MODEL,
                                                   SET_QUALITY, SET_LEVEL, ADJUST_QOS
================================================  ==========================================

``settings.systems.<name>.actions`` adds or overrides types per system, e.g.
``{RESIZE: {effect: capacity_set, param: size}}`` or ``{BOOST: {effect: capacity_delta,
sign: 1, param: n}}``. Everything else has no structural model: its effect may be
learned from the execution log (``effects.py``) or is reported as not modelled.
Capacity is clamped to [1, max capacity]; malformed parameters are INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twin.core.errors import InvalidRequest
from twin.models.domain import Action

CAPACITY_DELTA: dict[str, int] = {
    "ADD_SERVER": 1,
    "SCALE_UP": 1,
    "ADD_REPLICA": 1,
    "ADD_WORKER": 1,
    "ADD_INSTANCE": 1,
    "REMOVE_SERVER": -1,
    "SCALE_DOWN": -1,
    "REMOVE_REPLICA": -1,
    "REMOVE_WORKER": -1,
    "REMOVE_INSTANCE": -1,
}
CAPACITY_SET = frozenset({"SCALE_DEPLOYMENT", "SET_REPLICAS", "SET_SERVERS", "SCALE"})
KNOB_SET = frozenset(
    {"SET_DIMMER", "SWITCH_MODEL", "SET_MODEL", "SET_QUALITY", "SET_LEVEL", "ADJUST_QOS"}
)
DELTA_PARAMS = ("count", "servers", "delta", "replicas", "value", "n")
SET_PARAMS = ("replicas", "servers", "instances", "workers", "count", "value", "target_replicas")
KNOB_PARAMS = ("value", "level", "dimmer", "model_level", "quality")
EFFECTS = ("capacity_delta", "capacity_set", "knob_set")


@dataclass(frozen=True, slots=True)
class ActionKind:
    effect: str  # one of EFFECTS
    sign: int = 1
    params: tuple[str, ...] = ()


def vocabulary(system_settings: Mapping[str, Any]) -> dict[str, ActionKind]:
    out: dict[str, ActionKind] = {
        k: ActionKind("capacity_delta", s, DELTA_PARAMS) for k, s in CAPACITY_DELTA.items()
    }
    out.update({k: ActionKind("capacity_set", 1, SET_PARAMS) for k in CAPACITY_SET})
    out.update({k: ActionKind("knob_set", 1, KNOB_PARAMS) for k in KNOB_SET})
    custom = system_settings.get("actions") or {}
    if isinstance(custom, Mapping):
        for name, spec in custom.items():
            if not isinstance(spec, Mapping) or spec.get("effect") not in EFFECTS:
                raise InvalidRequest(
                    f"settings: actions.{name}.effect must be one of {', '.join(EFFECTS)}"
                )
            param = spec.get("param")
            default = {
                "capacity_delta": DELTA_PARAMS,
                "capacity_set": SET_PARAMS,
                "knob_set": KNOB_PARAMS,
            }[spec["effect"]]
            out[str(name).upper()] = ActionKind(
                spec["effect"], int(spec.get("sign", 1)), (str(param),) if param else default
            )
    return out


def _number(a: Action, keys: tuple[str, ...]) -> tuple[str | None, float | None]:
    for k in keys:
        if k in a.params:
            try:
                v = float(a.params[k])
            except ValueError:
                return k, None
            return k, v if math.isfinite(v) else None
    return None, None


def validate(
    actions: Sequence[Action], vocab: Mapping[str, ActionKind], prefix: str = "actions"
) -> None:
    """Malformed parameters of structurally modelled actions are INVALID_ARGUMENT."""
    for i, a in enumerate(actions):
        kind = vocab.get(a.action_type.upper())
        if kind is None:
            continue
        key, v = _number(a, kind.params)
        where = f"{prefix}[{i}].params.{key or kind.params[0]}"
        if kind.effect == "capacity_delta":
            if key is not None and (v is None or v < 0):
                raise InvalidRequest(f"{a.action_type} needs a count >= 0", where)
        elif kind.effect == "capacity_set":
            if v is None or v < 1:
                raise InvalidRequest(
                    f"{a.action_type} needs a target capacity >= 1 "
                    f"({' or '.join(kind.params[:3])})",
                    where,
                )
        elif kind.effect == "knob_set":
            if v is None and not _symbolic_knob(a):
                raise InvalidRequest(
                    f"{a.action_type} needs a numeric value ({' or '.join(kind.params[:3])})", where
                )


def _symbolic_knob(a: Action) -> bool:
    """A knob set by name (``model=yolov5m``): valid, but only a learned effect can model it."""
    return any(k in a.params for k in ("model", "name", "profile")) and not any(
        k in a.params for k in KNOB_PARAMS
    )


@dataclass(slots=True)
class PlanConfig:
    """A tier's configuration after a plan, and what the plan left to other models."""

    units: int
    knob: float | None
    unit_delta: int
    notes: list[str] = field(default_factory=list)
    other: list[Action] = field(default_factory=list)  # not structural: learned effects or unknown
    knob_unestimated: list[Action] = field(default_factory=list)  # a knob setting with no estimate
    clamped: bool = False


def apply(
    actions: Sequence[Action],
    units: int,
    knob: float | None,
    max_units: int | None,
    vocab: Mapping[str, ActionKind],
    knob_kind: str = "none",
    knob_known: Any = None,
) -> PlanConfig:
    """The configuration after ``actions`` (in order) from (``units``, ``knob``).

    ``knob_known(value) -> bool`` says whether the tier has a service-time estimate at a
    knob setting; settings without one go to ``knob_unestimated``.
    """
    c, k = units, knob
    out = PlanConfig(units, knob, 0)
    for a in actions:
        kind = vocab.get(a.action_type.upper())
        if kind is None:
            out.other.append(a)
            continue
        if kind.effect in ("capacity_delta", "capacity_set"):
            _, v = _number(a, kind.params)
            if kind.effect == "capacity_delta":
                n = int(round(v)) if v is not None else 1
                want = c + kind.sign * n
                label = f"{a.action_type} {kind.sign * n:+d}"
            else:
                want = int(round(v or c))
                label = f"{a.action_type} to {want}"
            new = max(1, want)
            if max_units is not None:
                new = min(new, max_units)
            note = f"{label}: capacity {c} → {new}"
            if new != want:
                note += f" (clamped to [1, {max_units if max_units is not None else '∞'}])"
                out.clamped = True
            out.notes.append(note)
            c = new
            continue
        if knob_kind == "none" or knob is None:
            out.other.append(a)
            continue
        _, v = _number(a, kind.params)
        if v is None:  # set by name: nothing structural to go on
            out.other.append(a)
            continue
        new_k = min(1.0, max(0.0, v)) if knob_kind == "dimmer" else v
        if knob_kind == "levels" and knob_known is not None and not knob_known(new_k):
            out.knob_unestimated.append(a)
            continue
        out.notes.append(f"{a.action_type}: knob {k:g} → {new_k:g}")
        k = new_k
    out.units, out.knob, out.unit_delta = c, k, c - units
    return out
