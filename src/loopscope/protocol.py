"""JSON-RPC 2.0 over newline-delimited JSON: framing shared by both sides.

Each request and each response is one line of UTF-8 JSON.  Errors use the
standard codes for malformed input and a small documented range of our own
(-32000…-32099) for conditions a client should tell apart.  Standard library
only: the agent's server imports this module.
"""

from __future__ import annotations

import json
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

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

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


def response(req_id: Any, result: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": req_id, "result": result})


def error_response(req_id: Any, err: RPCError) -> bytes:
    return encode({"jsonrpc": "2.0", "id": req_id, "error": err.to_json()})


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """Validate one request line; raises RPCError with the standard codes."""
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise RPCError(PARSE_ERROR, f"parse error: {e}") from None
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
        raise RPCError(INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object with a method")
    req_id = msg.get("id")
    if req_id is not None and not isinstance(req_id, (int, str)):
        raise RPCError(INVALID_REQUEST, "invalid request: id must be a number or a string")
    params = msg.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RPCError(INVALID_PARAMS, "params must be an object (named parameters)")
    return req_id, msg["method"], params
