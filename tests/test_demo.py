"""`loopscope demo --once`: the bundled tour runs end to end and cleans up."""

from __future__ import annotations

import os
import re

from conftest import parse_table


def test_demo_once(ls):
    res = ls.ok("demo", "--once", "--tasks", "200", timeout=60)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.out + res.err)
    commands = re.findall(r"^\$ loopscope (\w+)", out, re.M)
    assert commands[:3] == ["list", "stats", "ps"], commands
    assert {"pstree", "inspect", "history"} <= set(commands), commands
    assert "Traceback" not in out
    table = out.split("$ loopscope list", 1)[1]
    (row,) = parse_table(table)[:1]
    pid = int(row["pid"])
    assert int(row["tasks"]) > 100 and row["command"].endswith("--tasks 200")
    # the service is gone afterwards
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
