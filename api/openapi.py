"""The OpenAPI 3.1 document, made to state what the server really does.

Litestar generates the document from the handlers' signatures. Three things it cannot know are
added here, once, for every route (routes added later get them too):

* **Errors.** Every error is RFC 9457 problem+json (:mod:`api.errors`). Each operation lists the
  statuses it can answer with the ``Problem`` schema, derived from what it takes and who may
  call it (see :func:`problem_statuses`), plus any a handler names in ``opt={"problems": ...}``.
  Litestar's own 400 shape (a ``ValidationException`` body), which this API never sends, is
  replaced.
* **Request bodies as strict as the server.** Litestar's rendering of Pydantic models drops
  patterns and ``extra="forbid"``; request bodies are documented with Pydantic's own JSON
  schema (validation mode) instead, which is what the server validates against: patterns,
  bounds, ``additionalProperties: false``, and the cross-field rules a model states in its
  ``json_schema_extra`` (``oneOf`` for "exactly one of").
* **Public operations.** Paths outside API-key authentication (``/health``, the Stripe
  webhook) carry ``security: []``.

The document is built lazily on the first request for it (an app is created per e2e test, so
startup stays as cheap as before).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.errors import ERROR_TABLE, PROBLEM_MEDIA_TYPE
from ledger.units import SUPPORTED_CURRENCIES

PROBLEM_REF = "#/components/schemas/Problem"

#: RFC 9457 problem details as this API sends them (:func:`api.errors.problem`).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": (
        "RFC 9457 problem details. `code` is stable and machine-readable; `detail` says what to"
        " change. Some problems add fields (e.g. `field`, `errors`, `decline_code`)."
    ),
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "examples": ["/problems/not-found"]},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["not_found"]},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_error: one item per invalid field",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": ["string", "null"]},
                    "message": {"type": ["string", "null"]},
                    "in": {"type": ["string", "null"]},
                },
            },
        },
    },
    "additionalProperties": True,
}

_STATUS_TEXT = {
    400: "The request is not valid",
    401: "Missing or invalid API key",
    402: "Insufficient funds",
    403: "This API key's role may not do that",
    404: "Not found, or not visible to this API key",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Valid request that the current data cannot satisfy",
    500: "Internal server error; nothing was changed",
    502: "The payment provider failed the request",
    503: "Temporarily unavailable; retry after Retry-After seconds",
}

#: Every currency the server knows, in any letter case (``ledger.units.currency``).
CURRENCY_PATTERN = (
    "^("
    + "|".join("".join(f"[{c}{c.lower()}]" for c in code) for code in SUPPORTED_CURRENCIES)
    + ")$"
)
#: A billing period, ``YYYY-MM`` from 1970 (``invoicing.periods.Period.parse``).
PERIOD_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"

#: Text the input boundary accepts (:mod:`api.boundary`): no C0 or C1 control character in a
#: path, query or header; JSON strings may keep tab, line feed and carriage return.
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


#: String fields and parameters with one parser across the API, by name.
_NAMED_FORMATS: dict[str, dict[str, Any]] = {
    "currency": {"pattern": CURRENCY_PATTERN, "examples": ["USD"]},
    "period": {"pattern": PERIOD_PATTERN, "examples": ["2026-11"]},
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def problem_statuses(
    method: str, operation: dict[str, Any], *, public: bool, restricted: bool
) -> set[int]:
    """The problem statuses an operation can answer, from its shape.

    * every operation: 400 (the input boundary checks path and query of any request), 500, and
      503 (database unavailable, busy, a concurrent update, an unknown commit outcome);
    * behind API-key authentication: 401; 403 when its guard admits only some roles;
    * with a path parameter, a query parameter or a body: 404 (ids are looked up; a key that
      may not see a resource gets 404, not 403);
    * with a body, or any POST/PATCH/PUT/DELETE: 409 (``Idempotency-Key`` reuse, state
      conflicts) and 422 (well-formed input the current data cannot satisfy);
    * a request body can be too large: 413.
    """
    statuses = {400, 500, 503}
    if not public:
        statuses.add(401)
        if restricted:
            statuses.add(403)
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    if has_body or any(p.get("in") in ("path", "query") for p in params):
        statuses.add(404)
    if has_body or method in ("post", "patch", "put", "delete"):
        statuses |= {409, 422}
    if has_body:
        statuses.add(413)
    return statuses


def _problem_response(status: int) -> dict[str, Any]:
    codes = sorted(code for code, (s, _) in ERROR_TABLE.items() if s == status)
    text = _STATUS_TEXT.get(status, "Problem")
    if codes:
        text += " (`code`: " + ", ".join(f"`{c}`" for c in codes) + ")"
    response: dict[str, Any] = {
        "description": text,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status == 503:
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _is_litestar_validation_body(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return isinstance(schema, dict) and schema.get("description") == "Validation Exception"


def _restricted(route_handler: Any) -> bool:
    """Whether a guard on the handler admits only some roles (see :func:`api.auth.requires`)."""
    for guard in route_handler.resolve_guards():
        roles = getattr(guard, "roles", None)
        if roles is None or not {"finance", "reseller", "customer", "gateway"} <= set(roles):
            return True
    return False


_REF = re.compile(r'"#/components/schemas/([^"]+)"')


def _refs(value: Any) -> set[str]:
    return set(_REF.findall(json.dumps(value, default=str)))


def _request_model(route_handler: Any) -> type[BaseModel] | None:
    data = route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    for model in (data.annotation, *getattr(data, "args", ())):  # ``Model | None`` too
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
    return None


def _strict_request_bodies(
    document: dict[str, Any], bodies: list[tuple[dict[str, Any], Any]]
) -> list[str]:
    """Document each request body with Pydantic's validation schema of its model.

    The components only Litestar's version of those bodies used are dropped and Pydantic's are
    added (a name still used by a response gets the suffix ``Input``).
    """
    if not bodies:
        return []
    models = list({model: None for _, model in bodies})
    keys, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    for operation, _ in bodies:
        operation["requestBody"]["content"] = {}
    components: dict[str, Any] = document["components"]["schemas"]
    reachable: set[str] = set()
    todo = _refs(document.get("paths", {}))
    while todo:
        name = todo.pop()
        if name in reachable or name not in components:
            continue
        reachable.add(name)
        todo |= _refs(components[name])
    for name in list(components):
        if name not in reachable:
            del components[name]
    for operation, model in bodies:
        schema = dict(keys[(model, "validation")])
        operation["requestBody"]["content"] = {"application/json": {"schema": schema}}
    defs: dict[str, Any] = top.get("$defs", {})
    renames = {name: f"{name}Input" for name in defs if name in reachable}
    if renames:
        text = json.dumps({"defs": defs, "bodies": [op["requestBody"] for op, _ in bodies]})
        text = _REF.sub(lambda m: f'"#/components/schemas/{renames.get(m[1], m[1])}"', text)
        renamed = json.loads(text)
        defs = {renames.get(k, k): v for k, v in renamed["defs"].items()}
        for (operation, _), body in zip(bodies, renamed["bodies"], strict=True):
            operation["requestBody"] = body
    components.update(defs)
    return list(defs)


def _add_format(schema: dict[str, Any], name: str) -> None:
    """Give a string schema (or the string branch of a nullable one) its named format."""
    extra = _NAMED_FORMATS.get(name)
    if extra is None:
        return
    for branch in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        if branch.get("type") == "string":
            branch.update(extra)


def _plain_text(schema: Any, pattern: str) -> None:
    """Give every free-form string of a schema the boundary's pattern.

    Strings with a pattern, enum, const or format are already narrower.
    """
    if isinstance(schema, list):
        for item in schema:
            _plain_text(item, pattern)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(schema):
        schema["pattern"] = pattern
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        _plain_text(schema.get(key), pattern)
    for key in ("items", "additionalProperties", "not"):
        _plain_text(schema.get(key), pattern)
    for prop in schema.get("properties", {}).values():
        _plain_text(prop, pattern)


def _parameters(document: dict[str, Any]) -> None:
    """Query strings are never empty and no parameter holds a control character.

    The boundary refuses ``?x=``: leave the parameter out.
    """
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                if param.get("in") == "query":
                    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
                        if branch.get("type") == "string":
                            branch.setdefault("minLength", 1)
                _plain_text(schema, LINE_PATTERN)


def _named_formats(document: dict[str, Any], request_schemas: Iterable[str]) -> None:
    """Parameters and request-body properties named in :data:`_NAMED_FORMATS`.

    Responses are left alone: a ``Money`` of package tokens has the currency ``TOKENS``.
    """
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                for param in operation.get("parameters", []):
                    _add_format(param.get("schema", {}), param.get("name", ""))
    components = document["components"]["schemas"]
    for component in request_schemas:
        for name, prop in components[component].get("properties", {}).items():
            _add_format(prop, name)
        _plain_text(components[component], TEXT_PATTERN)


def _alternative_media_types(responses: dict[str, Any], media_types: dict[str, str]) -> None:
    """Success responses that a query parameter can switch to another media type.

    A handler's ``opt={"media_types": {"text/csv": "with format=csv"}}``.
    """
    for status, response in responses.items():
        if status.startswith("2") and "content" in response:
            for media_type, when in media_types.items():
                response["content"][media_type] = {
                    "schema": {"type": "string", "description": when}
                }


def _refine_operation(
    operation: dict[str, Any],
    method: str,
    route_handler: Any,
    *,
    is_public: bool,
    bodies: list[tuple[dict[str, Any], Any]],
) -> None:
    """Refine one operation in place: security, problem responses and alternative media types.

    Args:
        operation: the operation object of the generated document.
        method: its HTTP method, lower case.
        route_handler: the Litestar handler that serves it.
        is_public: whether the path is outside API-key authentication.
        bodies: collects ``(operation, model)`` for the request bodies documented afterwards.
    """
    if is_public:
        operation["security"] = []
    model = _request_model(route_handler)
    if model is not None and "requestBody" in operation:
        bodies.append((operation, model))
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for key, response in list(responses.items()):
        if _is_litestar_validation_body(response):
            del responses[key]
    statuses = problem_statuses(
        method, operation, public=is_public, restricted=_restricted(route_handler)
    )
    statuses |= set(route_handler.opt.get("problems", ()))
    _alternative_media_types(responses, route_handler.opt.get("media_types", {}))
    for code in sorted(statuses):
        responses.setdefault(str(code), _problem_response(code))
    operation["responses"] = dict(
        sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0]))
    )


def refine(
    document: dict[str, Any], routes: Iterable[HTTPRoute], public_paths: Sequence[str]
) -> dict[str, Any]:
    """Add the problem responses, strictness and public markers to a generated document."""
    public = [re.compile(p) for p in public_paths]
    document.setdefault("components", {}).setdefault("schemas", {})
    paths: dict[str, Any] = document.get("paths", {})
    bodies: list[tuple[dict[str, Any], Any]] = []
    for route in routes:
        item = paths.get(route.path_format or "/")
        if item is None:
            continue
        is_public = any(p.search(route.path) for p in public)
        for route_handler in route.route_handlers:
            for method in route_handler.http_methods:
                operation = item.get(method.lower())
                if isinstance(operation, dict):
                    _refine_operation(
                        operation, method.lower(), route_handler, is_public=is_public, bodies=bodies
                    )
    _named_formats(document, _strict_request_bodies(document, bodies))
    _parameters(document)
    document["components"]["schemas"]["Problem"] = PROBLEM_SCHEMA
    return document


class DocumentedOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's OpenAPI plugin with :func:`refine` applied to the document it serves."""

    __slots__ = ()

    def provide_openapi_schema(self) -> dict[str, Any]:
        """The refined document, built on the first request and kept."""
        if not self._openapi_schema:
            from api.app import PUBLIC_PATHS

            self._openapi_schema = refine(
                self.provide_openapi().to_schema(), self.included_routes.values(), PUBLIC_PATHS
            )
        return self._openapi_schema


def install(app: Litestar) -> None:
    """Make ``app`` serve the refined document.

    Its OpenAPI plugin is created by Litestar itself, so its class is swapped for the subclass,
    which adds no state.
    """
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = DocumentedOpenAPIPlugin


def only(present: str, *absent: str) -> dict[str, Any]:
    """A ``oneOf`` branch for "exactly one of".

    ``present`` is sent (not null), ``absent`` are left out or null.
    """
    properties: dict[str, Any] = {present: {"not": {"type": "null"}}}
    properties.update({name: {"type": "null"} for name in absent})
    return {"required": [present], "properties": properties}


CARD_STARTED = "method stripe: the card payment started (pay at checkout_url)"


def returns(model: type[BaseModel], status: int = 200, description: str = "") -> Any:
    """``responses=`` for a handler that answers a pre-encoded body: its real model.

    ``Response[bytes]``, e.g. through :func:`api.idempotency.run_idempotent`.
    """
    return {
        status: ResponseSpec(
            model, description=description or ("Created" if status == 201 else "OK")
        )
    }
