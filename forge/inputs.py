"""Screen untrusted request input the way GitLab's Rack middleware does, before any view runs.

GitLab answers a request holding a malformed string (a path, parameter or credential that
is not valid UTF-8, a lone surrogate included, or a parameter with a NUL byte) with 400
`Bad Request` in text/plain (`Gitlab::Middleware::HandleMalformedStrings`), and a JSON body
that is malformed, nested deeper than 32 levels or too large with 400 JSON
`{"error": "Parameters nested too deeply"}` and friends (`Gitlab::Middleware::JsonValidation`).
Query and form parameters nest as Rack nests them (`a[b]=1`, `a[]=1`, `a[][b]=1`); names
whose shapes conflict (`a=1&a[b]=2`) or that nest too deeply are the middleware's 400 too.
The REST API and LFS screen their requests here; views then never meet such input.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Request, Response

MAX_DEPTH = 32
MAX_ARRAY = 50_000
MAX_HASH = 50_000
MAX_ELEMENTS = 100_000
MAX_PARAM_DEPTH = 100  # Rack::QueryParser's param_depth_limit (Rack 2.2)
# HandleMalformedStrings looks three levels into the parameters (the body is level 0).
PARAM_DEPTH = 3

TOO_DEEP = "Parameters nested too deeply"
ARRAY_TOO_LARGE = "Array parameter too large"
HASH_TOO_LARGE = "Hash parameter too large"
TOO_MANY = "Too many total parameters"
INVALID_JSON = "Invalid JSON format"

_MALFORMED_TEXT = re.compile("[\x00\ud800-\udfff]")
_JSON_KEY = "forge.json"
_QUERY_KEY, _FORM_KEY = "forge.query", "forge.form"
_NAME = re.compile(r"\A[\[\]]*([^\[\]]+)\]*")
_HASH_IN_ARRAY = re.compile(r"\A\[\]\[([^\[\]]+)\]\Z")
_IN_ARRAY = re.compile(r"\A\[\](.+)\Z", re.DOTALL)


class BadJson(ValueError):
    """A JSON body GitLab's JsonValidation refuses; the message is GitLab's."""


class BadParams(ValueError):
    """Parameters Rack cannot nest (conflicting shapes, too deep): GitLab's 400 `Bad Request`."""


def _has_key(params: dict[str, Any], key: str) -> bool:
    """Rack's `params_hash_has_key?`: whether a hash already holds the (nested) child key."""
    if "[]" in key:
        return False
    found: Any = params
    for part in re.split(r"[\[\]]+", key):
        if part == "":
            continue
        if not isinstance(found, dict) or part not in found:
            return False
        found = found[part]
    return True


def _normalize(params: dict[str, Any], name: str, value: str, depth: int) -> Any:
    """Rack 2.2's `normalize_params`: put one `name=value` pair into the nested `params`."""
    if depth <= 0:
        raise BadParams("Parameters nested too deeply")
    match = _NAME.match(name)
    key = match.group(1) if match else ""
    after = name[match.end():] if match else ""
    if not key:
        return [value] if name == "[]" else None
    if after == "":
        params[key] = value
    elif after == "[":
        params[name] = value
    elif after == "[]":
        listed = params.setdefault(key, [])
        if not isinstance(listed, list):
            raise BadParams(f"expected Array for param `{key}'")
        listed.append(value)
    elif child := _HASH_IN_ARRAY.match(after) or _IN_ARRAY.match(after):
        # `a[][b]=1&a[][c]=2`: one hash, until a key it already holds starts the next
        child_key = child.group(1)
        listed = params.setdefault(key, [])
        if not isinstance(listed, list):
            raise BadParams(f"expected Array for param `{key}'")
        if listed and isinstance(listed[-1], dict) and not _has_key(listed[-1], child_key):
            _normalize(listed[-1], child_key, value, depth - 1)
        else:
            listed.append(_normalize({}, child_key, value, depth - 1))
    else:
        nested = params.setdefault(key, {})
        if not isinstance(nested, dict):
            raise BadParams(f"expected Hash for param `{key}'")
        params[key] = _normalize(nested, after, value, depth - 1)
    return params


def nested_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest flat `name=value` pairs as Rack's `parse_nested_query` does: `a[b]=1` is a hash,
    `a[]=1` a list, `a[][b]=1&a[][c]=2` a list of hashes, and a repeated plain name keeps
    its last value. Raises BadParams when the names' shapes conflict or nest too deeply."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        _normalize(params, name, value, MAX_PARAM_DEPTH)
    return params


def digits(text: str) -> bool:
    """Whether `text` is a whole number in ASCII digits, one `int()` reads as GitLab's Integer.

    `str.isdigit()` alone admits "²" and other Unicode digits that `int()` refuses.
    """
    return text.isascii() and text.isdigit()


