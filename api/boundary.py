"""The input boundary.

Every request's path, query, keys and JSON body are checked here before a handler runs, so text
PostgreSQL cannot store and bodies nested without bound never reach a query or a parser's recursion
limit.

Refused with 400 problem+json, nothing changed:

* ``invalid_characters``: NUL and the other C0 control characters (tab, line feed and
  carriage return are allowed in bodies), DEL, and the C1 controls (U+0080..U+009F) in any
  string: path, query parameter names and values, the ``Idempotency-Key`` header, JSON keys and
  values.
* ``json_too_deep``: JSON nested deeper than :data:`MAX_JSON_DEPTH`.
* ``validation_error``: a query date-time that is not RFC 3339 with an offset (the framework
  also read Unix times such as ``-3.7e-301`` and naive times);
  a query parameter sent with an empty value (``?period=``); some
  handlers read it as "no filter", others as an invalid value: leave the parameter out.

Usage records are checked one by one instead (:func:`check_record`), so one bad record of a
batch is rejected alone and the others are charged.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from litestar import Request

from ledger.errors import DomainError

#: Deepest JSON accepted (objects and arrays); provider usage objects need about 6.
MAX_JSON_DEPTH = 32

#: Control characters refused everywhere (text may keep tab, line feed and carriage return).
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: In paths, query strings and header values not even those are accepted.
_BAD_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: Paths whose bodies carry usage records, checked record by record by their handlers.
RECORD_PATHS = re.compile(r"^/v1/(usage|authorizations/[^/]+/increment)/?$")


class InvalidCharacters(DomainError):
    """A string holds a control character (PostgreSQL cannot store NUL; none is meaningful)."""

    code = "invalid_characters"


class EmptyParameter(DomainError):
    """A query parameter given without a value, or a date-time that is not RFC 3339."""

    code = "validation_error"


#: RFC 3339 date-time with an offset, ASCII digits (what the document's ``date-time`` says).
_INSTANT = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_INSTANT_PARAMS: dict[int, frozenset[str]] = {}


def _instant_query_names(route_handler: Any) -> frozenset[str]:
    """The query names of a handler's date-time parameters (cached per handler)."""
    key = id(route_handler)
    names = _INSTANT_PARAMS.get(key)
    if names is None:
        found = set()
        for name, field in route_handler.parsed_fn_signature.parameters.items():
            types = (getattr(field, "annotation", None), *getattr(field, "args", ()))
            if datetime in types:
                kwarg = getattr(field, "kwarg_definition", None)
                alias = getattr(kwarg, "query", None) or getattr(kwarg, "name", None)
                found.add(alias or name)
        names = _INSTANT_PARAMS[key] = frozenset(found)
    return names


class JsonTooDeep(DomainError):
    """A JSON document nested deeper than the server accepts."""

    code = "json_too_deep"


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}" + (" (NUL)" if char == "\x00" else "")


def is_clean_line(value: object) -> bool:
    """A string without any control character."""
    return isinstance(value, str) and _BAD_LINE.search(value) is None


def check_line(value: str, where: str) -> None:
    """Refuse any control character in a one-line value (path, query, header)."""
    bad = _BAD_LINE.search(value)
    if bad:
        raise InvalidCharacters(
            f"{where} contains the control character {_describe(bad.group())}; remove it (no"
            " control characters are accepted in paths, query parameters or headers)",
            field=where,
        )


def check_json(value: Any, where: str = "body", depth: int = 0) -> None:
    """Walk decoded JSON.

    No string (key or value) with a control character other than tab, line feed or carriage return,
    and no deeper nesting than :data:`MAX_JSON_DEPTH`.

    Raises:
        InvalidCharacters: naming the field, e.g. ``body.records[3].name``.
        JsonTooDeep: nested too deeply.
    """
    if isinstance(value, str):
        bad = _BAD_TEXT.search(value)
        if bad:
            raise InvalidCharacters(
                f"{where} contains the control character {_describe(bad.group())}; remove it",
                field=where,
            )
        return
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise JsonTooDeep(
                f"{where} is nested more than {MAX_JSON_DEPTH} levels deep; flatten the document",
                field=where,
            )
        if isinstance(value, dict):
            for k, v in value.items():
                check_json(k, f"{where} (a key)", depth + 1)
                check_json(v, f"{where}.{k}", depth + 1)
        else:
            for i, v in enumerate(value):
                check_json(v, f"{where}[{i}]", depth + 1)


