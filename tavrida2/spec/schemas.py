"""The JSON Schemas of a contract: payloads, the Tavrida headers, the Error.

A handler's payload schema is its ``schema=`` when it has one; else it is
derived from the handler's parameters after ``(self, message, proxy)``: their
names, required when they have no default, a type where the annotation is a
plain JSON type (``int``, ``str``, ``list[str]``, ``float | None`` ...), and
the default where it is JSON. A handler that takes ``**payload`` takes any
object.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from tavrida2 import exceptions
from tavrida2.dispatcher import HandlerInfo
from tavrida2.messages import BROADCAST_HEADER, DEADLINE_HEADER, REQUIRED_HEADERS

#: JSON Schema of a payload nothing is known about.
ANY_OBJECT: dict[str, Any] = {"type": "object", "description": "Any JSON object."}
_JSON_TYPES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}
#: Keywords whose values are data, not schemas: their ``$ref`` keys are left alone.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})
#: Keywords whose values map names (of properties, definitions) to schemas.
_NAMED_SCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)

_HEADER_TEXT = {
    "correlation_id": "The id of the whole chain of calls; kept by every message it causes.",
    "request_id": "The id of one request; its response or error carries the same.",
    "message_id": "The id of this message, new for each one.",
    "message_type": "request, response, error or notification.",
    "reply_to": "The entry point the answer goes to (service.method); empty for a cast, "
    "an answer and a notification.",
    "source": "The entry point that sent the message: service.method, or service for a script.",
    "destination": "The entry point the message is for; empty for a notification.",
}


def headers() -> dict[str, Any]:
    """The Tavrida headers every message carries in its AMQP headers table."""
    return {
        "type": "object",
        "description": "The Tavrida headers (AMQP headers table). Any other header is a user "
        "header: it travels with the message and with everything its handler sends.",
        "required": list(REQUIRED_HEADERS),
        "properties": {
            name: {"type": "string", "description": _HEADER_TEXT[name]}
            for name in (*REQUIRED_HEADERS, "reply_to")
        },
    }


def message_headers(
    message_type: str,
    fixed: Mapping[str, str] | None = None,
    *,
    deadline: bool = False,
    broadcast: bool = False,
) -> dict[str, Any]:
    """What a message of ``message_type`` adds to the common headers.

    ``fixed``: header values every such message has (``{"destination": ...}``);
    ``deadline``: it may carry the deadline of a caller that waits;
    ``broadcast``: it carries the header that marks a broadcast.
    """
    properties: dict[str, Any] = {"message_type": {"const": message_type}}
    required: list[str] = []
    if deadline:
        properties[DEADLINE_HEADER] = {
            "type": "integer",
            "description": "When a caller that waits stops waiting (epoch milliseconds); "
            "a server does not run the request after it.",
        }
    if broadcast:
        properties[BROADCAST_HEADER] = {
            "const": True,
            "description": "Sent to every running instance of the service.",
        }
        required.append(BROADCAST_HEADER)
    properties.update({name: {"const": value} for name, value in (fixed or {}).items()})
    extra: dict[str, Any] = {"properties": properties}
    if required:
        extra["required"] = required
    return extra


def error_payload() -> dict[str, Any]:
    """The payload of an Error answer."""
    return {
        "type": "object",
        "description": "What went wrong: the exception's class, its text and the tavrida2 "
        "code (1000 for any exception without a code of its own; 1041 wrong parameters, "
        "1044 a payload that fails its schema, ...).",
        "required": ["class", "message", "code"],
        "properties": {
            "class": {
                "type": "string",
                "description": "module.ClassName of the exception (only the name for a "
                "built-in one; tavrida.exceptions.X, Tavrida 1.0's name, for 1.0's errors).",
            },
            "message": {"type": "string", "description": "The exception's text."},
            "code": {"type": "integer", "description": "The tavrida2 error code."},
        },
    }


def context() -> dict[str, Any]:
    """The context of a chain of calls, in every message body."""
    return {
        "type": "object",
        "description": "The context of the chain of calls: passed on with everything a "
        "handler sends.",
    }


def payload_schema(
    handler: Callable[..., Any], info: HandlerInfo, strict: bool, where: str
) -> tuple[dict[str, Any], bool]:
    """``(schema, declared)``: the handler's ``schema=`` (True) or one derived from it (False).

    ``strict``: the controller rejects payload keys its handlers do not take.
    ``where`` names the handler in the error raised for a schema that is not JSON.
    """
    if info.schema is not None:
        return as_json(info.schema, where), True
    return derived_schema(handler, strict), False


def as_json(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of ``schema`` made only of JSON values; ConfigError naming ``where`` if not JSON."""
    try:
        copy = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise exceptions.ConfigError(
            reason=f"the schema of handler {where} cannot be written as JSON: {exc}"
        ) from None
    if not isinstance(copy, dict):  # pragma: no cover - the decorator takes only dicts
        raise exceptions.ConfigError(reason=f"the schema of handler {where} is not an object")
    return copy


def derived_schema(handler: Callable[..., Any], strict: bool) -> dict[str, Any]:
    """The payload schema that the parameters of ``handler`` tell (see the module docstring)."""
    parameters = list(inspect.signature(handler).parameters.values())[3:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters) and not any(
        p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters
    ):
        return dict(ANY_OBJECT)
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # annotations that do not evaluate: the names without types
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    takes_any = False
    for parameter in parameters:
        if parameter.kind is parameter.VAR_KEYWORD:
            takes_any = True
            continue
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        prop = _annotation_schema(hints.get(parameter.name))
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _is_json(parameter.default):
            prop["default"] = parameter.default
        properties[parameter.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "description": "From the handler's parameters (it declares no schema=).",
        "properties": properties,
    }
    if required:
        schema["required"] = required
    if strict and not takes_any:
        schema["additionalProperties"] = False
    return schema


def _annotation_schema(annotation: Any) -> dict[str, Any]:
    """``{"type": ...}`` for a plain JSON type annotation; ``{}`` (anything) otherwise."""
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict):
        return {"type": _JSON_TYPES[origin]}
    if origin in (typing.Union, types.UnionType):
        kinds = [_annotation_schema(arg).get("type") for arg in typing.get_args(annotation)]
        if all(isinstance(kind, str) for kind in kinds):
            return {"type": list(dict.fromkeys(kinds))}
    return {}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def rebase_refs(schema: Any, base: str) -> Any:
    """``schema`` with its local ``$ref`` (``#/...``) made relative to ``base`` (``#/a/b``).

    A schema moved into a bigger document keeps pointing at its own parts.
    Values that are data (``const``, ``enum``, ``default``, ``examples``) are
    left as they are.
    """
    if isinstance(schema, list):
        return [rebase_refs(item, base) for item in schema]
    if not isinstance(schema, dict):
        return schema
    moved: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            moved[key] = base + value[1:]
        elif key in _NAMED_SCHEMAS and isinstance(value, dict):
            moved[key] = {name: rebase_refs(sub, base) for name, sub in value.items()}
        elif key in _DATA_KEYWORDS:
            moved[key] = value
        else:
            moved[key] = rebase_refs(value, base)
    return moved


__all__ = [
    "ANY_OBJECT",
    "as_json",
    "context",
    "derived_schema",
    "error_payload",
    "headers",
    "message_headers",
    "payload_schema",
    "rebase_refs",
]
