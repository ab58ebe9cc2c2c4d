"""JSON-RPC 2.0 over newline-delimited JSON: framing shared by both sides.

Each request and each response is one line of UTF-8 JSON.  Errors use the
standard codes for malformed input and a small documented range of our own
(-32000…-32099) for conditions a client should tell apart.  Standard library
only: the agent's server imports this module.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

PROTOCOL_VERSION = 1

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# loopscope's own codes
NOT_FOUND = -32001  # no such task
FORBIDDEN = -32002  # the agent does not allow this (e.g. cancel)
TOO_LARGE = -32003  # request line over the limit

MAX_LINE = 1 << 20  # a request larger than 1 MiB is refused, not buffered


class RPCError(Exception):
    """An error a method reports to its caller as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None, req_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        #: the id of the request, when it was readable (errors echo it)
        self.req_id = req_id

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


def request(req_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params:
        msg["params"] = params
    return encode(msg)


class RawJSON(str):
    """Text that is already JSON: the encoder copies it as is."""


class RawJSONList(list):  # type: ignore[type-arg]
    """A list of plain ``str`` pieces, each already JSON.

    Plain strings are not tracked by the garbage collector (instances of a
    str subclass are), so a page of 100,000 encoded records is one tracked
    object, not 100,000: holding it does not provoke a full collection,
    which would run in our thread while holding the GIL and stall the loop.
    """


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def dumps_row(row: list[Any]) -> str:
    """JSON text of a short flat list of scalars (a ``tasks.delta`` row):
    the same text as ``dumps_piecewise``, in one C call, which for a dozen
    scalars is short; walking it in Python cost ~10x more per row."""
    return _dumps(row)


def dumps_piecewise(obj: Any) -> str:
    """JSON text of ``obj``, encoded one small piece at a time.

    ``json.dumps`` of a large result is a single C call that holds the GIL
    from start to end; inside a monitored process that stalls the event loop
    for as long.  Here dicts and lists are walked in Python and each record
    (dataclass) is encoded on its own, so the loop gets the GIL back between
    pieces.
    """
    if isinstance(obj, RawJSON):
        return obj
    if isinstance(obj, RawJSONList):
        return "[" + ",".join(obj) + "]"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dumps(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return "{" + ",".join(_dumps(str(k)) + ":" + dumps_piecewise(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps_piecewise(v) for v in obj) + "]"
    return _dumps(obj)


def iter_piecewise(obj: Any) -> Iterator[str]:
    """``dumps_piecewise`` as a stream of fragments (no big final string)."""
    if isinstance(obj, RawJSONList):
        yield "["
        for i, piece in enumerate(obj):
            yield "," + piece if i else piece
        yield "]"
    elif isinstance(obj, dict):
        yield "{"
        for i, (k, v) in enumerate(obj.items()):
            yield ("," if i else "") + _dumps(str(k)) + ":"
            yield from iter_piecewise(v)
        yield "}"
    elif isinstance(obj, list):
        yield "["
        for i, v in enumerate(obj):
            if i:
                yield ","
            yield from iter_piecewise(v)
        yield "]"
    else:
        yield dumps_piecewise(obj)


def response(req_id: Any, result: Any) -> bytes:
    return b"".join(response_chunks(req_id, result))


def response_chunks(req_id: Any, result: Any, size: int = 1 << 18) -> Iterator[bytes]:
    """A response line in chunks of about ``size`` bytes, so that neither
    building nor sending a 50 MB answer is one long C call under the GIL."""
    buf: list[str] = ['{"jsonrpc":"2.0","id":', _dumps(req_id), ',"result":']
    n = 0
    for piece in iter_piecewise(result):
        buf.append(piece)
        n += len(piece)
        if n >= size:
            yield "".join(buf).encode()
            buf, n = [], 0
    buf.append("}\n")
    yield "".join(buf).encode()


def error_response(req_id: Any, err: RPCError) -> bytes:
    return encode({"jsonrpc": "2.0", "id": req_id, "error": err.to_json()})


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """Validate one request line; raises RPCError with the standard codes."""
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RPCError(PARSE_ERROR, f"parse error: {type(e).__name__}: {e}") from None
    req_id = msg.get("id") if isinstance(msg, dict) else None
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, (int, str))):
        raise RPCError(INVALID_REQUEST, "invalid request: id must be a number or a string")
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
        raise RPCError(INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object with a method", req_id=req_id)
    params = msg.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RPCError(INVALID_PARAMS, "params must be an object (named parameters)", req_id=req_id)
    return req_id, msg["method"], params
