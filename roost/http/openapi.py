"""The OpenAPI document: quart-schema's, shaped so a client generator gives a usable client.

What this provider adds to quart-schema's document:

* Operation ids are the route's own name in camelCase (``create_account`` -> ``createAccount``),
  not quart-schema's method-prefixed function name. A route whose function name is not unique
  across the API, or not the name a client should call, sets one with quart-schema's
  ``operation_id("listScoutItems")`` decorator, used as given.
* Every operation carries one tag, its area: ``device`` for the device API (``/api/device/``, a
  device token), else ``TAG_OF_BLUEPRINT``'s per blueprint (a blueprint not in the table is
  tagged with its own name); the document lists the tags.
* Request and response bodies are named component schemas (``$ref`` to
  ``#/components/schemas/Account``) rather than inlined per operation, generated together in one
  pass so one model is one schema; a generic ``Page[User]`` is ``UserPage``.
* Every 4xx/5xx answer is ``$ref: #/components/responses/Error``, the one error body.
* A required query parameter (``account_id`` of ``GET /api/admin/users``) is marked required:
  quart-schema looks for ``required`` inside each property, where JSON Schema never puts it.
* A JSON request body is marked required: without one the route answers 400 or 415.
* Every route that takes a JSON body documents the 415 it answers to a body sent as anything
  else (``RoostRequest.get_json`` raises it for every route alike, so it is added here once).
* An operation's summary is the first sentence of its route function's docstring (keep it short:
  what the call does), its description the whole docstring.
* The shared ``TimeZone`` enum, and ``pattern: ^[^\u0000]*$`` on every request string with no
  pattern of its own (``Body`` and ``PageQuery`` refuse NUL).

A new route needs no change here: quart-schema models, ``documented_errors`` for its 4xx/5xx, a
docstring, and in its models the constraints the server checks (``Field`` limits, ``pattern()``
for a regex a validator applies, ``only_nullable()`` on a PATCH body, ``cursor_type()`` for a
list's cursor shape). tests/e2e/test_openapi_client.py and test_openapi_fuzz.py check the result.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Any, Callable

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from quart_schema import OpenAPIProvider
from quart_schema.extension import QUART_SCHEMA_OPERATION_ID_ATTRIBUTE
from werkzeug.routing import Rule

from roost.http.errors import ErrorBody
from roost.http.models import SHARED_SCHEMA_KEY, SHARED_SCHEMAS

NUL_FREE = "^[^\\u0000]*$"  # the regex text ^[^\u0000]*$ (no literal NUL in the document)
REF_PREFIX = "#/components/schemas/"
REF_TEMPLATE = REF_PREFIX + "{model}"
SENTENCE_END = re.compile(r"(?<=\.)\s")  # where a summary ends: the first ". "
GENERIC_NAME = re.compile(r"([A-Za-z0-9]+)_([A-Za-z0-9]+)_")
ERROR_RESPONSE = {"$ref": "#/components/responses/Error"}

# The area of each blueprint: one tag per operation, so a generated client has one module per area.
TAG_OF_BLUEPRINT = {
    "ops": "ops",
    "admin": "tenancy",
    "device": "device",
    "scouts": "scouts",
    "notifications": "notifications",
    "unsubscribe": "notifications",
    "handoffs": "handoffs",
    "processors": "processors",
    "outreach": "dispatch",
    "dispatch": "dispatch",
    "webhooks": "webhooks",
}
TAG_DESCRIPTIONS = {
    "ops": "Probes, status and metrics.",
    "tenancy": "Accounts, users and devices (service token).",
    "device": "What a device does with its own token.",
    "scouts": "Scouts, their items and proposals.",
    "notifications": "Notifications, inboxes, digests and unsubscribing.",
    "handoffs": "Handoffs to people: park, escalate, claim.",
    "processors": "Session processors, their runs and what they count.",
    "dispatch": "Batches of messages sent through devices.",
    "webhooks": "Signed webhooks (Standard Webhooks): endpoints, their secrets and deliveries.",
}


def camel_case(name: str) -> str:
    """``list_scout_items`` -> ``listScoutItems``."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class RoostOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        # Body schemas are collected while the paths are built, each as a placeholder ``$ref``
        # dict, and generated together at the end: one schema per model and mode, named once.
        self._bodies: list[tuple[type[BaseModel], JsonSchemaMode, dict[str, Any]]] = []
        document = super().schema()
        components = document["components"]
        pairs = list({(model, mode): None for model, mode, _ in self._bodies})
        refs, top = models_json_schema(pairs, ref_template=REF_TEMPLATE)
        names = readable_names(list(top.get("$defs", {})))
        for model, mode, placeholder in self._bodies:
            placeholder.update(renamed(refs[(model, mode)], names))
        merge_schemas(components["schemas"], {names[name]: renamed(schema, names)
                                              for name, schema in top.get("$defs", {}).items()})
        for name in sorted(shared_refs(document)):
            components["schemas"][name] = SHARED_SCHEMAS[name]
        for name, schema in components["schemas"].items():
            schema["title"] = name  # what a generator names the class: one name per schema
        refuse_nul(document)
        error_ref = renamed(refs[(ErrorBody, "serialization")], names) if (ErrorBody, "serialization") in refs else None
        if error_ref is not None:
            components["responses"] = {"Error": {
                "description": "The error body every 4xx and 5xx answer carries.",
                "content": {"application/json": {"schema": error_ref}},
            }}
        used = sorted({tag for ops in document["paths"].values() for op in ops.values() for tag in op.get("tags", [])})
        document["tags"] = [{"name": tag, **({"description": TAG_DESCRIPTIONS[tag]} if tag in TAG_DESCRIPTIONS else {})}
                            for tag in used]
        return document

    def _body_ref(self, model: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        placeholder: dict[str, Any] = {}
        self._bodies.append((model, mode, placeholder))
        return placeholder

    def build_querystring_parameters(self, model: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        parameters, definitions = super().build_querystring_parameters(model)
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, definitions

    def build_request_body(self, model: Any, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body, definitions = super().build_request_body(model, source)
        for media in body["content"].values():
            media["schema"] = self._body_ref(model, "validation")
        return {**body, "required": True}, {}

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is ErrorBody:
            self._body_ref(model, "serialization")  # so the shared response's schema is generated
            return dict(ERROR_RESPONSE), {}
        response, _ = super().build_response_object(model, headers_model)
        response["content"]["application/json"]["schema"] = self._body_ref(model, "serialization")
        return response, {}

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
        tag = TAG_OF_BLUEPRINT.get(blueprint, blueprint or "default")
        if rule.rule.startswith("/api/device/"):
            tag = "device"
        summary, description = summarize(inspect.getdoc(self._app.view_functions[rule.endpoint]))
        for operations in paths.values():
            for method, operation in list(operations.items()):
                responses = dict(operation["responses"])
                if "requestBody" in operation and 415 not in responses:
                    responses[415] = self.build_response_object(ErrorBody, None)[0]
                if not any(200 <= int(code) < 300 for code in responses):
                    responses[200] = {"description": "OK"}
                # the operation objects of one rule share their responses: copy before changing
                operations[method] = {**operation, "responses": dict(sorted(responses.items())), "tags": [tag]}
                operations[method].pop("summary", None)
                operations[method].pop("description", None)
                if summary:
                    operations[method]["summary"] = summary
                if description:
                    operations[method]["description"] = description
        return paths, components

    def operation_id(self, method: str, path: str, func: Callable) -> str | None:
        explicit = getattr(func, QUART_SCHEMA_OPERATION_ID_ATTRIBUTE, None)
        return explicit if explicit is not None else camel_case(func.__name__)


def summarize(doc: str | None) -> tuple[str, str]:
    """A route's summary (its docstring's first sentence) and description (the whole docstring,
    when it says more). quart-schema's summary is the first line, often cut mid-sentence."""
    if not doc:
        return "", ""
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    first = paragraphs[0]
    summary = SENTENCE_END.split(first, maxsplit=1)[0].rstrip(".")
    description = "\n\n".join(paragraphs)
    return summary, description if description.rstrip(".") != summary else ""


def shared_refs(schema: Any) -> set[str]:
    """Turn each ``{"x-shared-schema": name}`` (see ``roost.http.models``) into a ``$ref``; answer the names."""
    names: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.pop(SHARED_SCHEMA_KEY, None)
            if name is not None:
                names.add(name)
                node["$ref"] = REF_PREFIX + name
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return names


def refuse_nul(document: dict[str, Any]) -> None:
    """Say in the document what ``Body`` and ``PageQuery`` refuse: text with a NUL character.

    Every string of a request (query parameters, and bodies with every schema they reach) that
    has no pattern, enum or format of its own gets ``NUL_FREE``; the patterns roost writes
    leave NUL out themselves.
    """
    schemas = document["components"]["schemas"]
    roots: list[Any] = []
    for operations in document["paths"].values():
        for operation in operations.values():
            roots += [p["schema"] for p in operation.get("parameters", []) if p["in"] == "query"]
            roots += [media["schema"] for media in operation.get("requestBody", {}).get("content", {}).values()]
    seen: set[str] = set()
    while roots:
        schema = roots.pop()
        if isinstance(schema, list):
            roots += schema
            continue
        if not isinstance(schema, dict):
            continue
        ref = schema.get("$ref", "")
        if ref.startswith(REF_PREFIX) and ref not in seen:
            seen.add(ref)
            roots.append(schemas.get(ref[len(REF_PREFIX):]))
        if schema.get("type") == "string" and not {"pattern", "enum", "format", "const"} & schema.keys():
            schema["pattern"] = NUL_FREE
        if schema.get("type") == "object" and schema.get("additionalProperties") is True:
            # Free JSON (a payload, a config): its keys here; deeper down only a recursive schema could
            # say it, and client generators do not take those.
            schema["propertyNames"] = {"pattern": NUL_FREE}
        for key in ("properties", "patternProperties", "$defs"):
            roots += list(schema.get(key, {}).values())
        for key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "prefixItems"):
            if key in schema:
                roots.append(schema[key])


def readable_names(names: list[str]) -> dict[str, str]:
    """Component names a generator turns into good class names, by pydantic's name.

    pydantic names a generic ``Page[User]`` ``Page_User_`` (here ``UserPage``), and two models of
    one name in different modules by their module path (``roost__http__handoffs__Notification``):
    such a model is named by its ``title`` (``model_config = ConfigDict(title=...)``), else by its
    own name when no other model is, else by its module and name (``HandoffsNotification``).
    """
    out: dict[str, str] = {}
    untitled: list[tuple[str, str, str]] = []
    for name in names:
        generic = GENERIC_NAME.fullmatch(name)
        if generic:
            out[name] = generic.group(2) + generic.group(1)
        elif "__" in name:
            *module, cls_name = name.split("__")
            model = getattr(importlib.import_module(".".join(module)), cls_name, None)
            title = model.model_config.get("title") if isinstance(model, type) and issubclass(model, BaseModel) \
                else None
            if title:
                out[name] = title
            else:
                untitled.append((name, module[-1], cls_name))
        else:
            out[name] = name
    for name, module, cls_name in untitled:
        taken = set(out.values()) | {c for n, _, c in untitled if n != name}
        out[name] = cls_name if cls_name not in taken else module.capitalize() + cls_name
    return out


def renamed(schema: Any, names: dict[str, str]) -> Any:
    """``schema`` with its ``$ref`` targets renamed per ``names``."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                value = REF_PREFIX + names.get(value[len(REF_PREFIX):], value[len(REF_PREFIX):])
            out[key] = renamed(value, names)
        return out
    if isinstance(schema, list):
        return [renamed(item, names) for item in schema]
    return schema


def merge_schemas(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add ``more`` to the component schemas; two different schemas under one name is a bug here."""
    for name, schema in more.items():
        if name in into and json.dumps(into[name], sort_keys=True) != json.dumps(schema, sort_keys=True):
            raise ValueError(f"two different schemas are both named {name!r} in the OpenAPI document")
        into[name] = schema
