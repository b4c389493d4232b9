"""The OpenAPI 3.1 document of the REST gateway, generated from the proto's
descriptors at run time, so it cannot drift from the wire contract.

Schemas follow the proto3 canonical JSON mapping with the proto's own field names
(what ``grpcurl`` prints): ``int32`` → integer, ``uint64``/``int64`` → string,
``double`` → number (or the strings "NaN"/"Infinity"), maps → objects,
``google.protobuf.Struct`` → any JSON object. Every field is optional on input.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from twin import __version__
from twin._proto import digital_twin_pb2 as pb

F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_DOUBLE: {"type": "number"},
    F.TYPE_FLOAT: {"type": "number"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}

RPCS = {
    "query": (
        "Query",
        "QueryRequest",
        "QueryResponse",
        "Current, historical or natural-language questions.",
    ),
    "simulate": (
        "Simulate",
        "SimulationRequest",
        "SimulationResponse",
        "Forecasts and what-if analysis.",
    ),
    "diagnose": (
        "Diagnose",
        "DiagnosisRequest",
        "DiagnosisResponse",
        "Ranked root-cause hypotheses.",
    ),
    "manage": (
        "Manage",
        "ManagementRequest",
        "ManagementResponse",
        "Health, metrics, reload, reset, replay, snapshots.",
    ),
}

ERRORS = {
    "400": "INVALID_ARGUMENT: the body is not a valid request (unknown field, wrong type, failed "
           "validation).",
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "413": "The body is larger than grpc.max_message_size.",
    "429": "RESOURCE_EXHAUSTED: too many requests in flight or waiting (grpc.max_workers, "
           "performance.max_concurrent_queries).",
    "503": "UNAVAILABLE: the twin is shutting down.",
    "504": "DEADLINE_EXCEEDED: the request's Grpc-Timeout passed.",
}


def field_schema(f: FieldDescriptor) -> dict[str, Any]:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        value = f.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value)}
    one = _single(f)
    return {"type": "array", "items": one} if f.is_repeated else one


def _single(f: FieldDescriptor) -> dict[str, Any]:
    if f.type == F.TYPE_MESSAGE and f.message_type is not None:
        if f.message_type.full_name == "google.protobuf.Struct":
            return {"type": "object", "additionalProperties": True}
        return {"$ref": f"#/components/schemas/{f.message_type.name}"}
    schema = dict(_SCALARS[f.type])
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return {"oneOf": [schema, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
    return schema


def message_schema(d: Descriptor) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: field_schema(f) for f in d.fields},
    }


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    schemas = {name: message_schema(d) for name, d in pb.DESCRIPTOR.message_types_by_name.items()}
    schemas["Error"] = {
        "type": "object",
        "required": ["code", "status", "message"],
        "properties": {
            "code": {"type": "integer", "description": "google.rpc.Code number"},
            "status": {"type": "string", "description": "gRPC status name, e.g. INVALID_ARGUMENT"},
            "message": {"type": "string"},
        },
    }
    errors = {
        code: {"description": text, "content": _json("Error")} for code, text in ERRORS.items()
    }
    timeout = {
        "name": "Grpc-Timeout",
        "in": "header",
        "required": False,
        "description": "Client deadline in gRPC form (e.g. 2S, 500m); past it the answer is 504.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,8}[HMSmun]$"},
    }
    paths: dict[str, Any] = {}
    for path, (rpc, req, resp, summary) in RPCS.items():
        paths[f"/v1/{path}"] = {
            "post": {
                "operationId": rpc,
                "summary": f"{summary} (gRPC polaris.digitaltwin.DigitalTwin/{rpc})",
                "parameters": [timeout],
                "requestBody": {"required": False, "content": _json(req)},
                "responses": {"200": {"description": "OK", "content": _json(resp)}, **errors},
            }
        }
    paths["/v1/watch"] = {
        "get": {
            "operationId": "Watch",
            "summary": "Pushed events as server-sent events (gRPC Watch): id = sequence, event = "
                       "kind, data = TwinEvent JSON.",
            "parameters": [
                {
                    "name": "systems",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "comma-separated systems (empty: all)",
                },
                {
                    "name": "kinds",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "comma-separated kinds (empty: all)",
                },
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "replay retained events after this sequence",
                },
                {
                    "name": "from_start",
                    "in": "query",
                    "schema": {"type": "boolean"},
                    "description": "replay every retained event first",
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "schema": {"type": "string"},
                    "description": "as since (set by EventSource on reconnect)",
                },
            ],
            "responses": {
                "200": {
                    "description": "text/event-stream of TwinEvent; a dropped slow watcher gets a "
                                   "final 'dropped' event",
                    "content": {
                        "text/event-stream": {"schema": {"$ref": "#/components/schemas/TwinEvent"}}
                    },
                },
                "400": errors["400"],
                "429": errors["429"],
            },
        }
    }
    status = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "Liveness",
            "responses": {
                "200": {
                    "description": "the process answers",
                    "content": {"application/json": {"schema": status}},
                }
            },
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "Readiness",
            "responses": {
                "200": {
                    "description": "SERVING (as the gRPC health service '')",
                    "content": {"application/json": {"schema": status}},
                },
                "503": {
                    "description": "NOT_SERVING, with the reason",
                    "content": {"application/json": {"schema": status}},
                },
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "POLARIS Digital Twin REST/JSON gateway",
            "version": __version__,
            "description": "The gRPC service polaris.digitaltwin.DigitalTwin over HTTP/JSON. "
                           "Bodies use the "
            "proto3 canonical JSON mapping with the proto's field names, as grpcurl takes and "
            "prints them.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
