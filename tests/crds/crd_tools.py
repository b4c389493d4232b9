"""Offline stand-in for what the API server does with a DigitalTwin before storing it.

1. structural defaulting (``default:`` values, applied top-down, also inside defaults),
2. OpenAPI v3 validation of the defaulted object (jsonschema; the k8s extensions
   ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields`` are
   translated to plain JSON Schema),
3. every ``x-kubernetes-validations`` CEL rule, evaluated with cel-python on the node it
   is attached to (``self``), returning the rule's ``message`` when it fails. Transition
   rules (those naming ``oldSelf``) run only in :func:`admit_update`, and only where the
   node exists in both the old and the new object, as on a real API server.

What it does not do (a real API server would): pruning of unknown fields, CEL cost
estimation, ratcheting. tests/cluster/ covers those on a real cluster.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import celpy.adapter
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "digitaltwins.polaris.io.yaml"
CHART_CRD_PATH = ROOT / "charts" / "polaris-twin-operator" / "crds" / "digitaltwins.polaris.io.yaml"
EXAMPLES = ROOT / "examples"


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def openapi_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or load_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return version["schema"]["openAPIV3Schema"]


def load_examples() -> dict[str, dict[str, Any]]:
    """Every DigitalTwin in examples/, by file name."""
    out = {}
    for path in sorted(EXAMPLES.glob("digitaltwin-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DigitalTwin":
                out[path.name] = doc
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting, in place where possible; returns the defaulted value."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, sub in props.items():
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def to_json_schema(schema: Any) -> Any:
    """k8s structural schema -> plain JSON Schema (draft 2020-12 compatible)."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: to_json_schema(v)
        for k, v in schema.items()
        if not k.startswith("x-kubernetes-") and k != "default"
    }
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out.pop("type", None)
        pattern = out.pop("pattern", None)
        out["anyOf"] = [
            {"type": "integer"},
            {"type": "string", **({"pattern": pattern} if pattern else {})},
        ]
    if (
        "properties" in out
        and schema.get("type") == "object"
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        # The API server prunes (or, with strict field validation, rejects) unknown fields.
        out["additionalProperties"] = False
    if "format" in out and out["format"] in ("int32", "int64"):
        out.pop("format")
    return out


def validation_nodes(
    value: Any, schema: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(path, value, schema) for every present node; mirrors apply_defaults' walk."""
    yield path or "<root>", value, schema
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, v in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from validation_nodes(v, sub, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            yield from validation_nodes(v, schema["items"], f"{path}[{i}]")


# celpy logs every evaluation step at DEBUG with huge reprs; kopf's --verbose turns the root
# logger to DEBUG in the operator tests, which made admission cost seconds per object.
logging.getLogger("celpy").setLevel(logging.WARNING)
_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


_MISSING = object()


def eval_rule(rule: str, value: Any, old: Any = _MISSING) -> bool:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    activation = {"self": celpy.adapter.json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = celpy.adapter.json_to_cel(old)
    result = _PROGRAMS[rule].evaluate(activation)
    if isinstance(result, Exception):  # cel-python returns CELEvalError values
        raise result
    return bool(result)


def _at(obj: Any, path: str) -> Any:
    """The node of ``obj`` at a validation_nodes path (``_MISSING`` when absent)."""
    if path == "<root>":
        return obj
    node = obj
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return _MISSING
            node = node[index]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def cel_errors(
    obj: dict[str, Any], schema: dict[str, Any] | None = None, old: Any = _MISSING
) -> list[str]:
    schema = schema or openapi_schema()
    errors = []
    for path, value, node in validation_nodes(obj, schema):
        for rule in node.get("x-kubernetes-validations") or []:
            previous = _MISSING
            if "oldSelf" in rule["rule"]:
                previous = _MISSING if old is _MISSING else _at(old, path)
                if previous is _MISSING:
                    continue  # a transition rule: only on update, where both exist
            if not eval_rule(rule["rule"], value, previous):
                errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    return errors


def admit(
    obj: dict[str, Any], crd: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Default, schema-validate and CEL-validate ``obj`` like the API server would.

    Returns the defaulted object and every error (empty = admitted).
    """
    schema = openapi_schema(crd)
    obj = apply_defaults(copy.deepcopy(obj), schema)
    validator = jsonschema.Draft202012Validator(to_json_schema(schema))
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    if not errors:
        errors = cel_errors(obj, schema)
    return obj, errors


def admit_update(
    old: dict[str, Any], new: dict[str, Any], crd: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Like :func:`admit` for an update of the stored ``old`` object to ``new``
    (transition rules see both, defaults applied to both)."""
    schema = openapi_schema(crd)
    old = apply_defaults(copy.deepcopy(old), schema)
    obj, errors = admit(new, crd)
    if not errors:
        errors = cel_errors(obj, schema, old)
    return obj, errors


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    """The defaulted object; fails loudly when the API server would refuse it."""
    out, errors = admit(obj)
    assert not errors, errors
    out.setdefault("metadata", {}).setdefault("namespace", "default")
    return out