#: What a JSON text must contain for one of its strings to hold a refused character: an escape
#: of a C0 control (``\\u0008`` or ``\\b``, ...), DEL or a C1 control, a raw DEL, or a raw C1
#: control (UTF-8 C2 80-9F); raw C0 controls cannot be inside a JSON string. A match is only a
#: reason to look closer (an allowed escaped tab matches too).
_MAYBE_BAD_JSON = re.compile(rb"\\u00[0189][0-9a-fA-F]|\\u007[fF]|\\[bf]|\x7f|\xc2[\x80-\x9f]")


def json_text_clean(body: bytes) -> bool:
    """Whether no string of the JSON text ``body`` can hold a control character.

    One scan of the bytes, so the records of a clean batch need only their depth checked.
    """
    if b"\\" not in body and b"\x7f" not in body and b"\xc2" not in body:
        return True  # the usual batch (no escapes at all): three memchr-speed scans
    return _MAYBE_BAD_JSON.search(body) is None


def _depth_ok(value: dict[str, Any] | list[Any], depth: int) -> bool:
    if depth >= MAX_JSON_DEPTH:
        return False
    for v in value.values() if isinstance(value, dict) else value:
        if isinstance(v, dict | list) and not _depth_ok(v, depth + 1):
            return False
    return True


def check_record(raw: Any, index: int, *, text_clean: bool = False) -> None:
    """One usage record of a batch (raises like :func:`check_json`, naming ``records[i]``).

    ``text_clean``: the body passed :func:`json_text_clean`, so only the depth is checked (the field
    paths of an error are built only when something is wrong).
    """
    if not (text_clean and isinstance(raw, dict) and _depth_ok(raw, 2)):
        check_json(raw, f"records[{index}]", 2)


def _check_query(query: bytes, handler: Any) -> None:
    """The query string: a clean line, no empty value, and RFC 3339 instants where one is due.

    Args:
        query: the raw (still percent-encoded) query string, not empty.
        handler: the route handler, whose instant-typed parameters are checked for an offset.
    """
    check_line(unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8", "replace"), "query")
    instants = _instant_query_names(handler)
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if value == "":
            raise EmptyParameter(
                f"query parameter {name!r} has an empty value; leave it out instead",
                field=name,
            )
        if name in instants and not _INSTANT.match(value):
            raise EmptyParameter(
                f"query parameter {name!r} must be an RFC 3339 date-time with an offset,"
                f" e.g. 2026-11-01T00:00:00Z; got {value!r}",
                field=name,
            )


async def check_request(request: Request[Any, Any, Any]) -> None:
    """Litestar ``before_request`` hook.

    The path, query and keys, then the JSON body (except usage records, which their handlers check
    one by one).
    """
    path: str = request.scope["path"]
    check_line(path, "the path")
    query: bytes = request.scope.get("query_string", b"")
    if query:  # the helper is called only when there is a query (not on the gateway's POSTs)
        _check_query(query, request.route_handler)
    key = request.headers.get("idempotency-key")
    if key is not None:
        check_line(key, "the Idempotency-Key header")
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()
    if not body or RECORD_PATHS.match(path):
        return
    try:
        data = await request.json()
    except RecursionError:
        raise JsonTooDeep(
            f"the body is nested more than {MAX_JSON_DEPTH} levels deep; flatten the document"
        ) from None
    except Exception:
        return  # malformed JSON: the handler's parser answers it with its own 400
    check_json(data)