def _pairs(raw: bytes) -> list[tuple[str, str]]:
    """`name=value` pairs in their order (werkzeug's MultiDict groups them by name, and the
    order is what tells `a[][x]` hashes apart). Names and values are UTF-8, sent raw or
    %-encoded (bytes that are not UTF-8 read as U+FFFD)."""
    pairs = []
    for field in raw.split(b"&"):
        if field:
            name, _, value = field.partition(b"=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: bytes) -> str:
    return unquote_to_bytes(text.replace(b"+", b" ")).decode("utf-8", errors="replace")


def query_params(request: Request) -> dict[str, Any]:
    """The query string's parameters, nested as Rack nests them (parsed once per request)."""
    if _QUERY_KEY not in request.environ:
        request.environ[_QUERY_KEY] = nested_params(_pairs(request.query_string))
    return request.environ[_QUERY_KEY]  # type: ignore[no-any-return]


def form_params(request: Request) -> dict[str, Any]:
    """A form body's fields (url-encoded or multipart), nested as Rack nests them."""
    if _FORM_KEY not in request.environ:
        if request.mimetype == "application/x-www-form-urlencoded":
            pairs = _pairs(request.get_data(cache=True))
        else:  # multipart: the fields werkzeug parsed, files aside
            pairs = list(request.form.items(multi=True))
        request.environ[_FORM_KEY] = nested_params(pairs)
    return request.environ[_FORM_KEY]  # type: ignore[no-any-return]


def bad_request() -> Response:
    """GitLab's answer to a malformed string: 400 `Bad Request`, text/plain."""
    return Response("Bad Request", status=400, content_type="text/plain")


def json_error(message: str) -> Response:
    """GitLab's answer to a refused JSON body: 400 `{"error": ...}`."""
    return Response(json.dumps({"error": message}), status=400, content_type="application/json")


def _utf8(raw: bytes, nul_allowed: bool = False) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return nul_allowed or b"\x00" not in raw


def _form_pairs(raw: bytes) -> Iterable[bytes]:
    for pair in raw.split(b"&"):
        for part in pair.split(b"=", 1):
            yield unquote_to_bytes(part.replace(b"+", b" "))


def _text_ok(value: Any, depth: int = 0) -> bool:
    """No NUL byte and no lone surrogate in the strings of a parsed body, three levels deep."""
    if depth > PARAM_DEPTH:
        return True
    if isinstance(value, str):
        return not _MALFORMED_TEXT.search(value)
    if isinstance(value, Mapping):
        return all(_text_ok(k, depth + 1) and _text_ok(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_text_ok(item, depth + 1) for item in value)
    return True


def _credentials_ok(header: str) -> bool:
    raw = header.encode("latin-1", errors="replace")
    scheme, _, value = raw.strip().partition(b" ")
    if scheme.lower() == b"basic":
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return True  # unreadable, not malformed: authentication refuses it
    return _utf8(raw)


def malformed(request: Request, body: bool = True) -> bool:
    """Tell whether the request carries a string GitLab's HandleMalformedStrings refuses.

    The raw path must be UTF-8 (werkzeug has already replaced bad bytes in PATH_INFO, so
    the check reads the request line); query and form parameters must be UTF-8 without
    NUL bytes (a NUL in the path too, as GitLab's middleware refuses it); so must the
    credentials. With `body` false the body is not read (uploads stream it to disk
    themselves).
    """
    environ = request.environ
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path, _, query = raw_uri.partition("?")
    raw_path = path.encode("latin-1", errors="replace")
    if not _utf8(unquote_to_bytes(raw_path)):
        return True
    query = query or environ.get("QUERY_STRING", "")
    if query and not all(_utf8(part) for part in _form_pairs(query.encode("latin-1", errors="replace"))):
        return True
    if body and request.mimetype == "application/x-www-form-urlencoded":
        if not all(_utf8(part) for part in _form_pairs(request.get_data(cache=True))):
            return True
    header = request.headers.get("Authorization")
    return bool(header) and not _credentials_ok(header or "")


def _check_shape(document: Any) -> None:
    """Walk a parsed body (without recursion) against GitLab's limits."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    elements = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
            if len(value) > MAX_HASH:
                raise BadJson(HASH_TOO_LARGE)
            elements += 2 * len(value)
        elif isinstance(value, list):
            children = value
            if len(value) > MAX_ARRAY:
                raise BadJson(ARRAY_TOO_LARGE)
            elements += len(value)
        else:
            continue
        if depth > MAX_DEPTH:
            raise BadJson(TOO_DEEP)
        if elements > MAX_ELEMENTS:
            raise BadJson(TOO_MANY)
        stack.extend((child, depth + 1) for child in children)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes) -> Any:
    """Parse a JSON body within GitLab's limits, or raise BadJson with GitLab's message."""
    try:
        document = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise BadJson(TOO_DEEP) from None
    except ValueError:  # malformed, not UTF-8, or an integer too long to read
        raise BadJson(INVALID_JSON) from None
    _check_shape(document)
    return document


def json_body(request: Request, force: bool = False) -> Any:
    """The request's JSON body (None when there is none, or it is not JSON and not `force`).

    Parsed once per request; raises BadJson as `parse_json` does.
    """
    if not (request.is_json or force):
        return None
    if _JSON_KEY not in request.environ:
        data = request.get_data(cache=True)
        request.environ[_JSON_KEY] = parse_json(data) if data.strip() else None
    return request.environ[_JSON_KEY]


def screen(request: Request, body: bool = True) -> Response | None:
    """GitLab's refusal for a malformed request, or None when it may go on to the view.

    With `body` false (file uploads, whatever their content type) the body is left
    unread for the view to stream.
    """
    if malformed(request, body):
        return bad_request()
    try:  # ActionDispatch::Request#params raises BadRequest; HandleMalformedStrings answers it
        query_params(request)
        if body:
            form_params(request)
    except BadParams:
        return bad_request()
    if not body:
        return None
    try:
        document = json_body(request)
    except BadJson as exc:
        return json_error(str(exc))
    if not _text_ok(document):
        return bad_request()
    return None
