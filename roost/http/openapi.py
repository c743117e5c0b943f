"""The OpenAPI document: quart-schema's, with three gaps closed so it says what the API does.

* A required query parameter (``account_id`` of ``GET /api/admin/users``) is marked required:
  quart-schema looks for ``required`` inside each property, where JSON Schema never puts it.
* A JSON request body is marked required: without one the route answers 400 or 415.
* Every route that takes a JSON body documents the 415 it answers to a body sent as anything
  else (``RoostRequest.get_json`` raises it for every route alike, so it is added here once).
"""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from roost.http.errors import ErrorBody


class RoostOpenAPIProvider(OpenAPIProvider):
    def build_querystring_parameters(self, model: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        parameters, definitions = super().build_querystring_parameters(model)
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, definitions

    def build_request_body(self, model: Any, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body, definitions = super().build_request_body(model, source)
        return {**body, "required": True}, definitions

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        for operations in paths.values():
            for method, operation in list(operations.items()):
                if "requestBody" in operation and 415 not in operation["responses"]:
                    response, more = self.build_response_object(ErrorBody, None)  # type: ignore[arg-type]
                    # the operation objects of one rule share their responses: copy before adding
                    operations[method] = {**operation, "responses": {**operation["responses"], 415: response}}
                    components.update(more)
        return paths, components
