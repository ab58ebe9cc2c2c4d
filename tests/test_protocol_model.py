"""Wire framing and the JSON form of the model."""

from __future__ import annotations

import json

import pytest

from loopscope import protocol
from loopscope.model import CancelRecord, Frame, SchemaError, TaskInfo, from_json, to_json
from loopscope.protocol import RawJSON, RawJSONList, RPCError, parse_request, response, response_chunks


def test_parse_request_errors_use_standard_codes() -> None:
    for line, code in [
        (b"{nope", protocol.PARSE_ERROR),
        (b"[1,2]", protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","method":"hello"}', protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"hello","params":[1]}', protocol.INVALID_PARAMS),
        (b'{"jsonrpc":"2.0","id":[1],"method":"hello"}', protocol.INVALID_REQUEST),
    ]:
        with pytest.raises(RPCError) as e:
            parse_request(line)
        assert e.value.code == code, line


def test_piecewise_response_is_the_same_json_as_one_shot() -> None:
    frames = [Frame("f", "a.py", i) for i in range(3)]
    result = {"tasks": RawJSONList(['{"x":1}', '{"x":2}']), "frames": frames, "raw": RawJSON('{"y":[1]}'), "n": None}
    line = response(7, result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    msg = json.loads(line)
    assert msg["id"] == 7
    assert msg["result"]["tasks"] == [{"x": 1}, {"x": 2}]
    assert msg["result"]["frames"][2] == {"function": "f", "filename": "a.py", "lineno": 2, "source": None, "locals": None}
    assert msg["result"]["raw"] == {"y": [1]}
    big = {"tasks": RawJSONList(['{"pad":"' + "x" * 1000 + '"}'] * 2000)}
    chunks = list(response_chunks(1, big, size=1 << 16))
    assert len(chunks) > 10
    assert json.loads(b"".join(chunks))["result"]["tasks"][1999]["pad"] == "x" * 1000


def test_model_round_trips_through_json() -> None:
    info = TaskInfo(
        id="0x1", name="t", coro="c", state="cancelled", created=1.0, age=2.0, loop_id="0x2",
        stack=[Frame("f", "a.py", 3, "await x")],
        cancel=CancelRecord(at=1.5, by_task_id=None, by_task_name=None, by_stack=[], message="bye", victim_stack=[Frame("g", "b.py", 4)]),
    )
    again = from_json(TaskInfo, json.loads(json.dumps(to_json(info))))
    assert again == info


@pytest.mark.parametrize(
    "data,error",
    [
        ({"id": "0x1"}, "missing field 'name'"),
        ({"id": 1, "name": "t", "coro": "c", "state": "s", "created": None, "age": None, "loop_id": "x"}, "TaskInfo.id: expected a string"),
        ({"id": "1", "name": "t", "coro": "c", "state": "s", "created": "yesterday", "age": None, "loop_id": "x"}, "expected a number"),
        ({"id": "1", "name": "t", "coro": "c", "state": "s", "created": None, "age": None, "loop_id": "x", "stack": {"a": 1}}, "expected a list"),
    ],
)
def test_malformed_records_are_rejected_with_the_field(data: dict, error: str) -> None:
    with pytest.raises(SchemaError, match=error):
        from_json(TaskInfo, data)
